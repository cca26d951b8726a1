"""Segmentation models for TEM images: builders, registry, receptive field and description.

Every model takes images ``(None, None, channels)`` (1 channel by default), returns a float32
softmax over ``num_classes`` (2 by default), runs on any input size that is a multiple of its
total down-sampling (:func:`downsampling_factor`), and saves to / loads from ``.keras`` without
``custom_objects`` once this package is imported (its custom layers are registered under
``tem_keras``).

Builders: :func:`unet`, :func:`encoder_decoder`, :func:`residual_unet`, :func:`fcn8s`,
:func:`shallow_cnn`, :func:`sm_model`; :func:`build_model` builds by name, preset or config dict.
:func:`for_inference` rewrites a trained model for fast inference (what ``predict`` runs).

Note: the names ``receptive_field`` and ``describe`` below are the functions; their modules are
``tem_keras.models.receptive_field`` / ``tem_keras.models.describe`` (use ``from ... import``).
"""

from .blocks import CropOrPadTo, softmax_head
from .describe import activation_bytes_per_pixel, describe, format_model_table, model_table
from .fcn import fcn8s
from .optimize import for_inference
from .receptive_field import downsampling_factor, empirical_receptive_field, receptive_field
from .registry import MODELS, PRESETS, available_models, build_model
from .resunet import residual_unet
from .shallow import shallow_cnn
from .sm import sm_model
from .unet import encoder_decoder, unet
from .weights import PretrainedWeightsUnavailable

__all__ = [
    "CropOrPadTo",
    "MODELS",
    "PRESETS",
    "PretrainedWeightsUnavailable",
    "activation_bytes_per_pixel",
    "available_models",
    "build_model",
    "describe",
    "downsampling_factor",
    "empirical_receptive_field",
    "encoder_decoder",
    "fcn8s",
    "for_inference",
    "format_model_table",
    "model_table",
    "receptive_field",
    "residual_unet",
    "shallow_cnn",
    "sm_model",
    "softmax_head",
    "unet",
]
