"""The ``model.keras`` of an export folder: the model as trained, loadable in Keras's safe mode."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_keras"]


def write_keras(model, path: Path) -> Path:
    """Save ``model`` (batch norms and all, as trained) to ``path``, without its optimizer
    state or compile settings: what predicting needs, about a third of a training checkpoint.

    Keras 3 saves a compiled model's optimizer into ``.keras`` files whatever
    ``include_optimizer`` says, so the layers are saved as a new, uncompiled functional model
    (the same layers and weights, the same name). The file holds no Python code (tem_keras's
    layers are registered Keras serialisables), so :func:`tem_keras.artifacts.load_keras_model`
    opens it in safe mode.
    """
    import keras

    keras.Model(model.inputs, model.outputs, name=model.name).save(path)
    return Path(path)
