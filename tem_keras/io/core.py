"""The Micrograph and MicrographStack types, units, and the source every reader returns."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import TEMInputError

MISSING = object()
"""Sentinel for "not read yet" (distinct from None, a real "no pixel size")."""


# --------------------------------------------------------------------------------------------
# The Micrograph type
# --------------------------------------------------------------------------------------------

@dataclass(repr=False)
class Micrograph:
    """One 2-D micrograph with its physical pixel size.

    Parameters
    ----------
    data : array_like
        The image ``[H, W]``; stored as float32, intensities unchanged.
    pixel_size_nm : float or None
        Side of one (square) pixel in nm; None when the file has no spatial calibration.
    metadata : dict
        ``format``, ``original_dtype``, ``signal_type`` (``"image"`` or ``"diffraction"``) and
        the acquisition fields the file holds (``voltage_kv``, ``magnification``,
        ``microscope``, ``date``, ``units`` as found, ...).
    path : str or None
        The file it was read from.

    Raises
    ------
    TEMInputError
        If ``data`` is not 2-D, is empty, is complex, or holds NaN or infinite pixels.
    """

    data: np.ndarray
    pixel_size_nm: float | None = None
    metadata: dict = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self):
        data = np.asarray(self.data)
        if data.dtype.kind not in "biufc":
            raise TEMInputError(f"a micrograph holds numbers, got dtype {data.dtype}", self.path)
        if data.dtype.kind == "c":
            raise TEMInputError(_COMPLEX_PROBLEM.format(dtype=data.dtype), self.path)
        if data.ndim != 2:
            raise TEMInputError(f"a micrograph must be 2-D [H, W], got shape {data.shape}",
                                self.path)
        if data.size == 0:
            raise TEMInputError(f"the image is empty: shape {data.shape} has no pixels", self.path)
        data = data.astype(np.float32, copy=False)
        bad = data.size - int(np.count_nonzero(np.isfinite(data)))
        if bad:
            raise TEMInputError(f"{bad} of {data.size} pixels are NaN or infinite; replace or "
                                "crop them before segmentation", self.path)
        self.data = data
        if self.pixel_size_nm is not None:
            self.pixel_size_nm = float(self.pixel_size_nm)
        if self.path is not None:
            self.path = os.fspath(self.path)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return self.data.shape

    @property
    def field_of_view_nm(self) -> tuple[float, float] | None:
        """``(height, width)`` of the image in nm, or None without a pixel size."""
        if self.pixel_size_nm is None:
            return None
        return (self.shape[0] * self.pixel_size_nm, self.shape[1] * self.pixel_size_nm)

    def __repr__(self) -> str:
        size = "uncalibrated" if self.pixel_size_nm is None else f"{self.pixel_size_nm:.6g} nm/px"
        name = Path(self.path).name if self.path else None
        return (f"Micrograph({self.shape[0]}×{self.shape[1]}, {size}, "
                f"format={self.metadata.get('format')!r}, path={name!r})")


_COMPLEX_PROBLEM = ("holds complex values ({dtype}), e.g. an FFT or an exit wave, not an intensity "
                    "image; save its amplitude or phase as a real image")


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------

_NM_PER_UNIT = {"nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
                "å": 0.1, "a": 0.1, "angstrom": 0.1, "ang": 0.1,
                "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
                "pm": 1e-3, "mm": 1e6, "m": 1e9}
_UNCALIBRATED = {"", "<undefined>", "undefined", "pixel", "pixels", "px", "[]", "none", "unknown"}
_SPECTRAL_UNITS = {"ev", "kev", "mev", "1/cm", "cm-1", "cm^-1"}
_SPECTRAL_NAMES = {"energy", "energy loss", "wavelength", "wavenumber", "raman shift"}


def _normalise_unit(unit) -> str:
    unit = "" if unit is None else str(unit)
    unit = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), unit)  # ImageJ
    unit = unit.replace("\u00b5", "u").replace("\u03bc", "u").replace("\u212b", "å")
    return unit.strip().lower().replace(" ", "")


def _reciprocal_base(unit: str) -> str | None:
    """``"nm"`` for ``1/nm``, ``nm^-1`` and ``nm-1``; None for a direct unit."""
    match = re.fullmatch(r"1/(.+)|(.+?)(?:\^-1|-1)", unit)
    return None if match is None else (match.group(1) or match.group(2))


def axis_calibration(scale, unit) -> tuple[float | None, bool]:
    """Pixel size in nm of an axis ``(scale, unit)`` and whether the unit is reciprocal.

    Unknown units, missing units and reciprocal units give None.
    """
    norm = _normalise_unit(unit)
    base = _reciprocal_base(norm)
    if base is not None:
        return None, base in _NM_PER_UNIT
    if norm in _UNCALIBRATED or norm not in _NM_PER_UNIT or scale is None:
        return None, False
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        return None, False
    return scale * _NM_PER_UNIT[norm], False


def is_spectral_axis(axis: dict) -> bool:
    """True when an axis dict (RosettaSciIO) is an energy or wavelength axis, by name or unit."""
    name = str(axis.get("name") or "").strip().lower()
    return name in _SPECTRAL_NAMES or _normalise_unit(axis.get("units")) in _SPECTRAL_UNITS


# --------------------------------------------------------------------------------------------
# Sources: what every format helper returns
# --------------------------------------------------------------------------------------------

@dataclass
class FrameSource:
    """An opened file: how many frames, how to read frame ``i``, calibration and metadata.

    What every ``open_*`` helper of the format modules returns to :mod:`.readers`.
    """

    n_frames: int
    frame_shape: tuple[int, int]
    read_frame: Callable[[int], np.ndarray]
    pixel_size_nm: float | None
    metadata: dict
    lazy: bool = True


def unreadable_error(path, fmt: str, error: BaseException) -> TEMInputError:
    """The :class:`TEMInputError` for a file that ``fmt``'s library failed on, naming the cause."""
    kind = type(error).__name__
    if type(error).__module__ not in ("builtins", "__main__"):
        kind = f"{type(error).__module__.split('.')[0]}.{kind}"
    reason = " ".join(str(error).split()) or "no details"
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return TEMInputError(f"could not be read as {fmt} ({kind}: {reason})", path)


