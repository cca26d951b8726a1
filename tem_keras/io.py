"""Reading and writing micrographs, masks and probability maps, with their pixel size in nm.

Readers return a :class:`Micrograph` (float32 ``[H, W]`` data, pixel size in nm, metadata) or a
lazy :class:`MicrographStack`. Supported files: DigitalMicrograph ``.dm3``/``.dm4``, FEI TIA
``.ser``/``.emi``, Velox and NCEM ``.emd`` (all through RosettaSciIO), ``.mrc``, ``.tif``/``.tiff``,
``.png``/``.jpg``/``.jpeg``/``.bmp``, ``.npy`` and ``.h5``/``.hdf5``. Intensities are never
rescaled. Libraries are imported when a file needs them, so importing this module does not start
TensorFlow.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import TEMInputError

__all__ = ["Micrograph", "MicrographStack", "read_image", "read_stack",
           "write_image", "write_mask", "write_probabilities"]


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
        If ``data`` is not 2-D, is complex, or holds NaN or infinite pixels.
    """

    data: np.ndarray
    pixel_size_nm: float | None = None
    metadata: dict = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self):
        data = np.asarray(self.data)
        if data.dtype.kind == "c":
            raise TEMInputError(_COMPLEX_PROBLEM.format(dtype=data.dtype), self.path)
        if data.ndim != 2:
            raise TEMInputError(f"a micrograph must be 2-D [H, W], got shape {data.shape}",
                                self.path)
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


def _calibration(scale, unit) -> tuple[float | None, bool]:
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


def _is_spectral_axis(axis: dict) -> bool:
    name = str(axis.get("name") or "").strip().lower()
    return name in _SPECTRAL_NAMES or _normalise_unit(axis.get("units")) in _SPECTRAL_UNITS


# --------------------------------------------------------------------------------------------
# Sources: what every format helper returns
# --------------------------------------------------------------------------------------------

@dataclass
class _Source:
    """An opened file: how many frames, how to read frame ``i``, calibration and metadata."""

    n_frames: int
    frame_shape: tuple[int, int]
    read_frame: Callable[[int], np.ndarray]
    pixel_size_nm: float | None
    metadata: dict
    lazy: bool = True


def _unreadable(path, fmt: str, error: BaseException) -> TEMInputError:
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
    return _luminance(np.stack([data[n] for n in names], axis=-1))


_LUMINANCE = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as skimage.color.rgb2gray


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB to one channel with BT.709 weights, in the original intensity range."""
    return (np.asarray(rgb, dtype=np.float64) @ _LUMINANCE).astype(np.float32)


def _frame_source(path, fmt: str, array, pixel_size_nm, metadata: dict, *,
                  lazy: bool = True) -> _Source:
    """A source over an array-like ``[..., H, W]`` (numpy, memmap, dask, h5py dataset)."""
    shape = tuple(int(s) for s in array.shape)
    if array.dtype.kind == "c":
        raise TEMInputError(_COMPLEX_PROBLEM.format(dtype=array.dtype), path)
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
            raise _unreadable(path, fmt, error) from error
        return _luminance(frame[..., :3]) if frame.ndim == 3 else frame

    metadata.setdefault("original_dtype",
                        f"RGB(A) {array.dtype[0]}" if array.dtype.names else str(array.dtype))
    if lead:
        metadata.setdefault("stack_shape", lead)
    return _Source(n_frames, shape[-2:], read_frame, pixel_size_nm, metadata, lazy)


# --------------------------------------------------------------------------------------------
# RosettaSciIO family: .dm3 .dm4 .ser .emi .emd .tif
# --------------------------------------------------------------------------------------------

# hyperspy metadata path -> our key
_HYPERSPY_FIELDS = {"General.title": "title", "General.date": "date", "General.time": "time",
                    "General.authors": "authors", "Signal.quantity": "intensity_units"}
for _instrument in ("TEM", "SEM"):
    _HYPERSPY_FIELDS.update({
        f"Acquisition_instrument.{_instrument}.beam_energy": "voltage_kv",
        f"Acquisition_instrument.{_instrument}.magnification": "magnification",
        f"Acquisition_instrument.{_instrument}.camera_length": "camera_length",
        f"Acquisition_instrument.{_instrument}.microscope": "microscope",
        f"Acquisition_instrument.{_instrument}.acquisition_mode": "acquisition_mode",
        f"Acquisition_instrument.{_instrument}.dwell_time": "dwell_time_s",
        f"Acquisition_instrument.{_instrument}.Camera.exposure": "exposure_s",
        f"Acquisition_instrument.{_instrument}.Detector.Camera.exposure": "exposure_s",
    })
_MISSING = object()


def _lookup(tree, dotted: str):
    """``tree["a"]["b c"]`` for ``"a.b_c"`` (hyperspy writes spaces in keys as underscores)."""
    node = tree
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return _MISSING
        if key not in node:
            key = next((k for k in node if str(k).replace(" ", "_") == key), _MISSING)
            if key is _MISSING:
                return _MISSING
        node = node[key]
    return node


def _acquisition_fields(signal: dict) -> dict:
    """Selected hyperspy metadata of a RosettaSciIO signal, with the reader's mapping applied."""
    values = {}
    for source, (target, function) in (signal.get("mapping") or {}).items():
        value = _lookup(signal.get("original_metadata", {}), source)
        if value is _MISSING or target not in _HYPERSPY_FIELDS:
            continue
        try:
            values[target] = function(value) if function is not None else value
        except Exception:  # a mapping that does not apply to this file
            continue
    out = {}
    for target, key in _HYPERSPY_FIELDS.items():
        value = values.get(target, _lookup(signal.get("metadata", {}), target))
        empty = value is _MISSING or value is None or (isinstance(value, str)
                                                      and value in ("", "__unnamed__"))
        if not empty and key not in out:
            out[key] = _plain(value, numeric=key not in _TEXT_FIELDS)
    return out


