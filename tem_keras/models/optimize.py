"""Exact rewrites of a trained model for fast inference: :func:`for_inference`.

The copy computes the same function as the model (up to float rounding) with fewer memory passes,
which is what the papers' small, memory-bound networks spend their time on:

1. **Batch-norm folding.** ``Conv2D → BatchNormalization`` in inference mode is one convolution
   with kernel ``W γ/√(σ²+ε)`` and bias ``(b − μ) γ/√(σ²+ε) + β``; the batch norm disappears.
2. **Two-class softmax as a sigmoid.** ``softmax([z₀, z₁]) = [σ(z₀ − z₁), σ(z₁ − z₀)]``: the 1×1
   logits convolution emits the two signed differences and an element-wise sigmoid replaces the
   softmax (oneDNN's softmax over an axis of length 2 costs more than the convolution before it).
3. **Up-sampling, concatenation and convolution in one** (the decoders of UNets with nearest
   up-sampling, e.g. the residual UNet of Sytwu et al.): ``conv(concat([up_k(z), skip]))`` is
   split into ``conv(up_k(z)) + conv(skip)``. The first term runs at the low resolution, as a
   sub-pixel convolution with ``k²`` phase kernels followed by ``depth_to_space`` (Shi et al. 2016;
   nearest up-sampling followed by a convolution is a transposed convolution, Odena et al. 2016),
   so neither the up-sampled map nor the concatenation is written to memory. Exact at every image
   border, since zero padding of ``up_k(z)`` is zero padding of ``z``.

References
----------
S. Ioffe, C. Szegedy, "Batch normalization", ICML 2015 (inference-mode affine map).
W. Shi et al., "Real-time single image and video super-resolution using an efficient sub-pixel
convolutional neural network", CVPR 2016.
A. Odena, V. Dumoulin, C. Olah, "Deconvolution and checkerboard artifacts", Distill 2016.
"""

from __future__ import annotations

import math
import weakref

import keras
import numpy as np
from keras import layers

from .blocks import CropOrPadTo

__all__ = ["for_inference", "WeightFingerprint", "UpsampledConcatConv2D", "phase_kernel"]

