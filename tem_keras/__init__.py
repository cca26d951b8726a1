"""tem_keras: segmentation of transmission electron micrographs of nanoparticles.

Keras 3 / TensorFlow toolkit: read TEM files with their pixel size, train segmentation models in one
call, predict on images of any size, measure particles in nanometres, explain and export models.

The public API is imported lazily so that ``import tem_keras`` is fast and reading files does not
start TensorFlow.
"""

from importlib import import_module

from . import _env  # noqa: F401  (environment defaults must be set before TensorFlow is imported)

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "Micrograph": "tem_keras.io",
    "read_image": "tem_keras.io",
    "read_stack": "tem_keras.io",
    "MicrographStack": "tem_keras.io",
    "write_image": "tem_keras.io",
    "write_mask": "tem_keras.io",
    "write_probabilities": "tem_keras.io",
    "TEMInputError": "tem_keras.errors",
    "discover": "tem_keras.data.datasets",
    "fit": "tem_keras.training",
    "plan": "tem_keras.training.planning",
    "sweep": "tem_keras.training",
    "Run": "tem_keras.artifacts",
    "ModelBundle": "tem_keras.artifacts",
    "ExportedModel": "tem_keras.artifacts",
    "load": "tem_keras.artifacts",
    "predict": "tem_keras.inference",
    "predict_stack": "tem_keras.inference",
    "predict_image": "tem_keras.inference",
    "evaluate": "tem_keras.inference",
    "Prediction": "tem_keras.inference",
    "PredictOptions": "tem_keras.inference",
    "watch": "tem_keras.live",
    "export": "tem_keras.export",
    "measure_particles": "tem_keras.analysis.particles",
    "count_particles": "tem_keras.analysis.particles",
    "size_distribution": "tem_keras.analysis.particles",
    "track_particles": "tem_keras.analysis.particles",
    "segmentation_scores": "tem_keras.analysis.metrics",
    "threshold_curve": "tem_keras.analysis.metrics",
    "best_threshold": "tem_keras.analysis.metrics",
    "otsu_threshold": "tem_keras.analysis.metrics",
    "pseudo_labels": "tem_keras.analysis.baselines",
    "auto_labels": "tem_keras.autolabel",
    "otsu_segment": "tem_keras.analysis.baselines",
    "fourier_filter": "tem_keras.analysis.baselines",
    "build_model": "tem_keras.models.registry",
    "describe": "tem_keras.models.description",
    "receptive_field": "tem_keras.models.receptive_fields",
}

# sub-packages reachable as attributes without an explicit import (``tem_keras.explain.grad_cam``)
_SUBMODULES = {name: f"tem_keras.{name}" for name in ("analysis", "autolabel", "data", "explain", "models")}
_SUBMODULES.update({name: f"tem_keras.analysis.{name}" for name in ("baselines", "metrics", "particles")})

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return import_module(_SUBMODULES[name])
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tem_keras' has no attribute {name!r}")


def __dir__():
    return __all__ + list(_SUBMODULES)


# ``tem_keras.export`` names both a sub-package and its main function. Python binds a sub-package
# to its parent's attribute when it is first imported, which would hide the function. So the
# (light, lazily filled) sub-package is imported here, once, and that binding removed: the name
# then resolves through ``__getattr__`` and ``_API`` to the function, and later imports find the
# sub-package in ``sys.modules`` and leave the attribute alone. ``from tem_keras.export import
# ...`` reaches the sub-package as usual.
import_module("tem_keras.export")
globals().pop("export", None)