_TEXT_FIELDS = {"title", "date", "time", "authors", "microscope", "acquisition_mode",
                "intensity_units"}


def _plain(value, numeric: bool):
    """NumPy scalars as Python ones; numbers stored as text (TIA) as floats."""
    if isinstance(value, np.generic):
        value = value.item()
    if numeric and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _classify(signal: dict) -> str:
    """``"image"``, ``"diffraction"``, ``"spectrum"`` or ``"spectrum_image"``."""
    axes = signal["axes"]
    ndim = len(signal["data"].shape)
    signal_axes = [a for a in axes if not a.get("navigate", False)]
    if ndim == 1:
        return "spectrum"
    if any(_is_spectral_axis(a) for a in axes) or len(signal_axes) == 1:
        return "spectrum_image"
    reciprocal = [_calibration(a.get("scale"), a.get("units"))[1] for a in axes[-2:]]
    kind = str(_lookup(signal.get("metadata", {}), "Signal.signal_type") or "").lower()
    return "diffraction" if all(reciprocal) or "diffraction" in kind else "image"


def _describe(signal: dict, kind: str) -> str:
    title = _lookup(signal.get("metadata", {}), "General.title")
    title = "untitled" if title in (_MISSING, None, "") else title
    return f"{title!s} ({kind}, shape {tuple(int(s) for s in signal['data'].shape)})"


def _spectrum_problem(description: str, kind: str) -> str:
    what = "a spectrum" if kind == "spectrum" else "a spectrum image (one spectrum per pixel)"
    return f"this is {what}, not an image: {description}"


def _read_signals(path: Path, fmt: str, module: str, **reader_options) -> list[dict]:
    """``rsciio.<module>.file_reader(path)``, lazily where the reader can."""
    reader = import_module(f"rsciio.{module}").file_reader
    try:
        try:
            signals = reader(str(path), lazy=True, **reader_options)
        except ValueError as error:  # RGB(A) DigitalMicrograph images cannot be lazy
            if "lazy" not in str(error).lower():
                raise
            signals = reader(str(path), lazy=False, **reader_options)
    except Exception as error:
        raise _unreadable(path, fmt, error) from error
    if not signals:
        raise TEMInputError(f"no data found in this {fmt} file", path)
    return signals


