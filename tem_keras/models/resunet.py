"""Residual UNet of Sytwu, Groschner & Scott 2022.

References
----------
K. Sytwu, C. Groschner, M. C. Scott, "Understanding the influence of receptive field and network
complexity in neural network-guided TEM image analysis", Microscopy and Microanalysis 28, 1896 (2022).
"""

from __future__ import annotations

import keras
from keras import layers

from .arguments import uniform_arguments
from .blocks import CropOrPadTo, model_input, per_level, residual_block, softmax_head

__all__ = ["residual_unet"]


@uniform_arguments
def residual_unet(
    n_blocks: int = 2,
    base_filters: int = 4,
    pool_sizes=None,
    dilation_rates=None,
    channels: int = 1,
    num_classes: int = 2,
    name: str | None = None,
) -> keras.Model:
    """Residual UNet with ``n_blocks`` encoder blocks (Sytwu et al. 2022).

    Residual block (:func:`~tem_keras.models.blocks.residual_block`): conv3×3-BN-ReLU-conv3×3-BN
    plus a 1×1 projection of the input, added, then ReLU. Filters start at ``base_filters`` (4) and
    double per block. Encoder block ``i`` is followed by a max pool of size and stride
    ``pool_sizes[i]``; then a bottleneck block; each decoder step up-samples (nearest) by the same
    ``pool_sizes[i]``, concatenates the skip of encoder block ``i`` and applies a residual block
    with the filters of that encoder block; a 1×1 convolution maps to the classes (softmax).

    The receptive field is set by the pool sizes (or the dilations) independently of the number of
    parameters: for ``n_blocks=2`` and ``pool_sizes=(k0, k1)`` it is ``8 + 8 k0 + 5 k0 k1`` pixels
    (44 px for (2, 2), 120 px for (4, 4), 392 px for (8, 8)).

    Parameters
    ----------
    n_blocks : int
        Number of encoder blocks (= pooling steps); 2, 3 or 4 in the paper.
    base_filters : int
        Filters of the first block (4 in the paper), doubled per block.
    pool_sizes : int or sequence of int, optional
        Max-pool size (= stride = later up-sampling factor) after each encoder block: one value or
        ``n_blocks`` values (2, 4 or 8 in the paper). ``None``: 2 everywhere.
    dilation_rates : int or sequence of int, optional
        Dilation of the 3×3 convolutions, constant within a block: one value, ``n_blocks + 1``
        values (encoder blocks and bottleneck; decoder blocks reuse the rate of the matching encoder
        block) or ``2 * n_blocks + 1`` values (encoder, bottleneck, decoder from deep to shallow).
        ``None``: 1.
    channels : int
        Input channels.
    num_classes : int
        Output classes.
    name : str, optional
        Model name (default ``residual_unet_{n_blocks}b_p{k0}-{k1}...``).

    Returns
    -------
    keras.Model
        Input ``(None, None, channels)``; total down-sampling ``prod(pool_sizes)``.
    """
    n_blocks = int(n_blocks)
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    pools = [int(k) for k in per_level(2 if pool_sizes is None else pool_sizes, n_blocks, "pool_sizes")]
    rates = 1 if dilation_rates is None else dilation_rates
    if isinstance(rates, (list, tuple)) and len(rates) == 2 * n_blocks + 1:
        enc_rates = list(rates[: n_blocks + 1])
        dec_rates = list(reversed(rates[n_blocks + 1 :]))  # indexed by level
    else:
        enc_rates = per_level(rates, n_blocks + 1, "dilation_rates")
        dec_rates = enc_rates[:n_blocks]
    inputs = model_input(channels)
    x = inputs
    skips = []
    for i in range(n_blocks):
        x = residual_block(x, base_filters * 2**i, dilation_rate=enc_rates[i], name=f"enc{i}")
        skips.append(x)
        x = layers.MaxPooling2D(pools[i], strides=pools[i], name=f"enc{i}_pool")(x)
    x = residual_block(x, base_filters * 2**n_blocks, dilation_rate=enc_rates[n_blocks], name="bottleneck")
    for i in reversed(range(n_blocks)):
        x = layers.UpSampling2D(pools[i], interpolation="nearest", name=f"dec{i}_up")(x)
        x = CropOrPadTo(name=f"dec{i}_align")([x, skips[i]])
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])
        x = residual_block(x, base_filters * 2**i, dilation_rate=dec_rates[i], name=f"dec{i}")
    outputs = softmax_head(x, num_classes)
    default = f"residual_unet_{n_blocks}b_p" + "-".join(map(str, pools))
    return keras.Model(inputs, outputs, name=name or default)
