"""Effective receptive field: the input gradient of the centre output pixel (Luo et al. 2016).

The analytic receptive field (:func:`tem_keras.models.receptive_field`) is the region that *can*
influence an output pixel; the effective receptive field is how strongly each input pixel *does*:
``|∂ z_c(centre) / ∂ x|``, averaged over images. Luo et al. showed that it is roughly Gaussian and
occupies a fraction of the theoretical field; Sytwu et al. (2022) note the same for the residual
UNets they compare. The support (non-zero extent) of the gradient map is the measured receptive
field that :func:`tem_keras.models.empirical_receptive_field` reports; here the map itself is kept
and summarised by the side of the centred square holding a given fraction of its mass.

References
----------
W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016.
K. Sytwu, C. Groschner, M. C. Scott, "Understanding the influence of receptive field and network
complexity in neural network-guided TEM image analysis", Microscopy and Microanalysis 28, 1896 (2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _common
from ..validation import check_int, check_number

__all__ = ["EffectiveReceptiveField", "effective_receptive_field", "input_gradient", "support_extent",
           "mass_extent", "plot_effective_receptive_field"]


@dataclass
class EffectiveReceptiveField:
    """Result of :func:`effective_receptive_field`.

    Attributes
    ----------
    gradient : ndarray ``[H, W]``
        Mean absolute gradient of the centre output score with respect to the input.
    centre : (int, int)
        Row and column of the output pixel.
    support_px : int
        Larger side of the bounding box of the non-zero gradient.
    size_px : int
        Side ``2 r + 1`` of the smallest square centred on ``centre`` holding ``fraction`` of the
        gradient mass.
    fraction : float
        The mass fraction of ``size_px``.
    analytic_px : float
        Analytic receptive field of the model (:func:`tem_keras.models.receptive_field`).
    """

    gradient: np.ndarray
    centre: tuple
    support_px: int
    size_px: int
    fraction: float
    analytic_px: float


def input_gradient(model, images: np.ndarray, position, class_index: int = 1, scores: bool = True) -> np.ndarray:
    """Mean over images of ``|∂ y[n, i, j, class_index] / ∂ x[n]|``, summed over input channels.

    Parameters
    ----------
    model : keras.Model
    images : ndarray ``[N, H, W, C]``
        Model inputs.
    position : (int, int)
        Output pixel ``(i, j)``.
    class_index : int
        Output channel.
    scores : bool
        Differentiate the pre-softmax class score (True) or the model output (False).

    Returns
    -------
    ndarray ``[H, W]``, float64
    """
    import keras
    import tensorflow as tf

    target = _common.logits_tensor(model) if scores else model.outputs[0]
    net = keras.Model(_common.model_inputs(model), target)
    x = tf.Variable(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        y = tf.cast(net(x, training=False), tf.float32)
        value = tf.reduce_sum(y[:, int(position[0]), int(position[1]), class_index])
    grad = tape.gradient(value, x)
    if grad is None:
        raise ValueError(f"the output of {model.name!r} does not depend on its input")
    return np.abs(grad.numpy().astype(np.float64)).sum(axis=-1).mean(axis=0)


def support_extent(gradient: np.ndarray) -> int:
    """Larger side of the bounding box of the non-zero pixels of a gradient map (0 if none)."""
    rows = np.flatnonzero(np.any(gradient != 0, axis=1))
    cols = np.flatnonzero(np.any(gradient != 0, axis=0))
    if not rows.size:
        return 0
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def mass_extent(gradient: np.ndarray, centre, fraction: float = 0.95) -> int:
    """Side ``2 r + 1`` of the smallest square centred on ``centre`` with ``fraction`` of the mass."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    g = np.abs(np.asarray(gradient, np.float64))
    total = g.sum()
    if total <= 0:
        return 0
    rows, cols = np.indices(g.shape)
    cheb = np.maximum(np.abs(rows - centre[0]), np.abs(cols - centre[1]))
    mass_by_r = np.bincount(cheb.ravel(), weights=g.ravel())
    r = int(np.searchsorted(np.cumsum(mass_by_r), fraction * total * (1 - 1e-12)))
    return 2 * r + 1


