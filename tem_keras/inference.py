"""Prediction on whole images: preprocessing, padding to the model's down-sampling multiple, cropping."""

from __future__ import annotations

import numpy as np

from .errors import TEMInputError


def pad_to_multiple(image: np.ndarray, multiple: int):
    """Reflect-pad ``[H, W]`` so both sides are multiples of ``multiple``; return the padded image
    and the ``(H, W)`` to crop back to."""
    h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "symmetric"
        image = np.pad(image, ((0, ph), (0, pw)), mode=mode)
    return image, (h, w)


def predict_image(model, image, *, preprocessing=None, batch_size: int = 1) -> np.ndarray:
    """Class probabilities ``[H, W, C]`` (float32) of one image.

    Parameters
    ----------
    model : keras.Model
    image : ndarray ``[H, W]``, Micrograph or path
    preprocessing : Preprocessing, optional
        The run's preprocessing (per-image standardisation by default).
    """
    from .data.preprocess import Preprocessing
    from .io import Micrograph, read_image
    from .models.receptive_field import downsampling_factor

    if not isinstance(image, (np.ndarray, Micrograph)):
        image = read_image(image)
    data = image.data if isinstance(image, Micrograph) else np.asarray(image)
    if data.ndim != 2:
        raise TEMInputError(f"expected a 2-D image, got shape {data.shape}")
    data = (preprocessing or Preprocessing())(data)
    padded, (h, w) = pad_to_multiple(data, downsampling_factor(model))
    out = model.predict(padded[None, ..., None], batch_size=batch_size, verbose=0)[0, :h, :w]
    return out.astype(np.float32)
