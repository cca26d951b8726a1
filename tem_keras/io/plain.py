"""MRC, NumPy ``.npy``, HDF5 and bitmap (PNG/JPEG/BMP) readers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from .core import (FrameSource, array_source, axis_calibration, luminance, square_pixel_size,
                   unreadable_error)

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


def open_mrc(path: Path, fmt: str) -> FrameSource:
    """MRC image or stack; the voxel size (Å) gives the pixel size."""
    import mrcfile

    reopen = partial(mrcfile.mmap, path, mode="r")
    try:
        with reopen() as mrc:
            shape, dtype = mrc.data.shape, mrc.data.dtype
            voxel = mrc.voxel_size
            labels = [bytes(x).decode("ascii", "replace").strip("\x00 ")
                      for x in mrc.header.label[: int(mrc.header.nlabl)]]
    except Exception as error:
        raise unreadable_error(path, fmt, error) from error
    y_nm, _ = axis_calibration(voxel.y, "Å")
    x_nm, _ = axis_calibration(voxel.x, "Å")
    metadata = {"format": fmt, "signal_type": "image", "original_dtype": str(dtype),
                "units": "Å" if x_nm else None, "scale": float(voxel.x)}
    if labels:
        metadata["labels"] = labels
    pixel_size_nm = square_pixel_size(path, y_nm, x_nm, metadata)
    frames = _Reopened(reopen, lambda mrc: mrc.data, shape, dtype)
    return array_source(path, fmt, frames, pixel_size_nm, metadata)


def _is_colour(shape) -> bool:
    """``[H, W, 3|4]``: one RGB(A) image (as imageio returns colour pictures)."""
    return len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4


def open_npy(path: Path, fmt: str) -> FrameSource:
    """NumPy ``.npy`` ``[H, W]`` or ``[N, H, W]``, memory-mapped; ``[H, W, 3|4]`` is one RGB(A)
    image (luminance, alpha dropped)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:
        raise unreadable_error(path, fmt, error) from error
    metadata = {"format": fmt, "signal_type": "image", "units": None}
    if _is_colour(array.shape) and array.dtype.kind in "biuf":
        metadata.update(channels={3: "RGB", 4: "RGBA"}[array.shape[-1]],
                        original_dtype=str(array.dtype))
        try:
            array = luminance(array[..., :3])
        except Exception as error:  # truncated data only shows when the pixels are read
            raise unreadable_error(path, fmt, error) from error
        return array_source(path, fmt, array, None, metadata, lazy=False)
    _refuse_channels_last(path, array.shape)
    return array_source(path, fmt, array, None, metadata)


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


def open_hdf5(path: Path, fmt: str, *, dataset: str | None = None) -> FrameSource:
    """First 2-D/3-D dataset of an HDF5 file (or ``dataset``); pixel size from attributes."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            item = _first_dataset(h5, dataset)
            name, shape, dtype = item.name, item.shape, item.dtype
            scale, unit = _attribute_calibration(item)
    except Exception as error:
        raise unreadable_error(path, fmt, error) from error
    _refuse_channels_last(path, shape)
    pixel_size_nm, reciprocal = axis_calibration(scale, unit)
    metadata = {"format": fmt, "signal_type": "diffraction" if reciprocal else "image",
                "dataset": name, "units": unit, "scale": scale}
    frames = _Reopened(partial(h5py.File, path, "r"), lambda h5: h5[name], shape, dtype)
    return array_source(path, fmt, frames, pixel_size_nm, metadata)


def open_bitmap(path: Path, fmt: str) -> FrameSource:
    """PNG/JPEG/BMP; RGB(A) becomes luminance, alpha is dropped; no pixel size."""
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as error:
        raise unreadable_error(path, fmt, error) from error
    metadata = {"format": fmt, "signal_type": "image", "original_dtype": str(array.dtype),
                "units": None}
    if array.ndim == 3:
        channels = array.shape[-1]
        metadata["channels"] = {2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, str(channels))
        array = array[..., 0] if channels == 2 else luminance(array[..., :3])
    return array_source(path, fmt, array, None, metadata, lazy=False)