def effective_receptive_field(model, image=None, *, size: int | None = None, n_samples: int = 8,
                              class_index: int = 1, fraction: float = 0.95, seed: int = 0,
                              preprocessing=None, return_figure: bool = False):
    """Effective receptive field of the centre output pixel (Luo et al. 2016), beside the analytic one.

    The gradient of the pre-softmax score of class ``class_index`` at the centre output pixel with
    respect to the input is taken (inference mode: batch norm uses its moving statistics), its
    absolute value summed over input channels and averaged over the images.

    Parameters
    ----------
    model : keras.Model
        A tem_keras model.
    image : ndarray ``[H, W]``, Micrograph or path, optional
        Explain this image (standardised unless ``preprocessing`` says otherwise; padded to the
        model's down-sampling). Default: ``n_samples`` standard-normal images of ``size²`` pixels.
    size : int, optional
        Side of the random images; default: the smallest multiple of the down-sampling that is at
        least twice the analytic receptive field plus 16 (at most 2048), so that the field is not
        cut by the border.
    n_samples : int
        Random images averaged (ReLUs and max pooling route gradients along some paths only).
    class_index : int
        Class whose score is differentiated.
    fraction : float
        Mass fraction of ``size_px``.
    seed : int
        Seed of the random images.
    preprocessing : callable or False, optional
        See :func:`~tem_keras.explain._common.prepare_image`.
    return_figure : bool
        Also return a figure: the gradient map (log scale) with the analytic field, the support and
        the ``fraction`` square drawn, and the enclosed mass against the square's side.

    Returns
    -------
    erf : EffectiveReceptiveField
        ``gradient`` map and the sizes ``support_px``, ``size_px``, ``analytic_px``.
    figure : matplotlib.figure.Figure
        Only with ``return_figure=True``.

    References
    ----------
    Luo et al., NeurIPS 2016; Sytwu et al., Microsc. Microanal. 2022.
    """
    from ..hardware import float32_model

    model = float32_model(model)  # gradients and maps in float32, also for mixed-precision runs
    from ..models.receptive_fields import downsampling_factor, receptive_field

    class_index = _common.check_class_index(model, class_index)
    size = check_int("size", size, 1, optional=True)
    n_samples = check_int("n_samples", n_samples, 1)
    check_number("fraction", fraction, 0.0, 1.0, low_open=True)
    analytic = receptive_field(model)
    d = max(1, downsampling_factor(model))
    if image is None:
        if size is None:
            target = 2 * min(analytic, 1016) + 16
            size = int(min(2048, math.ceil(target / d) * d))
        channels = model.inputs[0].shape[-1] or 1
        rng = np.random.default_rng(seed)
        batch = rng.standard_normal((int(n_samples), int(size), int(size), channels)).astype(np.float32)
        h = w = int(size)
    else:
        batch, (h, w) = _common.model_input_image(model, image, preprocessing)
    centre = (h // 2, w // 2)
    gradient = input_gradient(model, batch, centre, class_index)[:h, :w]
    result = EffectiveReceptiveField(gradient.astype(np.float32), centre, support_extent(gradient),
                                     mass_extent(gradient, centre, fraction), float(fraction), analytic)
    if not return_figure:
        return result
    return result, plot_effective_receptive_field(result)


def plot_effective_receptive_field(erf: EffectiveReceptiveField, *, log: bool = True):
    """Figure of an :class:`EffectiveReceptiveField`: gradient map with squares, and mass curve.

    Squares centred on the output pixel: analytic receptive field (red, dashed; for models with
    down-sampling the true field is offset by less than one down-sampling step), support of the
    gradient (white) and the ``fraction`` square (cyan).

    Parameters
    ----------
    erf : EffectiveReceptiveField
    log : bool
        Logarithmic colour scale.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    import matplotlib

    g = np.asarray(erf.gradient, np.float64)
    fig, (ax0, ax1) = _common.figure(1, 2, figsize=(11, 4.4), gridspec_kw={"wspace": 0.45})
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="black")
    positive = g[g > 0]
    if log and positive.size:
        norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-6), vmax=positive.max())
        im = ax0.imshow(np.where(g > 0, g, np.nan), cmap=cmap, norm=norm)
    else:
        im = ax0.imshow(g, cmap=cmap)
    fig.colorbar(im, ax=ax0, fraction=0.046, pad=0.04)
    cy, cx = erf.centre
    for side, colour, style, label in ((erf.analytic_px, "red", "--", f"analytic RF {erf.analytic_px:g} px"),
                                       (erf.support_px, "lime", ":", f"support {erf.support_px} px"),
                                       (erf.size_px, "cyan", "-", f"{erf.fraction:.0%} mass {erf.size_px} px")):
        if not np.isfinite(side) or side <= 0:
            continue
        half = side / 2.0
        ax0.add_patch(Rectangle((cx - half, cy - half), side, side, fill=False, edgecolor=colour,
                                linestyle=style, linewidth=1.2, label=label))
    ax0.legend(loc="upper left", bbox_to_anchor=(0.0, -0.02), fontsize=7, framealpha=0.6)
    ax0.set_title("|∂ score(centre) / ∂ input|")
    ax0.axis("off")
    rows, cols = np.indices(g.shape)
    cheb = np.maximum(np.abs(rows - cy), np.abs(cols - cx))
    mass = np.cumsum(np.bincount(cheb.ravel(), weights=np.abs(g).ravel()))
    sides = 2 * np.arange(mass.size) + 1
    ax1.plot(sides, mass / max(mass[-1], 1e-300))
    ax1.axvline(erf.analytic_px, color="red", linestyle="--", label="analytic RF")
    ax1.axvline(erf.size_px, color="tab:cyan", label=f"{erf.fraction:.0%} of the mass")
    ax1.set(xlabel="side of the centred square (px)", ylabel="fraction of gradient mass",
            title="effective receptive field", ylim=(0, 1.02))
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    return fig
