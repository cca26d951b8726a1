"""Data sets: discovery and pairing, preprocessing, augmentation, tf.data pipelines, synthetic data.

Sub-modules and the most used functions are reached lazily, so ``import tem_keras`` stays light
(TensorFlow starts only with :mod:`.pipeline` or :mod:`.augment`)::

    tem_keras.data.discover("data/particles")
    tem_keras.data.synthetic.make_dataset("data/synthetic", n_images=8)
"""

from importlib import import_module

_SUBMODULES = ("augment", "datasets", "labelling", "pipeline", "preprocess", "synthetic")

# name -> module that defines it
_API = {
    "discover": "datasets",
    "read_mask": "datasets",
    "load_pair": "datasets",
    "split_samples": "datasets",
    "Preprocessing": "preprocess",
    "make_dataset": "synthetic",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    if name in _API:
        value = getattr(import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + list(_SUBMODULES))
