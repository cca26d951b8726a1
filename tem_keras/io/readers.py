"""``read_image`` and ``read_stack``: one entry point over every format."""

from __future__ import annotations

import glob
import os
import re
from functools import partial
from pathlib import Path

from ..errors import TEMInputError
from .core import Micrograph, MicrographStack, FrameSource
from .plain import open_bitmap, open_hdf5, open_mrc, open_npy
from .rosetta import open_emd, open_rosettasciio
from .tiff import open_tiff

# extension -> (format name, opener(path, format, **options))
_FORMATS = {
    ".dm3": ("DigitalMicrograph", partial(open_rosettasciio, module="digitalmicrograph")),
    ".dm4": ("DigitalMicrograph", partial(open_rosettasciio, module="digitalmicrograph")),
    ".ser": ("TIA", partial(open_rosettasciio, module="tia")),
    ".emi": ("TIA", partial(open_rosettasciio, module="tia")),
    ".emd": ("EMD", open_emd),
    ".mrc": ("MRC", open_mrc),
    ".tif": ("TIFF", open_tiff),
    ".tiff": ("TIFF", open_tiff),
    ".png": ("PNG", open_bitmap),
    ".jpg": ("JPEG", open_bitmap),
    ".jpeg": ("JPEG", open_bitmap),
    ".bmp": ("BMP", open_bitmap),
    ".npy": ("NumPy", open_npy),
    ".h5": ("HDF5", open_hdf5),
    ".hdf5": ("HDF5", open_hdf5),
}
SUPPORTED_EXTENSIONS = tuple(sorted(_FORMATS))


def _open(path, **options) -> FrameSource:
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
    if options and opener is not open_hdf5:
        raise TEMInputError(f"options {sorted(options)} only apply to HDF5 files", path)
    source = opener(path, fmt, **options)
    if source.n_frames == 0 or 0 in source.frame_shape:
        raise TEMInputError(f"is empty, it holds no image: {source.n_frames} frame(s) of "
                            f"{source.frame_shape[0]}×{source.frame_shape[1]} px", path)
    return source


def _micrograph(source: FrameSource, index: int, path) -> Micrograph:
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
    >>> import numpy as np
    >>> from tem_keras.io import write_image
    >>> path = write_image("particles.tif", np.ones((32, 48), np.float32), pixel_size_nm=0.5)
    >>> m = read_image(path)
    >>> m.pixel_size_nm, m.shape
    (0.5, (32, 48))
    """
    from ..validation import check_int

    check_int("frame", frame)
    if dataset is not None and not isinstance(dataset, str):
        raise TypeError(f"dataset must be the name of an HDF5 dataset (str) or None, got {dataset!r}")
    _check_path_type(path)
    options = {} if dataset is None else {"dataset": dataset}
    return _micrograph(_open(path, **options), frame, path)


def _check_path_type(path) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r} "
                        f"({type(path).__name__})")


def natural_key(path: Path):
    """Sort key of a file name with numbers compared as numbers (``img2`` before ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> list[Path]:
    """Readable images in a folder, natural order; an ``.emi`` beside its ``.ser`` is skipped."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _FORMATS]
    sers = {p.stem.lower() for p in files if p.suffix.lower() == ".ser"}
    files = [p for p in files if not (p.suffix.lower() == ".emi"
                                      and any(s.startswith(p.stem.lower() + "_") for s in sers))]
    return sorted(files, key=natural_key)


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
        for item in source:
            _check_path_type(item)
        paths = [Path(p) for p in source]
        if not paths:
            raise TEMInputError("read_stack got an empty list of files")
        return MicrographStack(lambda i: _single_frame(paths[i]), len(paths), path=paths[0].parent)
    _check_path_type(source)
    path = Path(source)
    if not path.exists() and any(c in str(source) for c in "*?["):
        paths = sorted((Path(p) for p in glob.glob(str(source))), key=natural_key)
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise TEMInputError("no files match this pattern", source)
        return read_stack(paths)
    if path.is_dir():
        paths = image_files(path)
        if not paths:
            raise TEMInputError("no readable images in this folder (supported: "
                                + ", ".join(SUPPORTED_EXTENSIONS) + ")", path)
        return MicrographStack(lambda i: _single_frame(paths[i]), len(paths), path=path)
    opened = _open(path, **({} if dataset is None else {"dataset": dataset}))
    return MicrographStack(partial(_micrograph, opened, path=path), opened.n_frames, path=path,
                           pixel_size_nm=opened.pixel_size_nm, frame_shape=opened.frame_shape,
                           lazy=opened.lazy)
