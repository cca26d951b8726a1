"""Segmentation models for TEM images: builders, registry, receptive field and description.

Every model takes images ``(None, None, channels)`` (1 channel by default), returns a float32
softmax over ``num_classes`` (2 by default), runs on any input size that is a multiple of its
total down-sampling (:func:`downsampling_factor`), and saves to / loads from ``.keras`` without
``custom_objects``: its custom layers are registered under ``tem_keras`` as soon as a builder,
:func:`tem_keras.load` or :func:`register_layers` has run.

Builders: :func:`unet`, :func:`encoder_decoder`, :func:`residual_unet`, :func:`fcn8s`,
:func:`shallow_cnn`, :func:`sm_model`; :func:`build_model` builds by name, preset or config dict.
:func:`for_inference` rewrites a trained model for fast inference (what ``predict`` runs).

The names are imported lazily, as in the package face: ``import tem_keras.models`` does not start
Keras, so :mod:`tem_keras.models.table` (the table of ``tem-keras models``, cached per version)
answers in a fraction of a second.
"""

from importlib import import_module

#: public name → the module of this package that defines it
_API = {
    "CropOrPadTo": "blocks",
    "softmax_head": "blocks",
    "activation_bytes_per_pixel": "description",
    "describe": "description",
    "format_model_table": "description",
    "model_table": "description",
    "fcn8s": "fcn",
    "for_inference": "optimize",
    "downsampling_factor": "receptive_fields",
    "empirical_receptive_field": "receptive_fields",
    "receptive_field": "receptive_fields",
    "MODELS": "registry",
    "PRESETS": "registry",
    "available_models": "registry",
    "build_model": "registry",
    "residual_unet": "resunet",
    "shallow_cnn": "shallow",
    "sm_model": "sm",
    "encoder_decoder": "unets",
    "unet": "unets",
    "PretrainedWeightsUnavailable": "weights",
}

__all__ = sorted([*_API, "register_layers"])


def register_layers() -> None:
    """Register tem_keras's custom Keras layers (``tem_keras>CropOrPadTo``,
    ``tem_keras>UpsampledConcatConv2D``), so that ``keras.saving.load_model(path)`` opens a
    tem_keras ``.keras`` file in safe mode without ``custom_objects``.

    >>> from tem_keras.models import register_layers
    >>> register_layers()
    >>> import keras
    >>> keras.saving.get_registered_object("tem_keras>CropOrPadTo").__name__
    'CropOrPadTo'
    """
    import_module(".blocks", __name__)
    import_module(".optimize", __name__)


def __getattr__(name):
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tem_keras.models' has no attribute {name!r}")


def __dir__():
    return __all__