def _signals_source(path: Path, fmt: str, signals: list[dict], pixels=None) -> _Source:
    """A source over the first image signal; the others are listed in metadata.

    ``pixels(index, signal)``, if given, replaces ``signal["data"]`` as the frame reader.
    """
    kinds = [_classify(s) for s in signals]
    images = [i for i, kind in enumerate(kinds) if kind in ("image", "diffraction")]
    if not images:
        descriptions = [_describe(s, k) for s, k in zip(signals, kinds)]
        if len(signals) == 1:
            raise TEMInputError(_spectrum_problem(descriptions[0], kinds[0]), path)
        raise TEMInputError("holds no image, only spectra: " + "; ".join(descriptions), path)
    chosen = images[0]
    signal, axes = signals[chosen], signals[chosen]["axes"]
    (y_nm, _), (x_nm, _) = (_calibration(a.get("scale"), a.get("units")) for a in axes[-2:])
    metadata = {"format": fmt, "signal_type": kinds[chosen],
                "units": axes[-1].get("units"), "scale": float(axes[-1].get("scale", 1.0))}
    metadata.update(_acquisition_fields(signal))
    pixel_size_nm = _square_pixel(path, y_nm, x_nm, metadata)
    if len(axes) > 2:
        metadata["frame_axes"] = [{"name": a.get("name"), "scale": float(a.get("scale", 1.0)),
                                   "units": a.get("units")} for a in axes[:-2]]
    others = [_describe(s, k) for i, (s, k) in enumerate(zip(signals, kinds)) if i != chosen]
    if others:
        metadata["other_signals"] = others
    data = signal["data"] if pixels is None else pixels(chosen, signal)
    return _frame_source(path, fmt, data, pixel_size_nm, metadata)


