"""Shallow, interpretable CNNs of Horwath et al. 2020.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Computational Materials 6, 108 (2020).
"""

from __future__ import annotations

import keras
from keras import layers

from .arguments import uniform_arguments
from .blocks import batch_normalization, model_input, softmax_head

__all__ = ["shallow_cnn"]


@uniform_arguments
def shallow_cnn(
    filters: int = 1,
    kernel_size: int = 9,
    batch_norm: bool = False,
    channels: int = 1,
    num_classes: int = 2,
    name: str | None = None,
) -> keras.Model:
    """One convolution layer whose kernels can be looked at, then a softmax (Horwath et al. 2020).

    ``filters=1`` (single-filter model): one ``kernel_size``² filter, then an affine 1×1
    read-out to ``num_classes`` logits and softmax. With 2 classes this is exactly a sigmoid of
    an affine function of the filter response, i.e. a learned linear filter plus threshold.
    ``filters>1`` (shallow-wide model, e.g. 32 filters): ``filters`` kernels, [batch norm,] ReLU,
    then a 1×1 convolution combining the filters into class logits, and softmax.
    No down-sampling: any input size works; receptive field = ``kernel_size``.

    Parameters
    ----------
    filters : int
        Number of filters of the single spatial convolution (1 or 32 in the paper).
    kernel_size : int
        Side of the square kernels (9 or 7).
    batch_norm : bool
        Batch normalisation after the convolution.
    channels : int
        Input channels.
    num_classes : int
        Output classes.
    name : str, optional
        Model name (default ``shallow_cnn_{filters}x{kernel_size}``).

    Returns
    -------
    keras.Model
    """
    inputs = model_input(channels)
    x = layers.Conv2D(int(filters), int(kernel_size), padding="same", use_bias=not batch_norm,
                      name="filters")(inputs)
    if batch_norm:
        x = batch_normalization("filters_bn")(x)
    if int(filters) > 1:
        x = layers.ReLU(name="filters_relu")(x)
    outputs = softmax_head(x, num_classes, name="combine")
    return keras.Model(inputs, outputs, name=name or f"shallow_cnn_{int(filters)}x{int(kernel_size)}")
