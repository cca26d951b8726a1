"""The ``model.keras`` of an export folder: the model as trained, loadable in Keras's safe mode."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_keras"]


def write_keras(model, path: Path) -> Path:
    """Save ``model`` (batch norms and all, as trained) to ``path``.

    The file holds no Python code (tem_keras's layers are registered Keras serialisables), so
    :func:`tem_keras.artifacts.load_keras_model` opens it in safe mode.
    """
    model.save(path)
    return Path(path)