def _structured_to_grey(data: np.ndarray) -> np.ndarray:
    """RGB(A) record arrays (DigitalMicrograph, TIFF) to luminance; alpha is dropped."""
    names = [n for n in ("R", "G", "B") if n in data.dtype.names]
    if len(names) != 3:
        raise ValueError(f"unsupported record dtype {data.dtype}")
    return luminance(np.stack([data[n] for n in names], axis=-1))


_LUMINANCE = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as skimage.color.rgb2gray


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB to one channel with BT.709 weights, in the original intensity range."""
    return (np.asarray(rgb, dtype=np.float64) @ _LUMINANCE).astype(np.float32)


def array_source(path, fmt: str, array, pixel_size_nm, metadata: dict, *,
                  lazy: bool = True) -> FrameSource:
    """A source over an array-like ``[..., H, W]`` (numpy, memmap, dask, h5py dataset)."""
    shape = tuple(int(s) for s in array.shape)
    if array.dtype.kind == "c":
        raise TEMInputError(_COMPLEX_PROBLEM.format(dtype=array.dtype), path)
    if array.dtype.kind not in "biuf" and not array.dtype.names:
        raise TEMInputError(f"holds {array.dtype} values, not pixel intensities (numbers)", path)
    if len(shape) < 2:
        raise TEMInputError(f"this is a spectrum, not an image (1-D signal of {shape[0]} "
                            "channels)", path)
    lead = shape[:-2]
    n_frames = int(np.prod(lead)) if lead else 1

    def read_frame(i):
        index = np.unravel_index(i, lead) if lead else ()
        try:
            frame = np.asarray(array[index])
            if frame.dtype.names:
                return _structured_to_grey(frame)
        except Exception as error:  # truncated data only shows when the pixels are read
            raise unreadable_error(path, fmt, error) from error
        return luminance(frame[..., :3]) if frame.ndim == 3 else frame

    metadata.setdefault("original_dtype",
                        f"RGB(A) {array.dtype[0]}" if array.dtype.names else str(array.dtype))
    if lead:
        metadata.setdefault("stack_shape", lead)
    return FrameSource(n_frames, shape[-2:], read_frame, pixel_size_nm, metadata, lazy)


def square_pixel_size(path, y_nm, x_nm, metadata: dict) -> float | None:
    """The pixel size if y and x agree (0.1 %); otherwise None, both sizes in metadata."""
    if y_nm is None or x_nm is None:
        return None
    if abs(y_nm - x_nm) <= 1e-3 * max(y_nm, x_nm):
        return x_nm
    metadata["pixel_size_yx_nm"] = (y_nm, x_nm)
    metadata["note"] = "pixels are not square: pixel_size_nm is None"
    return None


# --------------------------------------------------------------------------------------------
# The lazy stack
# --------------------------------------------------------------------------------------------

class MicrographStack(Sequence):
    """A lazy sequence of :class:`Micrograph`: frames are read from disk when indexed.

    Made by :func:`read_stack`. Supports ``len``, indexing, slicing (another lazy stack) and
    iteration (one frame in memory at a time); :meth:`to_numpy` reads them all.

    Attributes
    ----------
    path : str or None
        The file, or the folder of the files.
    lazy : bool
        True when each frame is read from the file when indexed (memory map, dask or one TIFF
        page); False when the file had to be decoded whole (PNG, JPEG, BMP).
    """

    def __init__(self, get: Callable[[int], Micrograph], indices, *, path=None,
                 pixel_size_nm=MISSING, frame_shape=None, lazy: bool = True):
        self._get = get
        self._indices = range(indices) if isinstance(indices, int) else indices
        self.path = None if path is None else os.fspath(path)
        self._pixel_size_nm = pixel_size_nm
        self._frame_shape = frame_shape
        self.lazy = lazy

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return MicrographStack(self._get, self._indices[index], path=self.path,
                                   pixel_size_nm=self._pixel_size_nm,
                                   frame_shape=self._frame_shape, lazy=self.lazy)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"a frame index must be a whole number or a slice, got {index!r} "
                            f"({type(index).__name__})")
        try:
            return self._get(self._indices[index])
        except IndexError:
            raise IndexError(f"frame {index} out of range for a stack of {len(self)}") from None

    @property
    def pixel_size_nm(self) -> float | None:
        """Pixel size in nm (of the first frame for a folder or list of files)."""
        if self._pixel_size_nm is MISSING:
            self._pixel_size_nm = self[0].pixel_size_nm if len(self) else None
        return self._pixel_size_nm

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, H, W)``; ``H, W`` of the first frame for a folder or list of files."""
        if self._frame_shape is None:
            self._frame_shape = self[0].shape if len(self) else (0, 0)
        return (len(self), *self._frame_shape)

    def to_numpy(self) -> np.ndarray:
        """All frames as one float32 array ``[N, H, W]`` (reads everything)."""
        return np.stack([m.data for m in self]) if len(self) else np.zeros((0, 0, 0), np.float32)

    def __repr__(self) -> str:
        n, h, w = self.shape
        size = "uncalibrated" if self.pixel_size_nm is None else f"{self.pixel_size_nm:.6g} nm/px"
        name = Path(self.path).name if self.path else None
        return f"MicrographStack({n} frames of {h}×{w}, {size}, path={name!r})"
