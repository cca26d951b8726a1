"""Building blocks shared by the model builders, and the custom layers they register.

Every builder ends in :func:`softmax_head`, so that every model returns class probabilities in
float32, also under a ``mixed_float16`` dtype policy. Skip connections go through
:class:`CropOrPadTo`, so that a decoder feature map always matches the encoder map it is joined to,
whatever the input size.

The only custom layer is :class:`CropOrPadTo`; it is registered under the package name
``tem_keras``, so ``.keras`` files load with ``keras.saving.load_model(path)`` (safe mode, no
``custom_objects``) once ``tem_keras.models`` has been imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

__all__ = [
    "CropOrPadTo",
    "activation_layer",
    "batch_normalization",
    "conv_block",
    "residual_block",
    "softmax_head",
    "model_input",
    "per_level",
]

ACTIVATIONS = ("relu", "leaky_relu")

#: Momentum of the moving mean and variance of every batch normalisation in the zoo: PyTorch's
#: default (0.1 there, counted the other way). Keras' 0.99 averages over ~100 steps, so after the
#: few hundred steps of a CPU training the statistics used at inference still lag the weights
#: (notebook 02's residual UNet: test dice 0.56 with 0.99, 0.76 with 0.9, same two minutes).
BN_MOMENTUM = 0.9


def batch_normalization(name: str) -> layers.BatchNormalization:
    """Batch normalisation (Ioffe & Szegedy 2015) with the zoo's :data:`BN_MOMENTUM`."""
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


