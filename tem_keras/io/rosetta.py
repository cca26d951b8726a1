"""RosettaSciIO family: DigitalMicrograph ``.dm3``/``.dm4``, FEI TIA ``.ser``/``.emi``, ``.emd``."""

from __future__ import annotations

import warnings
from importlib import import_module
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from .core import (MISSING, FrameSource, axis_calibration, array_source, is_spectral_axis,
                   square_pixel_size, unreadable_error)

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


def _lookup(tree, dotted: str):
    """``tree["a"]["b c"]`` for ``"a.b_c"`` (hyperspy writes spaces in keys as underscores)."""
    node = tree
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return MISSING
        if key not in node:
            key = next((k for k in node if str(k).replace(" ", "_") == key), MISSING)
            if key is MISSING:
                return MISSING
        node = node[key]
    return node


def acquisition_fields(signal: dict) -> dict:
    """Selected hyperspy metadata of a RosettaSciIO signal, with the reader's mapping applied."""
    values = {}
    for source, (target, function) in (signal.get("mapping") or {}).items():
        value = _lookup(signal.get("original_metadata", {}), source)
        if value is MISSING or target not in _HYPERSPY_FIELDS:
            continue
        try:
            values[target] = function(value) if function is not None else value
        except Exception:  # a mapping that does not apply to this file
            continue
    out = {}
    for target, key in _HYPERSPY_FIELDS.items():
        value = values.get(target, _lookup(signal.get("metadata", {}), target))
        empty = value is MISSING or value is None or (isinstance(value, str)
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
    if any(is_spectral_axis(a) for a in axes) or len(signal_axes) == 1:
        return "spectrum_image"
    reciprocal = [axis_calibration(a.get("scale"), a.get("units"))[1] for a in axes[-2:]]
    kind = str(_lookup(signal.get("metadata", {}), "Signal.signal_type") or "").lower()
    return "diffraction" if all(reciprocal) or "diffraction" in kind else "image"


def _describe(signal: dict, kind: str) -> str:
    title = _lookup(signal.get("metadata", {}), "General.title")
    title = "untitled" if title in (MISSING, None, "") else title
    return f"{title!s} ({kind}, shape {tuple(int(s) for s in signal['data'].shape)})"


def _spectrum_problem(description: str, kind: str) -> str:
    what = "a spectrum" if kind == "spectrum" else "a spectrum image (one spectrum per pixel)"
    return f"this is {what}, not an image: {description}"


def read_signals(path: Path, fmt: str, module: str, **reader_options) -> list[dict]:
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
        raise unreadable_error(path, fmt, error) from error
    if not signals:
        raise TEMInputError(f"no data found in this {fmt} file", path)
    return signals


def _signals_source(path: Path, fmt: str, signals: list[dict], pixels=None) -> FrameSource:
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
    (y_nm, _), (x_nm, _) = (axis_calibration(a.get("scale"), a.get("units")) for a in axes[-2:])
    metadata = {"format": fmt, "signal_type": kinds[chosen],
                "units": axes[-1].get("units"), "scale": float(axes[-1].get("scale", 1.0))}
    metadata.update(acquisition_fields(signal))
    pixel_size_nm = square_pixel_size(path, y_nm, x_nm, metadata)
    if len(axes) > 2:
        metadata["frame_axes"] = [{"name": a.get("name"), "scale": float(a.get("scale", 1.0)),
                                   "units": a.get("units")} for a in axes[:-2]]
    others = [_describe(s, k) for i, (s, k) in enumerate(zip(signals, kinds)) if i != chosen]
    if others:
        metadata["other_signals"] = others
    data = signal["data"] if pixels is None else pixels(chosen, signal)
    return array_source(path, fmt, data, pixel_size_nm, metadata)


def open_rosettasciio(path: Path, fmt: str, *, module: str, **reader_options) -> FrameSource:
    """DigitalMicrograph, TIA and EMD files through RosettaSciIO (lazy dask arrays)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # readers warn about tags they do not know
        return _signals_source(path, fmt, read_signals(path, fmt, module, **reader_options))


def open_emd(path: Path, fmt: str) -> FrameSource:
    """Velox or NCEM ``.emd``; Velox spectrum images need ``sparse``, else only images are read."""
    try:
        return open_rosettasciio(path, fmt, module="emd")
    except TEMInputError as error:
        if "ModuleNotFoundError" not in error.problem:
            raise
        source = open_rosettasciio(path, fmt, module="emd", select_type="image")
        source.metadata["note"] = "spectrum images skipped (the 'sparse' package is missing)"
        return source
