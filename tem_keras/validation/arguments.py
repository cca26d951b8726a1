"""Checks of public arguments, at the door, with one message style.

Every message says what is wrong, the value received and what is allowed::

    tile_size must be an integer >= 16 or None, got 7

Type errors (a string where a number belongs) raise :class:`TypeError`, values out of range
:class:`ValueError`; both come from here, never from NumPy, pandas or TensorFlow further in.
No third-party import: usable before TensorFlow starts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

__all__ = ["check_bool", "check_choice", "check_devices", "check_int", "check_keras_file",
           "check_mask_contents", "check_number", "check_optional", "check_path", "check_pixel_size",
           "check_positive_int", "check_predict_arguments", "check_predict_input",
           "check_serving_images"]


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def _allowed(text: str, optional: bool) -> str:
    return text + (" or None" if optional else "")


def check_int(name: str, value, low: int | None = None, high: int | None = None, *,
              optional: bool = False) -> int | None:
    """``value`` as an int in ``[low, high]`` (either bound may be None); None if ``optional``."""
    if value is None and optional:
        return None
    bounds = (f" >= {low}" if high is None else f" in [{low}, {high}]") if low is not None else (
        f" <= {high}" if high is not None else "")
    allowed = _allowed(f"an integer{bounds}", optional)
    if not _is_int(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_positive_int(name: str, value, *, optional: bool = False) -> int | None:
    """``value`` as an int >= 1."""
    return check_int(name, value, 1, optional=optional)


def check_number(name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False,
                 optional: bool = False) -> float | None:
    """``value`` as a finite float in the interval given (open ends with ``*_open``)."""
    if value is None and optional:
        return None
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    allowed = _allowed("a finite number" + (" " + " and ".join(parts) if parts else ""), optional)
    if not _is_number(value):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    number = float(value)
    if (not math.isfinite(number)
            or (low is not None and (number <= low if low_open else number < low))
            or (high is not None and (number >= high if high_open else number > high))):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_pixel_size(name: str, value, *, optional: bool = True) -> float | None:
    """A pixel size in nm: a finite number > 0 (None allowed by default)."""
    return check_number(name, value, 0.0, low_open=True, optional=optional)


def check_choice(name: str, value, choices: Iterable, *, optional: bool = False):
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value is None and optional:
        return None
    try:
        ok = value in choices
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {_allowed(listed, optional)}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` if it is True or False (NumPy booleans accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_path(name: str, value, *, optional: bool = False, what: str = "a path"):
    """``value`` if it is a ``str`` or ``os.PathLike`` (a file or folder name)."""
    import os

    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value.strip()):
        raise TypeError(f"{name} must be {_allowed(what + ' (str or Path)', optional)}, got {value!r} "
                        f"({type(value).__name__})")
    return value


def check_devices(devices):
    """``devices`` of ``fit``: None (every GPU), a number of devices >= 1, or device names."""
    if devices is None or _is_int(devices):
        return check_int("devices", devices, 1, optional=True)
    allowed = "None, a number of devices >= 1 or a list of device names ('/gpu:0', ...)"
    if (isinstance(devices, (str, bytes)) or not isinstance(devices, Iterable)
            or not (names := list(devices)) or not all(isinstance(d, str) and d for d in names)):
        raise TypeError(f"devices must be {allowed}, got {devices!r}")
    return names


def check_mask_contents(masks, where) -> str | None:
    """Masks with no particle or no background, among ``masks`` (``(name, array)`` pairs; 0 is
    background, 1..254 are classes, 255 is unlabelled).

    Such masks are real (an empty field of view, a crop inside one particle), so a few are a
    warning; a set in which *every* mask lacks particles or lacks background teaches nothing and
    is refused.

    Returns
    -------
    str or None
        The warning to give (naming up to five files), or None when every mask has both.

    Raises
    ------
    TEMInputError
        Every mask has no particle pixel, or every mask has no background pixel (``where`` named).
    """
    from ..errors import TEMInputError

    no_particle, no_background, total = [], [], 0
    for name, mask in masks:
        total += 1
        counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
        if not counts[1:255].any():
            no_particle.append(str(name))
        if not counts[0]:
            no_background.append(str(name))
    if total and len(no_particle) == total:
        raise TEMInputError(f"every mask ({total}) is empty: no pixel is a particle (masks hold 0 = "
                            "background, 1..K = particles, or 0/255); there is nothing to learn. Are "
                            "the masks inverted or saved blank?", where)
    if total and len(no_background) == total:
        raise TEMInputError(f"every mask ({total}) is all particle: no pixel is background (0); are the "
                            "masks inverted?", where)
    parts = []
    for names, what in ((no_particle, "no particle"), (no_background, "no background")):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{len(names)} of {total} masks have {what} ({shown})")
    if not parts:
        return None
    return (f"{where}: {'; '.join(parts)}; they are used as they are (empty fields and crops inside "
            "a particle are real), but check that they are not blank or inverted")


def check_optional(check, name: str, value, *args, **kwargs):
    """``check(name, value, ...)`` unless ``value`` is None."""
    return None if value is None else check(name, value, *args, **kwargs)


#: smallest tile side accepted by predict (smaller tiles hold no particle and only margin)
MIN_TILE_SIZE = 16


def check_predict_arguments(*, tile_size=None, overlap="auto", batch_size=4, mixed_precision="float32",
                            max_pixels=None, max_memory_gb=None, pixel_size_nm=None,
                            return_probabilities=False, return_image=False, progress=False) -> None:
    """The arguments shared by ``predict``, ``predict_stack`` and ``evaluate``."""
    check_int("tile_size", tile_size, MIN_TILE_SIZE, optional=True)
    if not (isinstance(overlap, str) and overlap == "auto"):
        if not _is_int(overlap):
            raise TypeError(f"overlap must be 'auto' or an integer >= 0, got {overlap!r}")
        if overlap < 0:
            raise ValueError(f"overlap must be 'auto' or an integer >= 0, got {overlap!r}")
    check_positive_int("batch_size", batch_size)
    from ..hardware import PRECISION_ALIASES, PRECISIONS

    check_choice("mixed_precision", mixed_precision,
                 PRECISIONS + tuple(k for k in PRECISION_ALIASES if isinstance(k, str)))
    check_positive_int("max_pixels", max_pixels, optional=True)
    check_number("max_memory_gb", max_memory_gb, 0.0, low_open=True, optional=True)
    check_pixel_size("pixel_size_nm", pixel_size_nm)
    for name, value in (("return_probabilities", return_probabilities),
                        ("return_image", return_image), ("progress", progress)):
        check_bool(name, value)


def check_predict_input(x) -> None:
    """Refuse an empty array (no pixels) before anything is loaded."""
    from ..errors import TEMInputError

    if hasattr(x, "shape") and hasattr(x, "dtype") and not hasattr(x, "pixel_size_nm"):
        shape = tuple(x.shape)
        if 0 in shape:
            raise TEMInputError(f"the image array is empty: shape {shape} has no pixels; give an "
                                "image [H, W] or a stack [frames, H, W]")
        if np.dtype(x.dtype).kind not in "biuf":
            raise TEMInputError(f"the image array must hold real numbers, got dtype {x.dtype}")


# --------------------------------------------------------------------------------------------
# Model files and run folders
# --------------------------------------------------------------------------------------------

#: the first bytes of every HDF5 file (the weights inside a .keras archive)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_keras_file(path) -> None:
    """A ``.keras`` file that is empty, truncated or not a Keras archive: a clear TEMInputError.

    Keras itself answers such files with "File not found: filepath=..." or a zip error.
    """
    import zipfile
    from pathlib import Path

    from ..errors import TEMInputError

    path = Path(path)
    if not path.is_file():
        raise TEMInputError("no such model file", path)
    size = path.stat().st_size
    if size == 0:
        raise TEMInputError("is empty (0 bytes): the model was not written completely (an "
                            "interrupted fit or copy?); train or copy it again", path)
    if not zipfile.is_zipfile(path):
        raise TEMInputError(f"is truncated or damaged ({size} bytes, not a complete .keras "
                            "archive): the model was not written completely; train or copy it "
                            "again", path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [n for n in ("config.json", "model.weights.h5") if n not in names]
            if missing:
                raise TEMInputError(f"is not a complete .keras model ({', '.join(missing)} missing in "
                                    "the archive); train or copy it again", path)
            with archive.open("model.weights.h5") as weights:
                signature = weights.read(8)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise TEMInputError(f"is damaged ({error}); train or copy it again", path) from None
    if signature != _HDF5_SIGNATURE:
        raise TEMInputError("is damaged: its weights (model.weights.h5 in the archive) are not an "
                            "HDF5 file; train or copy it again", path)


def check_serving_images(images) -> np.ndarray:
    """Raw images ``[N, H, W, 1]`` for an exported SavedModel: finite and not constant."""
    from ..errors import TEMInputError

    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None, ..., None]
    elif images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != 1:
        raise TEMInputError(f"images must be [N, H, W, 1] (or [H, W]), got shape {images.shape}")
    if images.size == 0:
        raise TEMInputError(f"images are empty: shape {images.shape} has no pixels")
    for i, image in enumerate(images):
        bad = image.size - int(np.count_nonzero(np.isfinite(image)))
        if bad:
            raise TEMInputError(f"image {i}: {bad} of {image.size} pixels are NaN or infinite; "
                                "replace or crop them before segmentation")
        if float(image.max()) == float(image.min()):
            raise TEMInputError(f"image {i} is constant (every pixel {float(image.flat[0]):g}): "
                                "it cannot be normalised; is it a blank frame?")
    return images
