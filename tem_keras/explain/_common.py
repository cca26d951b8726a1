"""Helpers shared by the explanation modules: input images, the logits tensor, layer lookup, figures."""

from __future__ import annotations

import os

import numpy as np

from ..errors import TEMInputError
from ..inference import pad_to_multiple

#: layers whose output is a spatial feature map worth explaining (class names)
_CONV_CLASSES = ("Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D")
_ACTIVATION_CLASSES = ("ReLU", "LeakyReLU", "ELU", "PReLU", "Activation")


def prepare_image(image, preprocessing=None) -> np.ndarray:
    """A 2-D float32 image as the model expects it (standardised), from an array, Micrograph or path.

    Parameters
    ----------
    image : ndarray ``[H, W]`` (or ``[H, W, C]``), Micrograph, str or os.PathLike
        The image; files are read with :func:`tem_keras.io.read_image`.
    preprocessing : callable, optional
        Applied to 2-D images instead of :func:`~tem_keras.data.preprocess.standardize`, e.g. the
        :class:`~tem_keras.data.preprocess.Preprocessing` of a run. ``False``: use the array as is.

    Returns
    -------
    ndarray, float32, ``[H, W, C]``
    """
    from ..data.preprocess import standardize
    from ..io import Micrograph, read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Micrograph):
        image = image.data
    array = np.asarray(image, dtype=np.float32)
    if array.ndim not in (2, 3):
        raise TEMInputError(f"expected a 2-D image [H, W] (or [H, W, C]), got shape {array.shape}")
    if preprocessing is not False:
        process = standardize if preprocessing is None else preprocessing
        if array.ndim == 2:
            array = process(array)
        else:
            array = np.stack([process(array[..., c]) for c in range(array.shape[-1])], axis=-1)
    if array.ndim == 2:
        array = array[..., None]
    return np.asarray(array, dtype=np.float32)


def model_input_image(model, image, preprocessing=None) -> tuple[np.ndarray, tuple[int, int]]:
    """``[1, H', W', C]`` batch for ``model`` (padded to its down-sampling) and the original ``(H, W)``."""
    from ..models.receptive_fields import downsampling_factor

    array = prepare_image(image, preprocessing)
    channels = model.inputs[0].shape[-1]
    if channels is not None and array.shape[-1] != channels:
        if array.shape[-1] == 1:
            array = np.repeat(array, channels, axis=-1)
        else:
            raise TEMInputError(f"the model takes {channels} channel(s), the image has {array.shape[-1]}")
    try:
        multiple = downsampling_factor(model)
    except Exception:  # a graph the walker does not follow: use the image as it is
        multiple = 1
    padded, size = pad_to_multiple(array, max(1, int(multiple)))
    return padded[None], size


def model_inputs(model):
    """``model.inputs[0]`` for single-input models (so that calls with one tensor match), else the list."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def softmax_layer(model):
    """The layer that turns class scores into probabilities (the zoo's ``softmax`` head), or None."""
    try:
        return model.get_layer("softmax")
    except ValueError:
        pass
    last = model.layers[-1]
    if type(last).__name__ == "Activation" and getattr(last.activation, "__name__", "") == "softmax":
        return last
    return None


def logits_tensor(model):
    """The symbolic class scores before the softmax (the input of the zoo's ``softmax`` layer).

    Every tem_keras model ends in :func:`~tem_keras.models.blocks.softmax_head`, whose last layer
    is ``Activation("softmax", name="softmax")``; its input is the pre-softmax score map. For a model
    without such a layer the output itself is returned (then the "scores" are probabilities).
    """
    layer = softmax_layer(model)
    if layer is None:
        return model.outputs[0]
    return layer.input


def _ancestor_layers(model, tensor) -> list:
    """Layers of ``model`` on which ``tensor`` depends, in the model's (topological) order."""
    seen, stack = set(), [tensor]
    names = set()
    while stack:
        t = stack.pop()
        history = getattr(t, "_keras_history", None)
        if history is None:
            continue
        op = history[0]
        if id(op) in seen:
            continue
        seen.add(id(op))
        names.add(op.name)
        node = op._inbound_nodes[history[1]]
        stack.extend(node.input_tensors)
    return [layer for layer in model.layers if layer.name in names]


def feature_layers(model) -> list:
    """Layers before the class scores whose output is a 4-D feature map, in graph order.

    The layer producing the class scores itself, the input layer and nested models are left out.
    """
    logits = logits_tensor(model)
    logits_layer = logits._keras_history[0]
    out = []
    for layer in _ancestor_layers(model, logits):
        if layer is logits_layer or type(layer).__name__ == "InputLayer" or hasattr(layer, "layers"):
            continue
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4:
            out.append(layer)
    return out


def get_layer(model, layer):
    """The layer of ``model`` named ``layer`` (or at index ``layer``, or ``layer`` itself when it
    is one of the model's layers), with an error that lists a few valid names."""
    from ..validation import check_int

    names = [lyr.name for lyr in feature_layers(model)]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if isinstance(layer, str):
        try:
            return model.get_layer(layer)
        except ValueError:
            raise ValueError(f"layer: model {model.name!r} has no layer {layer!r}; feature layers: "
                             f"{shown}") from None
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, (bool, np.bool_)):
        return model.layers[check_int("layer", layer, 0, len(model.layers) - 1)]
    if any(layer is lyr for lyr in model.layers):
        return layer
    raise TypeError(f"layer must be a layer name, an index in [0, {len(model.layers) - 1}] or a layer "
                    f"of model {model.name!r}, got {layer!r} ({type(layer).__name__}); feature layers: {shown}")


def check_class_index(model, class_index) -> int:
    """``class_index`` as an int in ``[0, classes - 1]`` of ``model``'s output."""
    from ..validation import check_int

    return check_int("class_index", class_index, 0, num_classes(model) - 1)


def is_conv(layer) -> bool:
    return type(layer).__name__ in _CONV_CLASSES


def is_activation(layer) -> bool:
    name = type(layer).__name__
    if name == "Activation":
        return getattr(layer.activation, "__name__", "") not in ("softmax", "linear")
    if name in _ACTIVATION_CLASSES:
        return True
    # convolutions with a built-in non-linearity (VGG16's convolutions)
    act = getattr(layer, "activation", None)
    return is_conv(layer) and act is not None and getattr(act, "__name__", "linear") != "linear"


def num_classes(model) -> int:
    return int(model.outputs[0].shape[-1])


def figure(*args, **kwargs):
    """A matplotlib figure and axes (Agg backend), from :mod:`tem_keras.io.figures`."""
    from ..io.figures import new_figure

    return new_figure(*args, **kwargs)


def save_figure(fig, path):
    """Write ``fig`` to ``path`` (PNG) and close it; from :mod:`tem_keras.io.figures`."""
    from ..io.figures import save_figure as save

    return save(fig, path)


def resize(array: np.ndarray, shape) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``shape`` aligning pixel centres (as ``tf.image.resize``)."""
    array = np.asarray(array, dtype=np.float32)
    if array.shape == tuple(shape):
        return array
    import tensorflow as tf

    out = tf.image.resize(array[None, ..., None], tuple(int(s) for s in shape), method="bilinear")
    return out.numpy()[0, ..., 0]
