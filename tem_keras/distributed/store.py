"""The Zarr store a prediction job writes: masks, probabilities, thresholds, particle tables,
provenance, and one marker per finished chunk of frames (what makes a job resumable).

Layout of ``OUT.zarr`` (Zarr format 2, written and read by zarr-python 2.18 and 3, napari and
xarray)::

    OUT.zarr/
      .zattrs            tem_keras: kind, job, provenance (model, version, threshold, times),
                         pixel_size_nm, n_frames, frame_shape, chunk_frames
      masks/             [N, H, W] uint8, one Zarr chunk per frame (0 background, 1.. classes)
      probabilities/     [N, H, W] float32 particle probability (only when asked for)
      thresholds/        [N] float32 threshold applied to each frame (NaN: argmax)
      particles/         part-<chunk>.parquet, one per chunk of frames (when asked for);
                         ``pandas.read_parquet("OUT.zarr/particles")`` reads them as one table
      tracks/            tracks.parquet (particles linked across frames, when asked for)
      done/              chunk-<chunk>.json, written after the chunk's data: frames, sources,
                         worker, time

A chunk of frames is written by one task into its own Zarr chunks and files, so workers never
write the same file; the marker, written last and atomically, is what a rerun trusts.

References
----------
Zarr storage specification version 2, https://zarr-specs.readthedocs.io/en/latest/v2/v2.0.html
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from .extra import require

__all__ = ["PredictionStore", "STORE_KIND"]

#: the ``kind`` attribute that marks a folder as written by tem_keras
STORE_KIND = "tem_keras prediction store"


def _open_group(zarr, path: Path, mode: str):
    """A Zarr group in format 2 (zarr-python 3 writes format 3 unless told; 2 knows only 2)."""
    if int(zarr.__version__.split(".")[0]) >= 3:
        return zarr.open_group(str(path), mode=mode, zarr_format=2)
    return zarr.open_group(str(path), mode=mode)


def _new_array(group, name: str, **kwargs):
    """``create_array`` (zarr-python 3) or ``create_dataset`` (2)."""
    create = getattr(group, "create_array", None) or group.create_dataset
    return create(name, **kwargs)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _plain(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _write_atomically(path: Path, write) -> None:
    """``write(tmp)`` to a hidden file beside ``path``, then rename it onto ``path``."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class PredictionStore:
    """A Zarr store of predicted masks (see the module docstring for the layout).

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` folder.

    Examples
    --------
    A store written by ``tem-keras predict video.ser -o video_masks.zarr``::

        store = PredictionStore("video_masks.zarr")
        store.masks[10]                              # the mask of frame 10
        store.particles().groupby("index").size()   # particles per frame
    """

    def __init__(self, path):
        self.path = Path(path).absolute()
        self._info = None  # the attributes, read once (the client alone changes them)

    # ---------------------------------------------------------------------- opening, creating
    @classmethod
    def prepare(cls, path, job: dict, provenance: dict, *, pixel_size_nm: float | None = None,
                overwrite: bool = False) -> "PredictionStore":
        """Create the store for ``job``, or reopen it when it holds the same job (resume).

        Parameters
        ----------
        job : dict
            Everything that decides the output (model and its checksum, inputs, options,
            ``n_frames``, ``frame_shape``, ``chunk_frames``, ``probabilities``, ``particles``).
        provenance : dict
            Stored beside the job (model, version, threshold, ...); the creation time is added.
        pixel_size_nm : float, optional
            Of the first frame; an attribute of the store and of its arrays.
        overwrite : bool
            Replace a store of another job. A folder that is not a tem_keras store is never
            replaced.

        Raises
        ------
        FileExistsError
            ``path`` is a file, a non-empty folder that is not a tem_keras store, or a store of
            another job (without ``overwrite``); the message says what differs.
        """
        store = cls(path)
        job = _plain(job)
        if store.path.is_file():
            raise FileExistsError(f"{store.path}: is a file; the output of a distributed prediction "
                                  "is a Zarr folder: choose another name, e.g. masks.zarr")
        if store.path.is_dir() and any(store.path.iterdir()):
            info = store.read_info()
            if info is None:
                raise FileExistsError(
                    f"{store.path}: is a non-empty folder that is not a tem_keras prediction store; "
                    "nothing was written: choose a new output name (it is never replaced)")
            if info.get("job") == job:
                return store
            old = info.get("job") or {}
            differ = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
            if not overwrite:
                shown = "; ".join(f"{k}: {old.get(k)!r} there, {job.get(k)!r} now" for k in differ[:4])
                raise FileExistsError(
                    f"{store.path}: holds the prediction of another job ({shown}); pass "
                    "overwrite=True (--overwrite) to replace it, or choose another output")
            shutil.rmtree(store.path)
        store._create_whole(job, provenance, pixel_size_nm)
        return store

    def _create_whole(self, job: dict, provenance: dict, pixel) -> None:
        """:meth:`_create` in a hidden sibling folder renamed into place when complete: a process
        killed while creating leaves no half-made store (which no rerun would take for its own)
        but a ``.<name>.<pid>.partial`` folder, removed by the next creation."""
        from ..io.outputs import partial_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(self.path)
        shutil.rmtree(partial, ignore_errors=True)
        final, self.path = self.path, partial
        try:
            self._create(job, provenance, pixel)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            self.path = final
        os.replace(partial, final)  # onto nothing, or onto an empty folder

    def _create(self, job: dict, provenance: dict, pixel) -> None:
        zarr = require("zarr")
        n, (h, w), k = job["n_frames"], job["frame_shape"], job["chunk_frames"]
        root = _open_group(zarr, self.path, "w")
        masks = _new_array(root, "masks", shape=(n, h, w), chunks=(1, h, w), dtype="uint8",
                                  fill_value=0)
        masks.attrs.update({"_ARRAY_DIMENSIONS": ["frame", "y", "x"], "pixel_size_nm": pixel,
                            "description": "labels: 0 background, 1.. classes (1 = particle)"})
        thresholds = _new_array(root, "thresholds", shape=(n,), chunks=(k,), dtype="float32",
                                       fill_value=np.nan)
        thresholds.attrs.update({"_ARRAY_DIMENSIONS": ["frame"],
                                 "description": "threshold on the particle probability (NaN: argmax)"})
        if job.get("probabilities"):
            p = _new_array(root, "probabilities", shape=(n, h, w), chunks=(1, h, w),
                                  dtype="float32", fill_value=0.0)
            p.attrs.update({"_ARRAY_DIMENSIONS": ["frame", "y", "x"], "pixel_size_nm": pixel,
                            "description": "particle probability (1 - background for several classes)"})
        for name, note in (("done", "chunk-<i>.json: one marker per finished chunk of frames"),
                           ("particles", "part-<i>.parquet per chunk: pandas.read_parquet(this folder)"),
                           ("tracks", "tracks.parquet: particles linked across frames")):
            root.create_group(name).attrs["description"] = note
        root.attrs["tem_keras"] = {"kind": STORE_KIND, "format": 1, "job": job,
                                   "provenance": dict(_plain(provenance), created=_now()),
                                   "pixel_size_nm": pixel, "n_frames": n, "frame_shape": [h, w],
                                   "chunk_frames": k, "completed": None}

    def read_info(self) -> dict | None:
        """The ``tem_keras`` attributes, or None when the folder is not a tem_keras store."""
        for name in (".zattrs", "zarr.json"):
            try:
                attrs = json.loads((self.path / name).read_text())
            except (OSError, ValueError):
                continue
            attrs = attrs.get("attributes", attrs) if name == "zarr.json" else attrs
            info = attrs.get("tem_keras") if isinstance(attrs, dict) else None
            if isinstance(info, dict) and info.get("kind") == STORE_KIND:
                return info
        return None

    @property
    def info(self) -> dict:
        """The ``tem_keras`` attributes (job, provenance, pixel size, geometry)."""
        if self._info is None:
            self._info = self.read_info()
        if self._info is None:
            raise TEMInputError("is not a tem_keras prediction store (no tem_keras attributes)",
                                self.path)
        return self._info

    def update_info(self, **values) -> None:
        """Set ``tem_keras`` attributes (the job's client only, never a worker)."""
        zarr = require("zarr")
        root = _open_group(zarr, self.path, "r+")
        root.attrs["tem_keras"] = dict(self.read_info() or {}, **_plain(values))
        self._info = None

    # ---------------------------------------------------------------------- chunks of frames
    @property
    def n_chunks(self) -> int:
        info = self.info
        return -(-info["n_frames"] // info["chunk_frames"])

    def chunk_range(self, chunk: int) -> range:
        """The frames of chunk ``chunk``."""
        info = self.info
        k = info["chunk_frames"]
        return range(chunk * k, min((chunk + 1) * k, info["n_frames"]))

    def marker(self, chunk: int) -> Path:
        """The file that says chunk ``chunk`` is complete."""
        return self.path / "done" / f"chunk-{chunk:05d}.json"

    def done_chunks(self) -> set[int]:
        """Chunks whose marker exists (their data was written before it)."""
        folder = self.path / "done"
        if not folder.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in folder.glob("chunk-*.json")}

    def write_chunk(self, chunk: int, predictions: list, table=None, *, seconds: float = 0.0,
                    worker: str | None = None) -> dict:
        """Write the predictions of chunk ``chunk`` (masks, thresholds, probabilities, particle
        table), then its marker; returns the marker's content.

        Raises
        ------
        TEMInputError
            A frame whose size differs from the store's (the message names its file).
        """
        zarr = require("zarr")
        info = self.info
        frames = self.chunk_range(chunk)
        if [p.index for p in predictions] != list(frames):
            raise RuntimeError(f"chunk {chunk}: got frames {[p.index for p in predictions]}, "
                               f"expected {list(frames)}")
        shape = tuple(info["frame_shape"])
        for p in predictions:
            if p.mask.shape != shape:
                raise TEMInputError(
                    f"frame {p.index} is {p.mask.shape[0]}×{p.mask.shape[1]} px but the store holds "
                    f"frames of {shape[0]}×{shape[1]} (the first frame's size): a Zarr store needs "
                    "frames of one size; predict other sizes into another store", p.source)
        a, b = frames.start, frames.stop
        zarr.open_array(str(self.path / "masks"), mode="r+")[a:b] = np.stack([p.mask for p in predictions])
        used = [np.nan if p.threshold is None else p.threshold for p in predictions]
        zarr.open_array(str(self.path / "thresholds"), mode="r+")[a:b] = np.asarray(used, np.float32)
        if info["job"].get("probabilities"):
            from ..inference.masks import foreground_probability

            zarr.open_array(str(self.path / "probabilities"), mode="r+")[a:b] = np.stack(
                [foreground_probability(p.probabilities) for p in predictions]).astype(np.float32)
        if table is not None:
            part = self.path / "particles" / f"part-{chunk:05d}.parquet"
            _write_atomically(part, lambda tmp: table.to_parquet(tmp, index=False))
        record = {"chunk": chunk, "frames": [a, b], "finished": _now(), "seconds": round(seconds, 3),
                  "pid": os.getpid(), "host": socket.gethostname(), "worker": worker,
                  "n_particles": None if table is None else int(len(table)),
                  "sources": [{"index": p.index, "source": p.source, "frame": p.frame,
                               "pixel_size_nm": p.pixel_size_nm, "threshold": p.threshold}
                              for p in predictions]}
        _write_atomically(self.marker(chunk), lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        return record

    # ---------------------------------------------------------------------- reading back
    @property
    def masks(self):
        """The masks ``[N, H, W]`` (a read-only Zarr array)."""
        return require("zarr").open_array(str(self.path / "masks"), mode="r")

    @property
    def probabilities(self):
        """The particle probabilities ``[N, H, W]`` (Zarr array), or None when not stored."""
        if not (self.path / "probabilities").is_dir():
            return None
        return require("zarr").open_array(str(self.path / "probabilities"), mode="r")

    @property
    def thresholds(self) -> np.ndarray:
        """The threshold applied to each frame (NaN: argmax, or not predicted yet)."""
        return require("zarr").open_array(str(self.path / "thresholds"), mode="r")[:]

    def markers(self) -> list[dict]:
        """The markers of the finished chunks, in chunk order."""
        return [json.loads(self.marker(c).read_text()) for c in sorted(self.done_chunks())]

    def frames(self):
        """One row per finished frame: ``index``, ``source``, ``frame``, ``pixel_size_nm``,
        ``threshold`` (a pandas DataFrame)."""
        import pandas as pd

        rows = [row for m in self.markers() for row in m["sources"]]
        return pd.DataFrame(rows, columns=["index", "source", "frame", "pixel_size_nm", "threshold"])

    def particles(self):
        """The particle tables of all finished chunks as one DataFrame (sorted by frame)."""
        return self._read_parquet("particles", ["index", "label"])

    def tracks(self):
        """The tracks written by the job (``track=True``) as a DataFrame."""
        return self._read_parquet("tracks", ["particle", "frame"])

    def write_tracks(self, tracks) -> Path:
        """Write ``tracks/tracks.parquet`` (replacing an earlier one of this job)."""
        path = self.path / "tracks" / "tracks.parquet"
        _write_atomically(path, lambda tmp: tracks.to_parquet(tmp, index=False))
        return path

    def _read_parquet(self, name: str, order: list):
        import pandas as pd

        require("pyarrow")
        folder = self.path / name
        if not any(folder.glob("*.parquet")):
            return pd.DataFrame()
        table = pd.read_parquet(folder)
        return table.sort_values(order, kind="stable").reset_index(drop=True)

    def __repr__(self) -> str:
        info = self.read_info()
        if info is None:
            return f"PredictionStore({str(self.path)!r}, not written yet)"
        h, w = info["frame_shape"]
        return (f"PredictionStore({str(self.path)!r}, {info['n_frames']} frames of {h}×{w}, "
                f"{len(self.done_chunks())}/{self.n_chunks} chunks done)")