def for_inference(model: keras.Model) -> keras.Model:
    """A copy of ``model`` rewritten for inference (see the module docstring).

    The copy has its own weights, taken from ``model`` when it is made. A new copy is made at
    every call: :class:`tem_keras.inference.Predictor` keeps one per model and makes it again
    when :class:`WeightFingerprint` says the weights have changed (further training). Models
    that cannot be rewritten (subclassed models, SavedModel-only exports, unusual graphs) are
    returned as they are, and so are models where no rewrite applies.

    Parameters
    ----------
    model : keras.Model
        A functional Keras model.

    Returns
    -------
    keras.Model
        A functional model computing the same outputs in inference mode.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        return model
    try:
        copy = _Rewriter(model).run()
    except Exception:  # an unusual graph: inference with the model as it is
        copy = None
    return copy or model


class WeightFingerprint:
    """A value that changes when any weight of a model changes (training, ``set_weights``,
    ``load_weights``): the shapes, and the float64 sum and first element of every weight.

    Computed in one traced call that reads the variables in the graph, because it runs on every
    ``predict`` call: reading the 62 weights of the Sytwu residual UNet one by one into NumPy
    took 10 ms, a sixth of the network's own time on a 1024² frame; the traced call takes 1 ms.

    Parameters
    ----------
    model : keras.Model or any object with ``weights``
        Held weakly (through its variables only).

    Examples
    --------
    >>> from tem_keras.models import unet
    >>> model = unet(depth=1, base_filters=2)
    >>> fingerprint = WeightFingerprint(model)
    >>> before = fingerprint()
    >>> fingerprint() == before
    True
    >>> kernel = model.trainable_weights[0]
    >>> _ = kernel.assign(kernel + 1.0)  # as a training step does
    >>> fingerprint() == before
    False
    """

    def __init__(self, model):
        self._model = weakref.ref(model)
        self._shapes, self._checksum = None, None

    def __call__(self) -> tuple:
        weights = list(getattr(self._model(), "weights", ()))
        shapes = tuple(tuple(v.shape) for v in weights)
        if self._checksum is None or shapes != self._shapes:
            self._shapes, self._checksum = shapes, _checksum_function(weights)
        return shapes, self._checksum().numpy().tobytes()


def _checksum_function(weights):
    import tensorflow as tf

    def summary(v):
        x = tf.reshape(tf.cast(v, tf.float64), [-1])
        first = x[0] if int(np.prod(v.shape)) else tf.constant(0.0, tf.float64)
        return tf.stack([tf.reduce_sum(x), first])

    return tf.function(lambda: tf.stack([summary(v) for v in weights]) if weights
                       else tf.zeros([0, 2], tf.float64), autograph=False)


def _is_linear(layer) -> bool:
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _plain_conv(layer) -> bool:
    """A stride-1, undilated, ungrouped, channels-last ``Conv2D`` with 'same' padding and odd kernel."""
    return (type(layer) is layers.Conv2D and layer.data_format == "channels_last" and layer.built
            and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1 and layer.padding == "same"
            and all(k % 2 == 1 for k in layer.kernel_size))


def _is_softmax(layer) -> bool:
    if isinstance(layer, layers.Softmax):
        return layer.axis in (-1, 3)
    return isinstance(layer, layers.Activation) and layer.activation is keras.activations.softmax


class _Rewriter:
    """Walks ``model``'s graph, finds the patterns and rebuilds it with new layers."""

    def __init__(self, model):
        self.model = model
        self.nodes = [n for depth in sorted(model._nodes_by_depth, reverse=True)
                      for n in model._nodes_by_depth[depth]]
        self.producer = {}
        self.consumers: dict = {}
        self.uses: dict = {}
        for node in self.nodes:
            for t in node.outputs:
                self.producer[id(t)] = node
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
            if node.operation is not None:
                self.uses[id(node.operation)] = self.uses.get(id(node.operation), 0) + 1
        self.outputs = {id(t) for t in model.outputs}
        self.fold = {}      # id(conv node) -> bn layer; the bn node is skipped
        self.skip = set()   # ids of nodes whose output is taken over by a rewrite
        self.head = {}      # id(softmax node) -> conv node
        self.fused = {}     # id(conv node) -> (concat node, CropOrPadTo layer or None, factor, up index, up node)
        self._find()

    # -- pattern search -------------------------------------------------------------------------
    def _single(self, node) -> bool:
        """``node``'s layer is used once and its single output feeds exactly one node."""
        return (self.uses.get(id(node.operation)) == 1 and len(node.outputs) == 1
                and len(self.consumers.get(id(node.outputs[0]), [])) == 1
                and id(node.outputs[0]) not in self.outputs)

    def _source(self, node, i=0):
        return self.producer.get(id(node.input_tensors[i]))

    def _find(self):
        for node in self.nodes:
            layer = node.operation
            if isinstance(layer, layers.BatchNormalization) and layer.built and layer.axis in (-1, 3):
                conv = self._source(node)
                if (conv is not None and type(conv.operation) is layers.Conv2D and self._single(conv)
                        and conv.operation.data_format == "channels_last" and _is_linear(conv.operation)
                        and self.uses.get(id(layer)) == 1):
                    self.fold[id(conv)] = layer
                    self.skip.add(id(node))
        for node in self.nodes:
            if _is_softmax(node.operation) and self.uses.get(id(node.operation)) == 1:
                conv = self._source(node)
                if (conv is not None and _plain_conv(conv.operation) and conv.operation.filters == 2
                        and _is_linear(conv.operation) and self._single(conv) and id(conv) not in self.fold):
                    self.head[id(node)] = conv
        for node in self.nodes:
            if isinstance(node.operation, layers.Concatenate):
                self._find_fused(node)

    def _find_fused(self, concat):
        layer = concat.operation
        rank = len(concat.outputs[0].shape)
        if (self.uses.get(id(layer)) != 1 or len(concat.input_tensors) != 2
                or layer.axis not in (-1, rank - 1) or id(concat.outputs[0]) in self.outputs):
            return
        convs = self.consumers.get(id(concat.outputs[0]), [])
        if not convs or not all(_plain_conv(c.operation) and self.uses.get(id(c.operation)) == 1
                                for c in convs):
            return
        for i in (0, 1):
            up, chain = self._source(concat, i), []
            if up is not None and isinstance(up.operation, CropOrPadTo) and self._single(up):
                # CropOrPadTo([up_k(z), reference]): fused only when the reference is the other part
                if up.input_tensors[1] is not concat.input_tensors[1 - i]:
                    continue
                chain.append(up)
                up = self._source(up)
            if (up is None or not isinstance(up.operation, layers.UpSampling2D) or not self._single(up)
                    or up.operation.interpolation != "nearest" or up.operation.data_format != "channels_last"
                    or len(set(up.operation.size)) != 1 or up.operation.size[0] < 2):
                continue
            for c in convs:
                self.fused[id(c)] = (concat, chain[0].operation if chain else None,
                                     int(up.operation.size[0]), i, up)
            self.skip.update({id(concat), id(up), *(id(n) for n in chain)})
            return

    # -- rebuilding ------------------------------------------------------------------------------
    def _weights(self, conv_node):
        """``(kernel, bias)`` of a convolution in float64, with its batch norm folded in."""
        conv = conv_node.operation
        kernel = np.asarray(conv.kernel.numpy(), np.float64)
        bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else np.zeros(conv.filters)
        bn = self.fold.get(id(conv_node))
        if bn is not None:
            mean = np.asarray(bn.moving_mean.numpy(), np.float64)
            var = np.asarray(bn.moving_variance.numpy(), np.float64)
            gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else 1.0
            beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else 0.0
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel, bias = kernel * scale, (bias - mean) * scale + beta
        return kernel, bias

    def run(self):
        if not (self.fold or self.head or self.fused):
            return None
        model = self.model
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
        values = {id(t): v for t, v in zip(model.inputs, inputs)}
        for node in self.nodes:
            layer = node.operation
            if layer is None or node.is_input or id(node) in self.skip:
                continue
            if id(node) in self.fused:
                out = self._call_fused(node, values)
            elif any(id(t) not in values for t in node.input_tensors):
                continue
            elif id(node) in self.head:
                out = layers.Activation("sigmoid", name=layer.name, dtype=layer.dtype_policy)(
                    values[id(node.input_tensors[0])])
            else:
                args, kwargs = node.arguments.fill_in(values)
                new = layer.__class__.from_config({**layer.get_config(),
                                                   **({"use_bias": True} if id(node) in self.fold else {})})
                out = new(*args, **kwargs)
                if id(node) in self.fold or any(c is node for c in self.head.values()):
                    kernel, bias = self._weights(node)
                    if id(node) not in self.fold:  # the head: signed logit differences [z0 - z1, z1 - z0]
                        kernel, bias = kernel - kernel[..., ::-1], bias - bias[::-1]
                    new.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
                elif layer.weights:
                    new.set_weights(layer.get_weights())
            for t, v in zip(node.outputs, keras.tree.flatten(out)):
                values[id(t)] = v
            if id(node) in self.fold:  # the batch norm's output is the folded convolution's output
                (bn_node,) = self.consumers[id(node.outputs[0])]
                values[id(bn_node.outputs[0])] = values[id(node.outputs[0])]
        outputs = [values[id(t)] for t in model.outputs]
        return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)

    def _call_fused(self, node, values):
        concat, crop, k, i, up = self.fused[id(node)]
        conv = node.operation
        z = values[id(up.input_tensors[0])]
        skip = values[id(concat.input_tensors[1 - i])]
        kernel, bias = self._weights(node)
        cz = int(z.shape[-1])
        up_kernel = kernel[:, :, :cz] if i == 0 else kernel[:, :, -cz:]
        skip_kernel = kernel[:, :, cz:] if i == 0 else kernel[:, :, :-cz]
        new = UpsampledConcatConv2D(conv.filters, conv.kernel_size, factor=k, up_first=(i == 0),
                                    align=crop is not None, activation=conv.activation,
                                    name=conv.name, dtype=conv.dtype_policy)
        out = new([z, skip])
        new.set_weights([phase_kernel(up_kernel, k).astype(np.float32), up_kernel.astype(np.float32),
                         skip_kernel.astype(np.float32), bias.astype(np.float32)])
        return out


