"""The work of one task: predict a chunk of consecutive frames and write it into the store.

A task carries names, not objects: the model's folder and checksum, the input files (or one
block of frames of an array input), the store's path and the prediction options. Each process
keeps a :class:`ModelCache`, so the model is loaded (and its inference function traced) once
per worker, not once per task. The frames go through
:func:`~tem_keras.inference.stream.stream_predictions`, the generator of the single-process
:func:`~tem_keras.inference.predict_stack`, so the masks are the same either way.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

from ..errors import TEMInputError
from .inputs import model_checksum
from .store import PredictionStore

__all__ = ["ChunkTask", "ModelCache", "run_chunk", "particle_table"]


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of frames to predict (what travels to a worker, besides an array block).

    Attributes
    ----------
    store : str
        The Zarr store's path (on a file system the workers share).
    chunk : int
        Chunk number; its frames are ``PredictionStore.chunk_range(chunk)``.
    model, model_sha256 : str
        The model's folder (or ``.keras`` file) and its checksum at submission.
    files : tuple of str or None
        Input files (all of them: frames are numbered across the files); None for arrays.
    pixel_size_nm : float or None
        Calibration of an array input, or the ``pixel_size_nm`` argument.
    options : dict
        ``threshold``, ``preprocessing`` (dict or None), ``tile_size``, ``overlap``,
        ``batch_size``, ``mixed_precision``, ``max_pixels``, ``max_memory_gb``, ``tta``,
        ``probabilities``, ``particles``, ``min_area``.
    """

    store: str
    chunk: int
    model: str
    model_sha256: str
    files: tuple | None = None
    pixel_size_nm: float | None = None
    options: dict = field(default_factory=dict)


class ModelCache:
    """The models and opened inputs of one process, loaded once and kept (a worker's state).

    Parameters
    ----------
    max_inputs : int
        Opened input lists kept (the oldest is dropped first).
    """

    def __init__(self, max_inputs: int = 4):
        self._models: dict = {}
        self._inputs: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.max_inputs = max_inputs
        self.loads = 0

    def model(self, path: str, checksum: str):
        """The :class:`~tem_keras.artifacts.ModelBundle` of ``path``, loaded on first use.

        Raises
        ------
        TEMInputError
            The model's files changed since the job was submitted.
        """
        with self._lock:
            key = (path, checksum)
            if key not in self._models:
                if model_checksum(path) != checksum:
                    raise TEMInputError("the model's files changed after the job started: its "
                                        "masks would mix two models; start the job again", path)
                import os

                from .._env import import_tensorflow_quietly
                from ..artifacts import load

                # a worker imports TensorFlow here: without its start-up lines unless asked for
                import_tensorflow_quietly(os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"))
                self._models[key] = load(path)
                self.loads += 1
            return self._models[key]

    def sources(self, files: tuple) -> list:
        """:func:`~tem_keras.inference.sources.input_sources` of ``files``, opened on first use."""
        from ..inference.sources import input_sources

        with self._lock:
            if files not in self._inputs:
                self._inputs[files] = input_sources(list(files))[0]
                while len(self._inputs) > self.max_inputs:
                    self._inputs.popitem(last=False)
            self._inputs.move_to_end(files)
            return self._inputs[files]


def _block_frames(block, frames: range, pixel_size_nm):
    """``(global index, Source, frame)`` of the frames of an array block."""
    from ..inference.sources import Source
    from ..io import Micrograph

    start = frames.start
    source = Source(None, frames.stop, lambda i: Micrograph(block[i - start], pixel_size_nm), True)
    return [(g, source, g) for g in frames]


def particle_table(predictions: list, min_area: int = 10):
    """Particles of each prediction (:func:`~tem_keras.analysis.particles.measure_particles`), one table
    with columns ``index`` (frame in the store), ``image``, ``frame`` (in its file, -1 for
    single images) and the measurements."""
    import pandas as pd

    from ..analysis.particles import MissingPixelSizeWarning, measure_particles

    tables = []
    for p in predictions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingPixelSizeWarning)
            table = measure_particles(p.mask, p.pixel_size_nm, image=p.image, min_area=min_area)
        table.insert(0, "index", p.index)
        table.insert(1, "image", pd.Series([p.name] * len(table), dtype="string"))
        table.insert(2, "frame", -1 if p.frame is None else p.frame)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def run_chunk(task: ChunkTask, cache: ModelCache, block=None, *, worker: str | None = None) -> dict:
    """Predict chunk ``task.chunk`` and write it into the store; returns its marker.

    Parameters
    ----------
    task : ChunkTask
    cache : ModelCache
        This process's models and inputs.
    block : ndarray, optional
        The chunk's frames ``[k, H, W]`` for an array input.
    worker : str, optional
        Recorded in the marker (the Dask worker's address).
    """
    from ..inference.options import PredictOptions
    from ..inference.sources import select_frames
    from ..inference.stream import stream_predictions

    start = time.perf_counter()
    store = PredictionStore(task.store)
    frames = store.chunk_range(task.chunk)
    bundle = cache.model(task.model, task.model_sha256)
    o = task.options
    options = PredictOptions.from_dict({**o, "pixel_size_nm": task.pixel_size_nm}).for_model(bundle)
    if task.files is not None:
        selected = list(select_frames(cache.sources(task.files), frames))
    else:
        selected = _block_frames(block, frames, task.pixel_size_nm)
    predictions = list(stream_predictions(bundle, selected, options,
                                          return_probabilities=bool(o.get("probabilities")),
                                          return_image=bool(o.get("particles"))))
    table = particle_table(predictions, o.get("min_area", 10)) if o.get("particles") else None
    return store.write_chunk(task.chunk, predictions, table, seconds=time.perf_counter() - start,
                             worker=worker)
