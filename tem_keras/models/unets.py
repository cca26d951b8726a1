"""UNet and the skip-less encoder-decoder (hourglass) of Horwath et al. 2020 and Groschner et al.

References
----------
O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015.

J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Computational Materials 6, 108 (2020).

C. K. Groschner, C. Choi, M. C. Scott, "Machine Learning Pipeline for Segmentation and Defect
Identification from High-Resolution Transmission Electron Microscopy Data", Microscopy and
Microanalysis 27, 549 (2021).
"""

from __future__ import annotations

import keras
from keras import layers

from .arguments import uniform_arguments
from .blocks import CropOrPadTo, conv_block, model_input, per_level, softmax_head, upsample

__all__ = ["unet", "encoder_decoder"]


@uniform_arguments
def unet(
    depth: int = 3,
    base_filters: int = 16,
    kernel_size: int = 3,
    convs_per_level: int = 1,
    batch_norm: bool = False,
    activation: str = "relu",
    dropout: float = 0.0,
    upsampling: str = "transpose",
    dilation_rates=None,
    channels: int = 1,
    num_classes: int = 2,
    name: str | None = None,
) -> keras.Model:
    """UNet: an encoder of ``depth`` down-sampling levels, a bottleneck, and a mirrored decoder.

    Level ``i`` (0-based) has ``base_filters * 2**i`` filters and is followed by a 2×2 max pool;
    the bottleneck has ``base_filters * 2**depth``. Each decoder level up-samples by 2, concatenates
    the encoder map of the same level (cropped/padded to it), and applies the same convolution block.
    Input sizes must be a multiple of ``2**depth`` for an exact match of the levels (others also run:
    maps are cropped/padded at the skips). Output: float32 softmax over ``num_classes``.

    The variants of Horwath et al. 2020 are: ``depth=3`` (512² images) or ``depth=4`` (1024²),
    "Norm" = ``batch_norm=True``, "TwoConv" = ``convs_per_level=2``, "TwoConv_Norm" = both,
    ``activation="leaky_relu"`` and ``kernel_size=7``. Groschner's UNet (filters 4-8-16-32) is
    ``depth=3, base_filters=4``. See :mod:`tem_keras.models.registry` for the named presets.

    Parameters
    ----------
    depth : int
        Number of down-sampling (max-pool 2×2) levels; total down-sampling ``2**depth``.
    base_filters : int
        Filters of the first level; doubled at every level.
    kernel_size : int
        Side of the square convolution kernels (3 or 7 in Horwath et al.).
    convs_per_level : int
        Convolutions per level (1 or 2).
    batch_norm : bool
        Batch normalisation after every convolution.
    activation : {"relu", "leaky_relu"}
        Non-linearity.
    dropout : float
        Dropout rate after every convolution block (0 for none).
    upsampling : {"transpose", "nearest", "bilinear"}
        Learned 2×2 transposed convolution, or fixed up-sampling.
    dilation_rates : int or sequence of int, optional
        Dilation of the convolutions per level: one value, or ``depth + 1`` values (encoder levels
        and bottleneck); decoder levels use the rate of the matching encoder level. ``None``: 1.
    channels : int
        Input channels (1 for TEM).
    num_classes : int
        Output classes.
    name : str, optional
        Model name (default ``unet_d{depth}_f{base_filters}``).

    Returns
    -------
    keras.Model
        Input ``(None, None, channels)``, output ``(None, None, num_classes)`` probabilities.
    """
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    rates = per_level(1 if dilation_rates is None else dilation_rates, depth + 1, "dilation_rates")
    block = dict(kernel_size=kernel_size, n_convs=convs_per_level, batch_norm=batch_norm,
                 activation=activation, dropout=dropout)
    inputs = model_input(channels)
    x = inputs
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, dilation_rate=rates[level], name=f"enc{level}", **block)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, dilation_rate=rates[depth], name="bottleneck", **block)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = upsample(x, 2, upsampling, filters, name=f"dec{level}_up")
        x = CropOrPadTo(name=f"dec{level}_align")([x, skips[level]])
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = conv_block(x, filters, dilation_rate=rates[level], name=f"dec{level}", **block)
    outputs = softmax_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name or f"unet_d{depth}_f{base_filters}")


@uniform_arguments
def encoder_decoder(
    filters=(16, 32, 64),
    kernel_sizes=(20, 10, 3),
    decoder_kernel_size: int = 3,
    batch_norm: bool = False,
    activation: str = "relu",
    dropout: float = 0.0,
    upsampling: str = "transpose",
    channels: int = 1,
    num_classes: int = 2,
    name: str | None = None,
) -> keras.Model:
    """Hourglass encoder-decoder without skip connections (Horwath et al. 2020).

    Encoder level ``i``: one ``kernel_sizes[i]`` convolution with ``filters[i]`` filters, then a
    2×2 max pool. Decoder, in reverse order: up-sample by 2, one ``decoder_kernel_size``
    convolution with ``filters[i]`` filters. No skip connections: fine detail must pass through the
    bottleneck, which is why this model misses particle centres / fine boundaries in Horwath et al.
    Total down-sampling ``2**len(filters)``.

    Parameters
    ----------
    filters : sequence of int
        Filters per level (one per down-sampling step).
    kernel_sizes : sequence of int
        Kernel side per encoder level (large early kernels, e.g. 20/10/3).
    decoder_kernel_size : int
        Kernel side of the decoder convolutions.
    batch_norm : bool
        Batch normalisation after every convolution.
    activation : {"relu", "leaky_relu"}
        Non-linearity.
    dropout : float
        Dropout rate after every convolution block.
    upsampling : {"transpose", "nearest", "bilinear"}
        Up-sampling in the decoder.
    channels : int
        Input channels.
    num_classes : int
        Output classes.
    name : str, optional
        Model name (default ``encoder_decoder``).

    Returns
    -------
    keras.Model
    """
    filters = list(filters)
    kernel_sizes = per_level(kernel_sizes, len(filters), "kernel_sizes")
    block = dict(n_convs=1, batch_norm=batch_norm, activation=activation, dropout=dropout)
    inputs = model_input(channels)
    x = inputs
    sizes = []
    for level, (f, k) in enumerate(zip(filters, kernel_sizes)):
        x = conv_block(x, f, kernel_size=k, name=f"enc{level}", **block)
        sizes.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    for level in reversed(range(len(filters))):
        x = upsample(x, 2, upsampling, filters[level], name=f"dec{level}_up")
        # only the size of the encoder map is used (no skip connection)
        x = CropOrPadTo(name=f"dec{level}_align")([x, sizes[level]])
        x = conv_block(x, filters[level], kernel_size=decoder_kernel_size, name=f"dec{level}", **block)
    outputs = softmax_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name or "encoder_decoder")