def phase_kernel(kernel: np.ndarray, k: int) -> np.ndarray:
    """Sub-pixel form of ``kernel`` [kh, kw, cin, cout] applied after nearest up-sampling by ``k``.

    Output pixel ``(k i + p, k j + q)`` with tap ``(t, u)`` reads low-resolution pixel
    ``(i + ⌊(p + t)/k⌋, j + ⌊(q + u)/k⌋)``, so each of the ``k²`` phases ``(p, q)`` is a
    convolution of the low-resolution map with the original taps summed by destination. Returns
    ``[2R+1, 2S+1, cin, k² cout]`` (``R = ⌈r/k⌉`` for a kernel radius ``r``), channels ordered
    ``(p k + q) cout + o`` as ``depth_to_space`` expects.
    """
    kh, kw, cin, cout = kernel.shape
    rh, rw = kh // 2, kw // 2
    big_r, big_s = math.ceil(rh / k), math.ceil(rw / k)
    out = np.zeros((2 * big_r + 1, 2 * big_s + 1, cin, k * k, cout), kernel.dtype)
    for p in range(k):
        for q in range(k):
            for t in range(-rh, rh + 1):
                for u in range(-rw, rw + 1):
                    a, b = (p + t) // k, (q + u) // k
                    out[a + big_r, b + big_s, :, p * k + q] += kernel[t + rh, u + rw]
    return out.reshape(2 * big_r + 1, 2 * big_s + 1, cin, k * k * cout)


