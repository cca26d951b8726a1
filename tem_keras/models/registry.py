"""Model names → builders, named presets from the papers, and :func:`build_model`.

Builders are pure functions of their keyword arguments, so a model is rebuilt from
``{"name": ..., **kwargs}`` (what the training code stores in ``config.json``).

Presets (our reading of the papers; the papers do not give every detail):

``unet_horwath_512``
    Horwath et al. 2020, 512² images: 3 down-sampling levels, one 3×3 convolution per level,
    16 base filters (16-32-64, bottleneck 128), ReLU, no batch norm, transposed-convolution up-sampling.
    Their "Norm", "TwoConv", "TwoConv_Norm", leaky-ReLU and 7×7 variants are
    ``batch_norm=True``, ``convs_per_level=2``, both, ``activation="leaky_relu"``, ``kernel_size=7``.
``unet_horwath_1024``
    The same with 4 levels, for 1024² images.
``unet_groschner``
    Groschner et al. 2021: UNet with 4-8-16-32 filters (3 levels, base 4), two 3×3 convolutions
    per level with batch norm.
``encoder_decoder_horwath``
    The hourglass without skips: 16-32-64 filters with 20/10/3 kernels.
``residual_unet_sytwu``
    Sytwu et al. 2022: 2 residual blocks, 4 base filters, pool sizes (4, 4) — 120 px receptive field.
``fcn8s_groschner``
    FCN-8s on VGG16 with ImageNet weights (Groschner et al.); ``fcn8s_dilated`` its dilated variant.
``shallow_cnn_single`` / ``shallow_cnn_wide``
    Horwath et al.'s single-filter (one 9×9 kernel) and shallow-wide (32 7×7 kernels + 1×1) CNNs.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from .fcn import fcn8s
from .resunet import residual_unet
from .shallow import shallow_cnn
from .sm import sm_model
from .unets import encoder_decoder, unet

__all__ = ["MODELS", "PRESETS", "build_model", "available_models"]

#: name → builder
MODELS = {
    "unet": unet,
    "encoder_decoder": encoder_decoder,
    "residual_unet": residual_unet,
    "fcn8s": fcn8s,
    "shallow_cnn": shallow_cnn,
    "sm": sm_model,
}

#: preset name → (builder name, keyword arguments)
PRESETS = {
    "unet_horwath_512": ("unet", dict(depth=3, base_filters=16, kernel_size=3, convs_per_level=1)),
    "unet_horwath_1024": ("unet", dict(depth=4, base_filters=16, kernel_size=3, convs_per_level=1)),
    "unet_groschner": ("unet", dict(depth=3, base_filters=4, convs_per_level=2, batch_norm=True)),
    "encoder_decoder_horwath": ("encoder_decoder", dict(filters=(16, 32, 64), kernel_sizes=(20, 10, 3))),
    "residual_unet_sytwu": ("residual_unet", dict(n_blocks=2, base_filters=4, pool_sizes=(4, 4))),
    "fcn8s_groschner": ("fcn8s", dict(weights="imagenet")),
    "fcn8s_dilated": ("fcn8s", dict(dilated=True)),
    "shallow_cnn_single": ("shallow_cnn", dict(filters=1, kernel_size=9)),
    "shallow_cnn_wide": ("shallow_cnn", dict(filters=32, kernel_size=7)),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`: the builders, then the presets."""
    return list(MODELS) + list(PRESETS)


def resolve(name_or_config, **kwargs) -> tuple[str, dict]:
    """Builder name and full keyword arguments for a name or config, without building.

    Parameters
    ----------
    name_or_config : str or mapping
        See :func:`build_model`.
    **kwargs
        Keyword arguments that override the preset/config ones.

    Returns
    -------
    builder_name : str
    kwargs : dict
    """
    if isinstance(name_or_config, Mapping):
        config = dict(name_or_config)
        if "name" not in config:
            raise ValueError(f"a model config needs a 'name' key (one of {available_models()}), got {config!r}")
        name = config.pop("name")
        nested = config.pop("kwargs", None) or {}
        params = {**nested, **config, **kwargs}
    elif isinstance(name_or_config, str):
        name, params = name_or_config, dict(kwargs)
    else:
        raise TypeError(f"build_model expects a model name or a config dict, got {type(name_or_config).__name__}")
    if name in PRESETS:
        builder_name, preset = PRESETS[name]
        return builder_name, {**preset, **params}
    if name in MODELS:
        return name, params
    raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")


def build_model(name_or_config, **kwargs) -> keras.Model:
    """Build a model by name, preset name or config dict.

    Parameters
    ----------
    name_or_config : str or mapping
        A builder name (``"unet"``, ``"encoder_decoder"``, ``"residual_unet"``, ``"fcn8s"``,
        ``"shallow_cnn"``, ``"sm"``), a preset name (see :data:`PRESETS`), or a dict with a
        ``"name"`` key and the keyword arguments, either inline (``{"name": "unet",
        "base_filters": 8}``) or under ``"kwargs"`` (``{"name": "unet", "kwargs": {...}}``).
    **kwargs
        Keyword arguments of the builder; they override those of the preset or config.

    Returns
    -------
    keras.Model

    Examples
    --------
    >>> model = build_model({"name": "unet", "base_filters": 8})
    >>> model = build_model("residual_unet_sytwu", pool_sizes=(8, 8))
    """
    builder_name, params = resolve(name_or_config, **kwargs)
    builder = MODELS[builder_name]
    try:
        return builder(**params)
    except TypeError as err:
        raise TypeError(f"build_model({builder_name!r}): {err}") from err
