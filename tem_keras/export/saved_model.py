"""The ``saved_model/`` of an export folder: the serving graph, checked against the Keras model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_serving_module", "write_saved_model", "MAX_DIFFERENCE"]

#: largest |difference| allowed between the SavedModel's and the in-memory model's probabilities
MAX_DIFFERENCE = 1e-5


def save_serving_module(module, folder: Path, *, serve_returns_dict: bool = False) -> Path:
    """``tf.saved_model.save`` of a :func:`~tem_keras.export.serving.serving_module` with its
    signatures (``serving_default``, ``serve_mask``, ``network``).

    ``serve_returns_dict``: the saved ``serve`` returns ``{"probabilities": ...}`` (the
    ``serving_default`` function), as bioimageio.core's ``TFSMLayer(call_endpoint="serve")``
    expects. The same module is saved, so the functions traced for an earlier save are reused
    rather than traced and converted again.
    """
    import tensorflow as tf

    serve = module.serve
    if serve_returns_dict:
        module.serve = module.serving_signatures["serving_default"]
    try:
        tf.saved_model.save(module, str(folder), signatures=module.serving_signatures)
    finally:
        module.serve = serve
    return Path(folder)


def write_saved_model(module, folder: Path, image: np.ndarray, reference: np.ndarray) -> float:
    """Save ``module`` to ``folder``, reload it and compare its ``serve`` on ``image`` with ``reference``.

    Parameters
    ----------
    module : tf.Module
        From :func:`~tem_keras.export.serving.serving_module`.
    folder : Path
        Where the SavedModel goes.
    image : ndarray ``[H, W]``
        Raw test image.
    reference : ndarray ``[H, W, C]``
        The in-memory model's probabilities of ``image`` (NumPy preprocessing).

    Returns
    -------
    float
        The largest absolute difference of the reloaded SavedModel to ``reference``.

    Raises
    ------
    RuntimeError
        The difference exceeds :data:`MAX_DIFFERENCE` (a bug: please report it).
    """
    import tensorflow as tf

    save_serving_module(module, folder)
    loaded = tf.saved_model.load(str(folder))
    got = loaded.serve(tf.constant(image[None, ..., None])).numpy()[0]
    difference = float(np.max(np.abs(got - reference)))
    if not difference <= MAX_DIFFERENCE:
        raise RuntimeError(f"the exported SavedModel differs from the in-memory model by "
                           f"{difference:.3g} (> {MAX_DIFFERENCE:g})")
    return difference