@keras.saving.register_keras_serializable(package="tem_keras")
class CropOrPadTo(layers.Layer):
    """Centre-crop or zero-pad a feature map to the spatial size of a reference tensor.

    Called on ``[x, reference]``; returns ``x`` with the height and width of ``reference`` and its
    own channels. Rows/columns that are too many are cropped symmetrically (the extra one from the
    bottom/right), missing ones are padded with zeros the same way. When the sizes already agree it
    is the identity. Used where a decoder map meets a skip connection and at the output of FCN-8s, so
    that models also run on input sizes that are not a multiple of their total down-sampling.
    """

    def call(self, inputs):
        # crop first, then pad (as tf.image.resize_with_crop_or_pad, without its Assert ops, which
        # XLA reports in a warning each)
        import tensorflow as tf  # the TensorFlow backend is the only one tem_keras supports

        x, reference = inputs
        channels = x.shape[-1]  # static; tf.slice below loses it, and Keras then runs the next
        shape = tf.shape(x)     # convolution through a shape-polymorphic XLA path
        target = tf.shape(reference)
        crop_h = tf.maximum(shape[1] - target[1], 0)
        crop_w = tf.maximum(shape[2] - target[2], 0)
        x = tf.slice(x, tf.stack([0, crop_h // 2, crop_w // 2, 0]),
                     tf.stack([-1, shape[1] - crop_h, shape[2] - crop_w, -1]))
        pad_h = tf.maximum(target[1] - shape[1], 0)
        pad_w = tf.maximum(target[2] - shape[2], 0)
        zero = tf.zeros_like(pad_h)
        paddings = tf.stack([tf.stack([zero, zero]), tf.stack([pad_h // 2, pad_h - pad_h // 2]),
                             tf.stack([pad_w // 2, pad_w - pad_w // 2]), tf.stack([zero, zero])])
        # ensure_shape is needed: without it TensorFlow 2.21's CPU graph optimisation (oneDNN)
        # crashes (segmentation fault) when this output is added to a convolution output, as in FCN-8s
        return tf.ensure_shape(tf.pad(x, paddings), [None, None, None, channels])

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def model_input(channels: int = 1, name: str = "image") -> keras.KerasTensor:
    """A ``keras.Input`` of shape ``(None, None, channels)``: any image size, ``channels`` channels.

    Parameters
    ----------
    channels : int
        Number of image channels (1 for TEM images).
    name : str
        Name of the input layer.
    """
    if int(channels) < 1:
        raise ValueError(f"channels must be >= 1, got {channels!r}")
    return keras.Input(shape=(None, None, int(channels)), name=name)


def activation_layer(activation: str, name: str | None = None) -> layers.Layer:
    """The non-linearity named ``activation``: ``"relu"`` or ``"leaky_relu"``.

    ``"leaky_relu"`` uses Keras's default negative slope of 0.3 (the default of the Keras version
    used by Horwath et al. 2020).

    Parameters
    ----------
    activation : {"relu", "leaky_relu"}
        Name of the activation.
    name : str, optional
        Layer name.
    """
    if activation == "relu":
        return layers.ReLU(name=name)
    if activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.3, name=name)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def per_level(value, n: int, what: str) -> list:
    """Expand ``value`` (a scalar or a sequence of length ``n``) to a list of ``n`` values.

    Parameters
    ----------
    value : int or sequence
        One value for all levels, or one per level.
    n : int
        Number of levels.
    what : str
        Name of the argument, for the error message.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) != n:
            raise ValueError(f"{what} needs {n} values (one per level), got {len(values)}: {value!r}")
        return values
    return [value] * n


def conv_block(
    x,
    filters: int,
    kernel_size: int = 3,
    n_convs: int = 1,
    batch_norm: bool = False,
    activation: str = "relu",
    dilation_rate: int = 1,
    dropout: float = 0.0,
    name: str = "block",
):
    """``n_convs`` × (convolution → [batch norm] → activation), then optional dropout.

    Parameters
    ----------
    x : KerasTensor
        Input feature map.
    filters : int
        Number of convolution filters.
    kernel_size : int
        Side of the square kernels.
    n_convs : int
        Number of convolutions in the block.
    batch_norm : bool
        Batch normalisation after each convolution (the convolution then has no bias).
    activation : {"relu", "leaky_relu"}
        Non-linearity after each convolution.
    dilation_rate : int
        Dilation of every convolution of the block.
    dropout : float
        Dropout rate after the block (0 for none).
    name : str
        Prefix of the layer names.
    """
    for i in range(int(n_convs)):
        x = layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            dilation_rate=int(dilation_rate),
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i + 1}",
        )(x)
        if batch_norm:
            x = batch_normalization(f"{name}_bn{i + 1}")(x)
        x = activation_layer(activation, name=f"{name}_act{i + 1}")(x)
    if dropout:
        x = layers.Dropout(float(dropout), name=f"{name}_dropout")(x)
    return x


def residual_block(x, filters: int, dilation_rate: int = 1, name: str = "res"):
    """Residual block of Sytwu et al. 2022.

    conv3×3 → BN → ReLU → conv3×3 → BN, plus a 1×1 convolution (projection) of the input, added,
    then ReLU. Both 3×3 convolutions use the same ``dilation_rate``.

    Parameters
    ----------
    x : KerasTensor
        Input feature map.
    filters : int
        Number of filters of the three convolutions.
    dilation_rate : int
        Dilation of the two 3×3 convolutions.
    name : str
        Prefix of the layer names.

    References
    ----------
    K. Sytwu, C. Groschner, M. C. Scott, "Understanding the influence of receptive field and network
    complexity in neural network-guided TEM image analysis", Microscopy and Microanalysis 28 (2022).
    """
    d = int(dilation_rate)
    y = layers.Conv2D(filters, 3, padding="same", dilation_rate=d, use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv1")(x)
    y = batch_normalization(f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", dilation_rate=d, use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv2")(y)
    y = batch_normalization(f"{name}_bn2")(y)
    shortcut = layers.Conv2D(filters, 1, padding="same", name=f"{name}_projection")(x)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu2")(y)


def softmax_head(x, num_classes: int = 2, project: bool = True, name: str = "head"):
    """The output of every tem_keras model: [1×1 convolution to class logits →] float32 softmax.

    The softmax layer has ``dtype="float32"``, so probabilities are float32 also when the rest of
    the model runs under ``keras.mixed_precision.set_dtype_policy("mixed_float16")``.

    Parameters
    ----------
    x : KerasTensor
        Feature map (``project=True``) or class logits (``project=False``).
    num_classes : int
        Number of classes (2: background and particle).
    project : bool
        Add the 1×1 convolution that maps the features to ``num_classes`` logits.
    name : str
        Prefix of the layer names (``{name}_logits`` and ``softmax``).
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (softmax over classes), got {num_classes!r}")
    if project:
        x = layers.Conv2D(int(num_classes), 1, padding="same", name=f"{name}_logits")(x)
    return layers.Activation("softmax", dtype="float32", name="softmax")(x)


def upsample(x, factor: int, mode: str, filters: int, name: str):
    """Up-sample by ``factor``: learned (``"transpose"``) or fixed (``"nearest"``/``"bilinear"``).

    Parameters
    ----------
    x : KerasTensor
        Feature map.
    factor : int
        Up-sampling factor.
    mode : {"transpose", "nearest", "bilinear"}
        ``"transpose"``: ``Conv2DTranspose(filters, factor, strides=factor)``; otherwise
        ``UpSampling2D(factor, interpolation=mode)`` (no parameters).
    filters : int
        Filters of the transposed convolution.
    name : str
        Layer name.
    """
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, factor, strides=factor, padding="same", name=name)(x)
    if mode in ("nearest", "bilinear"):
        return layers.UpSampling2D(factor, interpolation=mode, name=name)(x)
    raise ValueError(f"upsampling must be 'transpose', 'nearest' or 'bilinear', got {mode!r}")