def _open_rosettasciio(path: Path, fmt: str, *, module: str, **reader_options) -> _Source:
    """DigitalMicrograph, TIA and EMD files through RosettaSciIO (lazy dask arrays)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # readers warn about tags they do not know
        return _signals_source(path, fmt, _read_signals(path, fmt, module, **reader_options))


def _square_pixel(path, y_nm, x_nm, metadata: dict) -> float | None:
    """The pixel size if y and x agree (0.1 %); otherwise None, both sizes in metadata."""
    if y_nm is None or x_nm is None:
        return None
    if abs(y_nm - x_nm) <= 1e-3 * max(y_nm, x_nm):
        return x_nm
    metadata["pixel_size_yx_nm"] = (y_nm, x_nm)
    metadata["note"] = "pixels are not square: pixel_size_nm is None"
    return None


def _open_emd(path: Path, fmt: str) -> _Source:
    """Velox or NCEM ``.emd``; Velox spectrum images need ``sparse``, else only images are read."""
    try:
        return _open_rosettasciio(path, fmt, module="emd")
    except TEMInputError as error:
        if "ModuleNotFoundError" not in error.problem:
            raise
        source = _open_rosettasciio(path, fmt, module="emd", select_type="image")
        source.metadata["note"] = "spectrum images skipped (the 'sparse' package is missing)"
        return source


class _TiffFrames:
    """Frames of one TIFF series, read page by page (the file is opened for each read)."""

    def __init__(self, path: Path, series: int, shape, dtype):
        self.path, self.series, self.shape, self.dtype = path, series, tuple(shape), dtype

    def __getitem__(self, index):
        import tifffile

        lead = self.shape[:-2]
        i = int(np.ravel_multi_index(index, lead)) if lead else 0
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[self.series]
            if len(series.pages) == max(1, int(np.prod(lead))):
                return series.asarray(key=i)
            return series.asarray().reshape(-1, *series.shape[-3 if self.dtype.names else -2:])[i]


def _open_tiff(path: Path, fmt: str) -> _Source:
    """TIFF: calibrations through RosettaSciIO (DigitalMicrograph, ImageJ, FEI, Zeiss, ...),
    pixels with tifffile one page at a time.

    RosettaSciIO names only the ImageJ unit ``micron``; other ImageJ units (``nm``, ``Å``)
    are taken from the ImageJ description here. Resolution tags alone (dpi) are ignored.
    """
    import tifffile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # readers warn about tags they do not know
        signals = _read_signals(path, fmt, "tiff")
        with tifffile.TiffFile(path) as tif:
            unit = (tif.imagej_metadata or {}).get("unit")
        for signal in signals:
            for axis in signal["axes"][-2:]:
                if unit and axis.get("units") is None:
                    axis["units"] = unit
        try:
            return _signals_source(path, fmt, signals, pixels=lambda i, s: _TiffFrames(
                path, i, s["data"].shape, s["data"].dtype))
        finally:
            _close_tiff_handles(signals)


def _close_tiff_handles(signals: list[dict]) -> None:
    """Close the TiffFile that RosettaSciIO's lazy reader keeps inside its dask graph (its
    pixels are read with :class:`_TiffFrames` instead), rather than leave it to the garbage
    collector."""
    import gc

    import tifffile

    seen, frontier = set(), [s["data"] for s in signals]
    for _ in range(12):
        following = []
        for item in frontier:
            if id(item) in seen or isinstance(item, (str, bytes, int, float, type)):
                continue
            seen.add(id(item))
            if isinstance(item, (tifffile.TiffFile, tifffile.TiffPageSeries)):
                getattr(item, "parent", item).close()
            else:
                following.extend(gc.get_referents(item))
        frontier = following


# --------------------------------------------------------------------------------------------
# Other formats
# --------------------------------------------------------------------------------------------

class _Reopened:
    """Array-like over data in a file that is opened again for every read (memory-mapped or
    chunked there), so a stack holds no open file."""

    def __init__(self, opener, get, shape, dtype):
        self._opener, self._get, self.shape, self.dtype = opener, get, tuple(shape), dtype

    def __getitem__(self, index):
        with self._opener() as handle:
            return np.array(self._get(handle)[index])


def _looks_channels_last(shape) -> bool:
    """``[H, W, C]`` with C colour channels or spectrum channels, not ``[N, H, W]``."""
    return len(shape) == 3 and (shape[-1] <= 4 < shape[0] or shape[0] == shape[1] != shape[2])


def _refuse_channels_last(path, shape):
    if _looks_channels_last(shape):
        raise TEMInputError(
            f"3-D data of shape {tuple(shape)} looks like [H, W, channels] (RGB or a spectrum "
            "per pixel), not a stack of frames [N, H, W]; save one image per frame", path)


def _open_mrc(path: Path, fmt: str) -> _Source:
    """MRC image or stack; the voxel size (Å) gives the pixel size."""
    import mrcfile

    open_mrc = partial(mrcfile.mmap, path, mode="r")
    try:
        with open_mrc() as mrc:
            shape, dtype = mrc.data.shape, mrc.data.dtype
            voxel = mrc.voxel_size
            labels = [bytes(x).decode("ascii", "replace").strip("\x00 ")
                      for x in mrc.header.label[: int(mrc.header.nlabl)]]
    except Exception as error:
        raise _unreadable(path, fmt, error) from error
    y_nm, _ = _calibration(voxel.y, "Å")
    x_nm, _ = _calibration(voxel.x, "Å")
    metadata = {"format": fmt, "signal_type": "image", "original_dtype": str(dtype),
                "units": "Å" if x_nm else None, "scale": float(voxel.x)}
    if labels:
        metadata["labels"] = labels
    pixel_size_nm = _square_pixel(path, y_nm, x_nm, metadata)
    frames = _Reopened(open_mrc, lambda mrc: mrc.data, shape, dtype)
    return _frame_source(path, fmt, frames, pixel_size_nm, metadata)


def _open_npy(path: Path, fmt: str) -> _Source:
    """NumPy ``.npy`` ``[H, W]`` or ``[N, H, W]``, memory-mapped."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:
        raise _unreadable(path, fmt, error) from error
    _refuse_channels_last(path, array.shape)
    metadata = {"format": fmt, "signal_type": "image", "units": None}
    return _frame_source(path, fmt, array, None, metadata)


def _first_dataset(h5file, name: str | None):
    import h5py

    if name is not None:
        if name not in h5file or not isinstance(h5file[name], h5py.Dataset):
            raise KeyError(f"no dataset {name!r}")
        return h5file[name]
    found = []

    def visit(key, item):
        if isinstance(item, h5py.Dataset) and item.ndim in (2, 3) and item.dtype.kind in "biufc":
            found.append(item)
            return True
        return None

    h5file.visititems(visit)
    if not found:
        raise KeyError("no 2-D or 3-D numeric dataset")
    return found[0]