@keras.saving.register_keras_serializable(package="tem_keras")
class UpsampledConcatConv2D(layers.Layer):
    """``conv(concat([up_k(z), skip]))`` without writing ``up_k(z)`` or the concatenation.

    ``up_k`` is nearest up-sampling by ``factor``; with ``align=True`` the up-sampled map is first
    centre-cropped or zero-padded to ``skip``'s size (:class:`~tem_keras.models.blocks.CropOrPadTo`).
    The fast path (``skip`` exactly ``factor`` times ``z``'s size, as at inference on padded
    images) computes ``depth_to_space(conv(z, phase_kernel)) + conv(skip, skip_kernel) + bias``;
    other sizes take the literal path. Weights: ``phase_kernel`` (see :func:`phase_kernel`),
    ``up_kernel``, ``skip_kernel``, ``bias``. Made by :func:`for_inference`, not trained.
    """

    def __init__(self, filters, kernel_size, factor, up_first=True, align=False, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(int(v) for v in kernel_size)
        self.factor = int(factor)
        self.up_first = bool(up_first)
        self.align = bool(align)
        self.activation = keras.activations.get(activation)
        self._align = CropOrPadTo(dtype=self.dtype_policy) if self.align else None

    def build(self, input_shape):
        z_shape, skip_shape = input_shape
        cz, cs = int(z_shape[-1]), int(skip_shape[-1])
        kh, kw = self.kernel_size
        k = self.factor
        ph, pw = 2 * math.ceil((kh // 2) / k) + 1, 2 * math.ceil((kw // 2) / k) + 1
        add = lambda name, shape: self.add_weight(name=name, shape=shape, initializer="zeros",  # noqa: E731
                                                  trainable=False)
        self.phase_kernel = add("phase_kernel", (ph, pw, cz, k * k * self.filters))
        self.up_kernel = add("up_kernel", (kh, kw, cz, self.filters))
        self.skip_kernel = add("skip_kernel", (kh, kw, cs, self.filters))
        self.bias = add("bias", (self.filters,))

    def call(self, inputs):
        import tensorflow as tf  # the TensorFlow backend is the only one tem_keras supports

        z, skip = inputs
        dtype = z.dtype
        k = self.factor
        from_skip = tf.nn.conv2d(skip, tf.cast(self.skip_kernel, dtype), 1, "SAME")

        def fast():
            if self.kernel_size == (1, 1):  # a 1×1 convolution commutes with nearest up-sampling
                y = tf.nn.conv2d(z, tf.cast(self.up_kernel, dtype), 1, "SAME")
                s = tf.shape(y)
                y = tf.broadcast_to(y[:, :, None, :, None, :], [s[0], s[1], k, s[2], k, s[3]])
                return tf.reshape(y, [s[0], s[1] * k, s[2] * k, self.filters])
            y = tf.nn.conv2d(z, tf.cast(self.phase_kernel, dtype), 1, "SAME")
            return tf.nn.depth_to_space(y, k)

        def literal():
            y = tf.repeat(tf.repeat(z, k, axis=1), k, axis=2)
            if self._align is not None:
                y = self._align.call([y, skip])  # call(): no casting to another dtype policy
            return tf.nn.conv2d(y, tf.cast(self.up_kernel, dtype), 1, "SAME")

        size_z, size_skip = tf.shape(z)[1:3], tf.shape(skip)[1:3]
        from_up = tf.cond(tf.reduce_all(size_z * k == size_skip), fast, literal)
        from_up = tf.ensure_shape(from_up, [None, None, None, self.filters])
        y = tf.nn.bias_add(from_skip, tf.cast(self.bias, dtype)) + from_up
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        z_shape, skip_shape = input_shape
        return (*skip_shape[:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "factor": self.factor, "up_first": self.up_first, "align": self.align,
                "activation": keras.activations.serialize(self.activation)}
