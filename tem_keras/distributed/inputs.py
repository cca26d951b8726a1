"""What a prediction job reads, as the store and the workers see it: the frames (files, a NumPy or
Dask array, a lazy HyperSpy signal or a RosettaSciIO signal dictionary), their size and pixel
size, and the identity of the inputs and of the model (what a resumed job must match).

Files are opened by each worker itself (only their names travel); arrays travel as blocks of
frames (a Dask array's blocks are computed where the task runs).

References
----------
F. de la Peña et al., HyperSpy, https://hyperspy.org — lazy signals are Dask arrays.
RosettaSciIO, https://hyperspy.org/rosettasciio — ``file_reader(..., lazy=True)`` returns
dictionaries with ``data`` (a Dask array) and ``axes`` (scale, units, navigate).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TEMInputError

__all__ = ["JobInput", "job_input", "model_checksum", "model_folder"]

#: the files of a run or export folder that decide its predictions
MODEL_FILES = ("config.json", "best.keras", "thresholds.json", "tem_keras.json", "model.keras",
               "saved_model/saved_model.pb")


@dataclass
class JobInput:
    """The frames of a job.

    Attributes
    ----------
    n_frames : int
    frame_shape : (int, int)
        Of the first frame; every frame must have it.
    pixel_size_nm : float or None
        Of the first frame (or the signal's calibration, or the ``pixel_size_nm`` argument).
    identity : dict
        Names, sizes and modification times of files, or shape, dtype and checksum (NumPy) or
        graph name (Dask) of an array.
    files : tuple of str or None
        Absolute paths of files, folders or patterns, opened by each worker.
    array : ndarray or dask.array.Array or None
        ``[N, H, W]`` frames when the input is not files.
    """

    n_frames: int
    frame_shape: tuple
    pixel_size_nm: float | None
    identity: dict
    files: tuple | None = None
    array: object = None

    def block(self, frames: range) -> np.ndarray:
        """Frames ``frames`` of an array input, in memory (a Dask array's are computed in this
        process, even when a distributed client is the default scheduler)."""
        part = self.array[frames.start:frames.stop]
        if _is_dask(part):
            part = part.compute(scheduler="threads")
        return np.asarray(part)

    def dask_blocks(self, chunk_frames: int) -> list:
        """One ``dask.delayed`` block of ``chunk_frames`` frames per chunk (array inputs)."""
        import dask.array as da

        array = self.array if isinstance(self.array, da.Array) else da.from_array(self.array)
        h, w = self.frame_shape
        return list(array.rechunk((chunk_frames, h, w)).to_delayed().ravel())


def _is_dask(x) -> bool:
    return hasattr(x, "__dask_graph__") and hasattr(x, "shape") and hasattr(x, "dtype")


def _refuse_spectra(x) -> None:
    """A spectrum (image) is refused as :func:`tem_keras.predict` refuses it: a HyperSpy signal
    needs two signal axes; a RosettaSciIO dictionary two axes that are not navigation axes, and
    no energy or wavelength axis among them."""
    from ..io.core import is_spectral_axis
    from ..io.hyperspy import signal_stack

    if not isinstance(x, dict):
        signal_stack(x)  # raises for anything but a Signal2D
        return
    axes = list(x.get("axes") or [])
    shape = tuple(int(s) for s in np.shape(x["data"]))
    signal = [a for a in axes if not a.get("navigate", False)] if any(
        "navigate" in a for a in axes) else axes[-2:]
    if len(signal) != 2 or any(is_spectral_axis(a) for a in signal) or len(shape) < 2:
        raise TEMInputError(f"a signal with two signal axes (an image) is needed, got "
                            f"{len(signal) if len(shape) >= 2 else len(shape)} signal axes in data of "
                            f"shape {shape}: a spectrum or spectrum image is not segmented")


def _signal_calibration(x) -> tuple[object, float | None]:
    """``(data, pixel size in nm)`` of a HyperSpy signal or a RosettaSciIO signal dictionary."""
    from ..io.core import axis_calibration, square_pixel_size

    _refuse_spectra(x)
    if isinstance(x, dict):
        data, axes = x["data"], list(x.get("axes") or [])[-2:]
        scales = [(a.get("scale"), a.get("units")) for a in axes]
    else:
        data, axes = x.data, list(x.axes_manager.signal_axes)
        scales = [(a.scale, a.units) for a in axes][::-1]  # HyperSpy lists x before y
    if len(scales) != 2:
        return data, None
    (y_nm, _), (x_nm, _) = (axis_calibration(s, u) for s, u in scales)
    return data, square_pixel_size(None, y_nm, x_nm, {})


def _array_input(array, pixel_size_nm, name: str) -> JobInput:
    from ..inference.sources import refuse_colour_array

    shape = tuple(int(s) for s in array.shape)
    if name in ("array", "Dask array"):
        refuse_colour_array(shape)  # as predict refuses it
    if len(shape) == 2:
        array = array[None]
    elif len(shape) > 3:  # navigation axes of a signal: frames in C order
        array = array.reshape((-1,) + shape[-2:])
    elif len(shape) != 3:
        raise TEMInputError(f"expected an image [H, W] or a stack [frames, H, W], got shape {shape}")
    if np.dtype(array.dtype).kind not in "biuf":
        raise TEMInputError(f"the {name} must hold real numbers, got dtype {array.dtype}")
    if _is_dask(array):
        identity = {"kind": name, "shape": list(array.shape), "dtype": str(array.dtype),
                    "dask_name": array.name}
    else:
        array = np.ascontiguousarray(array)
        identity = {"kind": name, "shape": list(array.shape), "dtype": str(array.dtype),
                    "sha1": hashlib.sha1(array.tobytes()).hexdigest()}
    return JobInput(int(array.shape[0]), tuple(int(s) for s in array.shape[1:]), pixel_size_nm,
                    identity, array=array)


def _file_identity(name: str) -> list:
    """``[name, size, mtime_ns]`` of each file behind ``name`` (a file, folder or pattern)."""
    path = Path(name)
    if path.is_file():
        paths = [path]
    elif path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file())
    else:
        import glob

        paths = sorted(Path(p) for p in glob.glob(name) if Path(p).is_file())
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def job_input(x, pixel_size_nm: float | None = None) -> JobInput:
    """Describe ``x`` for a job (reads only headers and the first frame).

    Parameters
    ----------
    x : path, list of paths, folder, pattern, ndarray, dask array, HyperSpy signal (lazy or not),
        RosettaSciIO signal dictionary, Micrograph or MicrographStack read from one file
    pixel_size_nm : float, optional
        For inputs without a calibration.

    Raises
    ------
    TEMInputError
        Unreadable files or arrays that are not images; the message names the file.
    """
    from ..io import Micrograph, MicrographStack

    if isinstance(x, Micrograph):
        return _array_input(x.data, x.pixel_size_nm or pixel_size_nm, "image")
    if isinstance(x, MicrographStack):
        if x.path is None or not Path(x.path).exists():
            raise TEMInputError("a MicrographStack without a file cannot be shared with workers: "
                                "give its file names, or the frames as an array")
        x = x.path
    if isinstance(x, dict) and "data" in x:
        data, calibrated = _signal_calibration(x)
        return _array_input(data, calibrated or pixel_size_nm, "signal")
    if hasattr(x, "axes_manager") and hasattr(x, "data"):
        data, calibrated = _signal_calibration(x)
        return _array_input(data, calibrated or pixel_size_nm, "signal")
    if _is_dask(x):
        return _array_input(x, pixel_size_nm, "Dask array")
    if isinstance(x, np.ndarray):
        return _array_input(x, pixel_size_nm, "array")
    names = [x] if isinstance(x, (str, os.PathLike)) else list(x) if isinstance(x, (list, tuple)) else None
    if names is None or not all(isinstance(n, (str, os.PathLike)) for n in names):
        raise TypeError(f"cannot predict into a store from {type(x).__name__}: give file names, a "
                        "folder, a pattern, an array, a Dask array or a HyperSpy signal")
    if not names:
        raise TEMInputError("no images given (empty list)")
    from ..inference.sources import input_sources

    files = tuple(str(Path(n).absolute()) for n in names)
    sources, _ = input_sources(list(files))
    first = sources[0].get(0)
    return JobInput(sum(s.n for s in sources), tuple(first.shape),
                    first.pixel_size_nm if first.pixel_size_nm is not None else pixel_size_nm,
                    {"kind": "files", "files": [f for n in files for f in _file_identity(n)]},
                    files=files)


def model_folder(model) -> str:
    """The absolute path of a model given as a path, :class:`~tem_keras.artifacts.Run` or
    :class:`~tem_keras.artifacts.ExportedModel` (workers load it themselves).

    Raises
    ------
    TypeError
        For a model object without a folder (it would have to be pickled to every worker).
    TEMInputError
        A path that does not exist.
    """
    from ..artifacts import ModelBundle

    path = getattr(model, "path", None) if isinstance(model, ModelBundle) else model
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a store or cluster prediction takes the model as a path (run folder, export "
                        f"folder or .keras file), which each worker loads once; got "
                        f"{type(model).__name__}: save it first (model.save('model.keras'))")
    path = Path(path).absolute()
    if not path.exists():
        raise TEMInputError("no such model file (.keras), run folder or export folder", path)
    return str(path)


def model_checksum(path) -> str:
    """SHA-256 of the files that decide a model's predictions (:data:`MODEL_FILES` of a run or
    export folder and a SavedModel's variables, or the ``.keras`` file)."""
    path = Path(path)
    files = [path] if path.is_file() else [path / n for n in MODEL_FILES if (path / n).is_file()]
    if path.is_dir():
        files += sorted(p for p in (path / "saved_model" / "variables").glob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