def _attribute_calibration(dataset) -> tuple[float | None, object]:
    """``(scale, unit)`` from a ``pixel_size_nm`` attribute, or ``pixel_size`` with a
    ``pixel_size_units``/``units``/``unit`` attribute, on the dataset or a parent group."""
    node = dataset
    while True:
        attrs = node.attrs
        if "pixel_size_nm" in attrs:
            return float(np.ravel(attrs["pixel_size_nm"])[0]), "nm"
        if "pixel_size" in attrs:
            unit = next((attrs[k] for k in ("pixel_size_units", "units", "unit") if k in attrs),
                        None)
            unit = unit.decode() if isinstance(unit, bytes) else unit
            return float(np.ravel(attrs["pixel_size"])[0]), unit
        if node.name == "/":
            return None, None
        node = node.parent


def _open_hdf5(path: Path, fmt: str, *, dataset: str | None = None) -> _Source:
    """First 2-D/3-D dataset of an HDF5 file (or ``dataset``); pixel size from attributes."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            item = _first_dataset(h5, dataset)
            name, shape, dtype = item.name, item.shape, item.dtype
            scale, unit = _attribute_calibration(item)
    except Exception as error:
        raise _unreadable(path, fmt, error) from error
    _refuse_channels_last(path, shape)
    pixel_size_nm, reciprocal = _calibration(scale, unit)
    metadata = {"format": fmt, "signal_type": "diffraction" if reciprocal else "image",
                "dataset": name, "units": unit, "scale": scale}
    frames = _Reopened(partial(h5py.File, path, "r"), lambda h5: h5[name], shape, dtype)
    return _frame_source(path, fmt, frames, pixel_size_nm, metadata)


def _open_bitmap(path: Path, fmt: str) -> _Source:
    """PNG/JPEG/BMP; RGB(A) becomes luminance, alpha is dropped; no pixel size."""
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as error:
        raise _unreadable(path, fmt, error) from error
    metadata = {"format": fmt, "signal_type": "image", "original_dtype": str(array.dtype),
                "units": None}
    if array.ndim == 3:
        channels = array.shape[-1]
        metadata["channels"] = {2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, str(channels))
        array = array[..., 0] if channels == 2 else _luminance(array[..., :3])
    return _frame_source(path, fmt, array, None, metadata, lazy=False)


# extension -> (format name, opener(path, format, **options))
_FORMATS = {
    ".dm3": ("DigitalMicrograph", partial(_open_rosettasciio, module="digitalmicrograph")),
    ".dm4": ("DigitalMicrograph", partial(_open_rosettasciio, module="digitalmicrograph")),
    ".ser": ("TIA", partial(_open_rosettasciio, module="tia")),
    ".emi": ("TIA", partial(_open_rosettasciio, module="tia")),
    ".emd": ("EMD", _open_emd),
    ".mrc": ("MRC", _open_mrc),
    ".tif": ("TIFF", _open_tiff),
    ".tiff": ("TIFF", _open_tiff),
    ".png": ("PNG", _open_bitmap),
    ".jpg": ("JPEG", _open_bitmap),
    ".jpeg": ("JPEG", _open_bitmap),
    ".bmp": ("BMP", _open_bitmap),
    ".npy": ("NumPy", _open_npy),
    ".h5": ("HDF5", _open_hdf5),
    ".hdf5": ("HDF5", _open_hdf5),
}
SUPPORTED_EXTENSIONS = tuple(sorted(_FORMATS))


def _open(path, **options) -> _Source:
    path = Path(path)
    if not path.exists():
        raise TEMInputError("no such file", path)
    if path.is_dir():
        raise TEMInputError("is a folder, not an image file; use read_stack(folder) to read the "
                            "images in it", path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise TEMInputError(f"unsupported file type {suffix or '(no extension)'!r}; supported: "
                            + ", ".join(SUPPORTED_EXTENSIONS), path)
    fmt, opener = _FORMATS[suffix]
    if options and opener is not _open_hdf5:
        raise TEMInputError(f"options {sorted(options)} only apply to HDF5 files", path)
    return opener(path, fmt, **options)


def _micrograph(source: _Source, index: int, path) -> Micrograph:
    n = source.n_frames
    if not -n <= index < n:
        raise TEMInputError(f"frame {index} does not exist: the file has {n} frame(s)", path)
    index %= n
    metadata = dict(source.metadata)
    if n > 1:
        metadata.update(frame=index, n_frames=n)
    return Micrograph(source.read_frame(index), source.pixel_size_nm, metadata, os.fspath(path))


# --------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------

def read_image(path, *, frame: int = 0, dataset: str | None = None) -> Micrograph:
    """Read one micrograph with its pixel size in nm.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.dm3 .dm4 .ser .emi .emd .mrc .tif .tiff .png .jpg .jpeg .bmp .npy .h5 .hdf5`` file.
    frame : int, default 0
        Frame to read from a stack (negative counts from the end); ``metadata["n_frames"]``
        tells how many there are.
    dataset : str, optional
        HDF5 only: the dataset to read (default: the first 2-D or 3-D dataset).

    Returns
    -------
    Micrograph
        float32 ``[H, W]`` data, intensities as stored.

    Raises
    ------
    TEMInputError
        Missing, unsupported, unreadable or corrupt file; a spectrum or spectrum image; complex,
        NaN or infinite pixels. The message starts with the path.

    Examples
    --------
    >>> m = read_image("particles.dm4")            # doctest: +SKIP
    >>> m.pixel_size_nm, m.shape                    # doctest: +SKIP
    (0.0127, (1024, 1024))
    """
    options = {} if dataset is None else {"dataset": dataset}
    return _micrograph(_open(path, **options), frame, path)


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
                 pixel_size_nm=_MISSING, frame_shape=None, lazy: bool = True):
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
        try:
            return self._get(self._indices[index])
        except IndexError:
            raise IndexError(f"frame {index} out of range for a stack of {len(self)}") from None

    @property
    def pixel_size_nm(self) -> float | None:
        """Pixel size in nm (of the first frame for a folder or list of files)."""
        if self._pixel_size_nm is _MISSING:
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


def natural_key(path: Path):
    """Sort key of a file name with its numbers compared as numbers (``img2`` before ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> list[Path]:
    """Readable images in a folder, natural order; an ``.emi`` beside its ``.ser`` is skipped."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _FORMATS]
    sers = {p.stem.lower() for p in files if p.suffix.lower() == ".ser"}
    files = [p for p in files if not (p.suffix.lower() == ".emi"
                                      and any(s.startswith(p.stem.lower() + "_") for s in sers))]
    return sorted(files, key=natural_key)


_natural_key, _image_files = natural_key, image_files  # the former private names


def _single_frame(path: Path) -> Micrograph:
    source = _open(path)
    if source.n_frames > 1:
        raise TEMInputError(f"is a stack of {source.n_frames} frames inside a sequence of files; "
                            "read it on its own with read_stack(path)", path)
    return _micrograph(source, 0, path)


def read_stack(source, *, dataset: str | None = None) -> MicrographStack:
    """Read a stack of micrographs lazily.

    Parameters
    ----------
    source : str, os.PathLike or sequence of them
        A 3-D file (dm3/dm4 stack, multi-frame ``.ser``, ``.emd``, multi-page TIFF, ``.mrc``,
        ``.npy``, ``.h5``), a folder of images (read in natural order: ``img2`` before
        ``img10``), a glob pattern such as ``"frames/*.tif"``, or a list of image paths.
        In a folder, list or pattern each file is one frame.
    dataset : str, optional
        HDF5 only: the dataset to read.

    Returns
    -------
    MicrographStack
        Frames are read when indexed (memory-mapped or lazily where the format allows).

    Raises
    ------
    TEMInputError
        As :func:`read_image`; also for a folder or pattern with no readable images.
    """
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        if not paths:
            raise TEMInputError("read_stack got an empty list of files")
        return MicrographStack(lambda i: _single_frame(paths[i]), len(paths), path=paths[0].parent)
    path = Path(source)
    if not path.exists() and any(c in str(source) for c in "*?["):
        paths = sorted((Path(p) for p in glob.glob(str(source))), key=_natural_key)
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise TEMInputError("no files match this pattern", source)
        return read_stack(paths)
    if path.is_dir():
        paths = _image_files(path)
        if not paths:
            raise TEMInputError("no readable images in this folder (supported: "
                                + ", ".join(SUPPORTED_EXTENSIONS) + ")", path)
        return MicrographStack(lambda i: _single_frame(paths[i]), len(paths), path=path)
    opened = _open(path, **({} if dataset is None else {"dataset": dataset}))
    return MicrographStack(partial(_micrograph, opened, path=path), opened.n_frames, path=path,
                           pixel_size_nm=opened.pixel_size_nm, frame_shape=opened.frame_shape,
                           lazy=opened.lazy)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

def check_target(path, overwrite: bool) -> Path:
    """``path`` ready to be written: its folder made; FileExistsError if it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


_check_target = check_target  # the former private name


def _write_tiff(path: Path, array: np.ndarray, pixel_size_nm: float | None) -> None:
    import tifffile

    kwargs = {}
    if pixel_size_nm:
        kwargs = {"resolution": (1.0 / pixel_size_nm, 1.0 / pixel_size_nm), "metadata": {"unit": "nm"}}
    tifffile.imwrite(path, array, imagej=True, **kwargs)


def write_image(path, data, pixel_size_nm: float | None = None, *, overwrite: bool = False) -> Path:
    """Write a 2-D image as ImageJ TIFF (float32, pixel size in nm), ``.npy`` or 8-bit ``.png``.

    PNG output is rescaled to 0..255 (a display copy: it loses intensities and the pixel size).
    """
    path = _check_target(path, overwrite)
    data = np.asarray(data)
    if data.ndim != 2:
        raise TEMInputError(f"write_image expects a 2-D array, got shape {data.shape}", path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, data.astype(np.float32), pixel_size_nm)
    elif suffix == ".npy":
        np.save(path, data.astype(np.float32))
    elif suffix == ".png":
        from skimage.exposure import rescale_intensity
        from skimage.io import imsave

        imsave(path, rescale_intensity(data.astype(np.float64), out_range=(0, 255)).astype(np.uint8),
               check_contrast=False)
    else:
        raise TEMInputError(f"cannot write images as {suffix!r}; use .tif, .npy or .png", path)
    return path


def write_mask(path, mask, *, overwrite: bool = False) -> Path:
    """Write an integer label mask (0 = background, 1..K = classes) as PNG/TIFF (uint8/16) or ``.npy``."""
    path = _check_target(path, overwrite)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise TEMInputError(f"write_mask expects a 2-D array, got shape {mask.shape}", path)
    if mask.dtype.kind == "b":
        mask = mask.astype(np.uint8)
    if mask.dtype.kind not in "iu" or (mask.size and mask.min() < 0):
        raise TEMInputError(f"masks must hold non-negative integers, got dtype {mask.dtype}", path)
    mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
    suffix = path.suffix.lower()
    if suffix == ".png":
        from skimage.io import imsave

        imsave(path, mask, check_contrast=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, mask)
    elif suffix == ".npy":
        np.save(path, mask)
    else:
        raise TEMInputError(f"cannot write masks as {suffix!r}; use .png, .tif or .npy", path)
    return path


def write_probabilities(path, probabilities, pixel_size_nm: float | None = None, *,
                        overwrite: bool = False) -> Path:
    """Write a probability map ``[H, W]`` or ``[H, W, C]`` as float32 ImageJ TIFF or ``.npy``.

    Multi-class maps are stored channel-first in the TIFF (one page per class).
    """
    path = _check_target(path, overwrite)
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim not in (2, 3):
        raise TEMInputError(f"probabilities must be [H, W] or [H, W, C], got shape {p.shape}", path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, np.moveaxis(p, -1, 0) if p.ndim == 3 else p, pixel_size_nm)
    elif suffix == ".npy":
        np.save(path, p)
    else:
        raise TEMInputError(f"cannot write probabilities as {suffix!r}; use .tif or .npy", path)
    return path


