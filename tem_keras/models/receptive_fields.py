"""Receptive field and down-sampling of a model, analytically from its layer graph or empirically.

The analytic receptive field follows Sytwu et al. 2022 (after Araujo et al. 2019): along a path of
layers with kernels ``k_l`` and strides ``s_j``,

    RF = Σ_l (k_l − 1) Π_{j<l} s_j + 1,

a convolution with dilation ``α`` counts as a kernel of ``α (k − 1) + 1``, pooling counts as a
kernel of its pool size, up-sampling by ``f`` divides the jump ``Π s_j`` by ``f`` (a transposed
convolution of kernel ``k`` and stride ``s`` additionally widens the field by ``ceil(k / s) − 1``
input steps, bilinear up-sampling by one), and where paths join (skip connections, additions,
concatenations) the largest field is kept. :func:`empirical_receptive_field` measures the extent
of the non-zero gradient of the centre output pixel with respect to the input instead.

References
----------
K. Sytwu, C. Groschner, M. C. Scott, Microscopy and Microanalysis 28, 1896 (2022).
A. Araujo, W. Norris, J. Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill (2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

__all__ = ["receptive_field", "empirical_receptive_field", "downsampling_factor", "graph_summary"]


@dataclass
class GraphSummary:
    """What :func:`graph_summary` finds out about a model.

    Attributes
    ----------
    receptive_field : float
        Analytic receptive field of the (first) output, in input pixels (``inf`` after global pooling).
    jump : float
        Input pixels per output pixel of the (first) output.
    downsampling : int
        Largest jump of any tensor in the graph: input sizes must be a multiple of it.
    flops_per_pixel : float
        Floating-point operations (2 per multiply-add) of the convolution and dense layers per input
        pixel (batch norm, activations, pooling and additions are not counted).
    """

    receptive_field: float
    jump: float
    downsampling: int
    flops_per_pixel: float


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _layer_effect(layer, rf, jump, in_shape):
    """(rf, jump, flops per input pixel, max jump inside) after ``layer`` for one input path."""
    flops = 0.0
    inner_max = jump
    if isinstance(layer, keras.Model):
        sub = graph_summary(layer)
        new_rf = rf + (sub.receptive_field - 1) * jump
        return new_rf, jump * sub.jump, sub.flops_per_pixel / jump**2, jump * sub.downsampling
    if isinstance(layer, layers.Conv2DTranspose):
        k = max(_pair(layer.kernel_size))
        s = max(_pair(layer.strides))
        d = max(_pair(layer.dilation_rate))
        k_eff = d * (k - 1) + 1
        cin = in_shape[-1]
        flops = 2.0 * np.prod(_pair(layer.kernel_size)) * cin * layer.filters / jump**2
        return rf + (math.ceil(k_eff / s) - 1) * jump, jump / s, flops, inner_max
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)):
        k = max(_pair(layer.kernel_size))
        s = max(_pair(layer.strides))
        d = max(_pair(layer.dilation_rate))
        k_eff = d * (k - 1) + 1
        out_jump = jump * s
        cin = in_shape[-1]
        kk = float(np.prod(_pair(layer.kernel_size)))
        if isinstance(layer, layers.SeparableConv2D):
            mult = layer.depth_multiplier
            flops = 2.0 * kk * cin * mult + 2.0 * cin * mult * layer.filters
        elif isinstance(layer, layers.DepthwiseConv2D):
            flops = 2.0 * kk * cin * layer.depth_multiplier
        else:
            flops = 2.0 * kk * cin / getattr(layer, "groups", 1) * layer.filters
        return rf + (k_eff - 1) * jump, out_jump, flops / out_jump**2, max(inner_max, out_jump)
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        k = max(_pair(layer.pool_size))
        s = max(_pair(layer.strides))
        return rf + (k - 1) * jump, jump * s, 0.0, max(inner_max, jump * s)
    if isinstance(layer, layers.UpSampling2D):
        f = max(_pair(layer.size))
        extra = jump if layer.interpolation != "nearest" else 0
        return rf + extra, jump / f, 0.0, inner_max
    if isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
        return math.inf, jump, 0.0, inner_max
    if isinstance(layer, layers.Dense):
        return rf, jump, 2.0 * in_shape[-1] * layer.units / jump**2, inner_max
    return rf, jump, 0.0, inner_max


def graph_summary(model: keras.Model) -> GraphSummary:
    """Walk the layer graph of a functional ``model`` and collect receptive field, jumps and FLOPs.

    Parameters
    ----------
    model : keras.Model
        A functional model (nested functional models are walked recursively). Sequential models
        are walked layer by layer.

    Returns
    -------
    GraphSummary
    """
    from .blocks import CropOrPadTo

    if isinstance(model, keras.Sequential):
        rf, jump, flops, max_jump = 1.0, 1.0, 0.0, 1.0
        shape = model.inputs[0].shape
        for layer in model.layers:
            rf, jump, f, m = _layer_effect(layer, rf, jump, shape)
            flops += f
            max_jump = max(max_jump, m, jump)
            shape = layer.output.shape
        return GraphSummary(rf, jump, int(round(max_jump)), flops)

    state = {id(t): (1.0, 1.0) for t in model.inputs}  # tensor id -> (rf, jump)
    flops = 0.0
    max_jump = 1.0
    for layer in model.operations if hasattr(model, "operations") else model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        for node in layer._inbound_nodes:
            ins = list(node.input_tensors)
            if not ins or not all(id(t) in state for t in ins):
                continue  # a node of another model that shares this layer
            if isinstance(layer, CropOrPadTo):
                ins = ins[:1]  # the reference tensor only lends its size
            # the path with the largest field decides (jumps of joined paths agree in practice)
            rf, jump = max((state[id(t)] for t in ins), key=lambda v: (v[0], -v[1]))
            new_rf, new_jump, f, m = _layer_effect(layer, rf, jump, ins[0].shape)
            flops += f
            max_jump = max(max_jump, m, new_jump)
            for t in node.output_tensors:
                state[id(t)] = (new_rf, new_jump)
    out = model.outputs[0]
    if id(out) not in state:
        raise ValueError(f"could not follow the layer graph of model {model.name!r} to its output")
    rf, jump = state[id(out)]
    return GraphSummary(rf, jump, int(round(max_jump)), flops)


def receptive_field(model: keras.Model) -> int:
    """Analytic receptive field of ``model`` in input pixels (largest path through the graph).

    Parameters
    ----------
    model : keras.Model
        A tem_keras model (or any functional Keras model of 2-D convolutions, pooling and up-sampling).

    Returns
    -------
    int
        Side of the square input region that can influence one output pixel, by the formula of
        Sytwu et al. 2022 along the path with the largest field. (Where paths of different alignment
        join, the union of their fields can be wider by less than one down-sampling step; see
        :func:`empirical_receptive_field`.)

    Examples
    --------
    >>> from tem_keras.models import residual_unet, receptive_field
    >>> receptive_field(residual_unet(n_blocks=2, pool_sizes=(4, 4)))
    120
    """
    rf = graph_summary(model).receptive_field
    return rf if math.isinf(rf) else int(round(rf))


def downsampling_factor(model: keras.Model) -> int:
    """Total down-sampling of ``model``: input heights and widths should be a multiple of it.

    Parameters
    ----------
    model : keras.Model
        A tem_keras model.

    Returns
    -------
    int
        E.g. ``2**depth`` for :func:`~tem_keras.models.unet`, ``prod(pool_sizes)`` for
        :func:`~tem_keras.models.residual_unet`, 32 for FCN-8s (8 when dilated), 1 for shallow CNNs.
    """
    return graph_summary(model).downsampling


def empirical_receptive_field(
    model: keras.Model,
    size: int | None = None,
    n_samples: int = 4,
    class_index: int = -1,
    seed: int = 0,
    max_positions: int = 8,
) -> int:
    """Receptive field measured from the gradient of the centre output pixel w.r.t. the input.

    ``n_samples`` random normal images of ``size × size`` pixels are passed through the model
    (inference mode); the absolute gradients of the output probability of class ``class_index`` at
    the centre output pixel are summed, and the larger side of the bounding box of the non-zero
    gradient is taken. With down-sampling ``D`` the field of a pixel depends on its position modulo
    ``D`` (the analytic value is the largest over positions), so the pixels ``(c + i, c + i)`` for
    ``i < min(D, max_positions)`` are measured and the largest extent is returned.
    Max pooling and ReLU route gradients along some paths only, hence several samples. The result
    is bounded by ``size``; it equals the analytic field for plain convolution stacks. Where paths
    of different alignment join (pooling plus skip connections), the union of their fields can be
    wider than the largest single path that :func:`receptive_field` counts (by less than one
    down-sampling step; e.g. 26 vs 24 px for ``unet(depth=2, convs_per_level=1)``).

    Parameters
    ----------
    model : keras.Model
        Model with input ``(None, None, channels)``.
    size : int, optional
        Input side; default: the smallest multiple of the down-sampling ≥ 2 × analytic RF + 16
        (at most 2048).
    n_samples : int
        Number of random images.
    class_index : int
        Output channel whose gradient is taken.
    seed : int
        Seed of the random images.
    max_positions : int
        Most output positions measured (see above).

    Returns
    -------
    int
        Side of the square region with non-zero gradient.
    """
    import tensorflow as tf  # gradients: tem_keras runs on the TensorFlow backend

    summary = graph_summary(model)
    d = max(1, summary.downsampling)
    if size is None:
        target = 2 * min(summary.receptive_field, 1016) + 16
        size = int(math.ceil(target / d) * d)
    channels = model.inputs[0].shape[-1]
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.standard_normal((n_samples, size, size, channels)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        y = model(x, training=False)
        ch, cw = y.shape[1] // 2, y.shape[2] // 2
        n_pos = int(min(max(1, d), max_positions, ch, cw))
        targets = [tf.reduce_sum(tf.cast(y[:, ch + i, cw + i, class_index], tf.float32)) for i in range(n_pos)]
    best = 0
    for target in targets:
        grad = np.abs(tape.gradient(target, x).numpy()).sum(axis=(0, 3))
        rows = np.flatnonzero(grad.sum(axis=1) > 0)
        cols = np.flatnonzero(grad.sum(axis=0) > 0)
        if rows.size:
            best = max(best, int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
    del tape
    return best
