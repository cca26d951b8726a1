"""Prediction of long stacks into a Zarr store, on a Dask cluster or in this process.

The job is cut into chunks of consecutive frames; each chunk is one task that a worker runs
(:mod:`.chunks`): it predicts the frames with the model it loaded once and writes them into the
store with a marker (:mod:`.store`). The client follows the tasks with a progress bar, and at
the end links particles across frames on the merged table. What makes it robust:

- a rerun of the same job skips the chunks whose marker exists (resume after an interruption);
- a worker that dies has its tasks run again elsewhere (the scheduler reschedules them;
  ``retries`` more runs are allowed for tasks that raise);
- a store written by another job, or a folder that is not a store, is refused, and one job at a
  time writes a store (a lock beside it, as for ``particles.csv``).

``client=None`` runs the same tasks one after another in this process (no Dask needed, only
zarr and pyarrow). The workers must see the store, the model and the input files at the same
paths (one machine, or a shared file system on a cluster).

References
----------
M. Rocklin, "Dask: Parallel Computation with Blocked algorithms and Task Scheduling", SciPy 2015.
Dask-jobqueue, https://jobqueue.dask.org — the same client on SLURM, PBS, SGE.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ..errors import TEMInputError
from .chunks import ChunkTask, ModelCache, run_chunk
from .extra import require
from .inputs import job_input, model_checksum, model_folder
from .store import PredictionStore

__all__ = ["StoreReport", "connect", "predict_to_store", "default_chunk_frames", "job_options", "tracks_of"]

#: pixels of one chunk of frames by default (32 frames of 1024², 2 of 4096²)
CHUNK_PIXELS = 32 * 1024 * 1024


@dataclass
class StoreReport:
    """What a call of :func:`predict_to_store` did.

    Attributes
    ----------
    store : PredictionStore
    computed : list of int
        Chunks computed by this call.
    skipped : list of int
        Chunks found finished (a resumed job).
    seconds : float
    workers : dict
        Chunks computed per worker (address, or ``"local"``).
    """

    store: PredictionStore
    computed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0
    workers: dict = field(default_factory=dict)

    @property
    def masks(self):
        """The masks ``[N, H, W]`` (a Zarr array)."""
        return self.store.masks

    def particles(self):
        """The particle table of all frames (pandas)."""
        return self.store.particles()

    def __repr__(self) -> str:
        info = self.store.info
        return (f"StoreReport({str(self.store.path)!r}, {info['n_frames']} frames, computed "
                f"{len(self.computed)} chunk(s), skipped {len(self.skipped)}, {self.seconds:.1f} s)")


def default_chunk_frames(frame_shape) -> int:
    """Frames per task: about :data:`CHUNK_PIXELS` pixels, at least 1, at most 32."""
    h, w = frame_shape
    return int(max(1, min(32, CHUNK_PIXELS // max(1, h * w))))


def connect(scheduler: str):
    """A ``distributed.Client`` for ``"local:N"`` (a new LocalCluster of N worker processes,
    one thread each, on this machine) or ``"tcp://HOST:PORT"`` (a running scheduler).

    Raises
    ------
    ValueError
        Another form of ``scheduler``.
    ImportError
        The ``cluster`` extra is not installed.
    """
    distributed = require("distributed")
    text = str(scheduler).strip()
    if text.startswith("local:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--scheduler local:N needs a number of workers N >= 1, got {text!r}")
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        return distributed.Client(cluster)
    if "://" in text:
        return distributed.Client(text, timeout=30)
    raise ValueError(f"--scheduler is local:N (N worker processes here) or the address of a running "
                     f"Dask scheduler such as tcp://host:8786; got {text!r}")


def tracks_of(particles, n_frames: int, *, max_distance: float = 10.0, memory: int = 0):
    """Particles of the merged table (column ``index`` = frame) linked across frames with
    :func:`~tem_keras.analysis.particles.track_particles`; the ``frame`` of the result is the store's
    frame index."""
    import pandas as pd

    from ..analysis.particles import track_particles

    if "centroid_y_px" not in particles:  # no table at all
        return pd.DataFrame(columns=["frame", "particle"])
    columns = [c for c in particles.columns if c not in ("index", "image", "frame")]
    groups = dict(tuple(particles.groupby("index", sort=True))) if len(particles) else {}
    empty = pd.DataFrame({c: pd.Series(dtype=particles[c].dtype) for c in columns})
    frames = [groups[i][columns] if i in groups else empty for i in range(n_frames)]
    return track_particles(frames, max_distance=max_distance, memory=memory)


#: the prediction options a store's job records (with ``probabilities``, ``particles``, ``min_area``)
JOB_OPTIONS = ("threshold", "preprocessing", "tile_size", "overlap", "batch_size", "mixed_precision",
               "max_pixels", "max_memory_gb", "tta")


def job_options(options, probabilities, particles, min_area) -> dict:
    """What a chunk task needs of the options, as plain values (read back by
    :meth:`~tem_keras.inference.options.PredictOptions.from_dict`)."""
    values = options.to_dict()
    return {**{k: values[k] for k in JOB_OPTIONS}, "probabilities": bool(probabilities),
            "particles": bool(particles), "min_area": int(min_area)}


def predict_to_store(model, x, out, *, options=None, client=None, chunk_frames: int | None = None,
                     particles: bool = False, min_area: int = 10, track: bool = False,
                     max_distance: float = 10.0, overwrite: bool = False, retries: int = 2,
                     progress: bool = False, probabilities: bool = False,
                     **keywords) -> StoreReport:
    """Segment every frame of ``x`` into the Zarr store ``out``, chunk by chunk.

    Parameters
    ----------
    model : str, Path, Run or ExportedModel
        Run folder, export folder or ``.keras`` file: each worker loads it once.
    x : files, folder, pattern, ndarray, dask array, HyperSpy signal or RosettaSciIO signal dict
        The frames (see :func:`~tem_keras.distributed.inputs.job_input`); all of one size.
    out : str or Path
        The store (a ``.zarr`` folder); see :mod:`tem_keras.distributed.store` for its layout.
    client : distributed.Client, optional
        Run the chunks on this cluster (see :func:`connect`); None: in this process.
    chunk_frames : int, optional
        Frames per task (default :func:`default_chunk_frames`). A multiple of ``batch_size``
        keeps the batches (and so the masks, to the bit) as in one process.
    particles : bool
        Measure particles into ``particles/part-<chunk>.parquet``.
    min_area : int
        Smallest particle in pixels.
    track : bool
        Link particles across frames at the end (:func:`tracks_of`) into ``tracks/``; implies
        ``particles``.
    max_distance : float
        Largest displacement between linked frames, in pixels.
    overwrite : bool
        Replace a store written by another job (a folder that is not a store is never replaced).
    retries : int
        More runs allowed for a task that raises (a task on a worker that died is rerun anyway).
    progress : bool
        A progress bar over the frames, on a terminal.
    options : PredictOptions, optional
        How to predict, as :func:`tem_keras.predict` (or its fields as keywords); the engine is
        TensorFlow.
    probabilities : bool
        Store the particle probability too.

    Returns
    -------
    StoreReport
        The store and which chunks this call computed or found finished.

    Raises
    ------
    FileExistsError
        ``out`` holds another job's store or is not a store; or another process writes it.
    TEMInputError
        Unreadable inputs, frames of different sizes, a missing model; the message names the file.
    ImportError
        The ``cluster`` extra is missing (it names it).
    """
    from .. import __version__
    from ..inference.options import PredictOptions
    from ..io.outputs import lock_output, refuse_inputs, unlock_output
    from ..validation import check_bool, check_int, check_predict_input

    options = PredictOptions.build(options, **keywords)
    require("zarr", *(("pyarrow",) if particles or track else ()),
            *(("distributed",) if client is not None else ()))
    if out is None:
        raise ValueError("give the Zarr store to write: out='masks.zarr'")
    check_predict_input(x)
    check_bool("probabilities", probabilities)
    check_bool("progress", progress)
    check_int("chunk_frames", chunk_frames, 1, optional=True)
    check_int("retries", retries, 0)
    check_int("min_area", min_area, 0)
    particles = bool(particles or track)
    path = model_folder(model)
    checksum = model_checksum(path)
    pixel_size_nm = options.pixel_size_nm
    frames = job_input(x, pixel_size_nm)
    chunk_frames = chunk_frames or default_chunk_frames(frames.frame_shape)
    recorded = job_options(options, probabilities, particles, min_area)
    job = {"model": path, "model_sha256": checksum, "input": frames.identity,
           "n_frames": frames.n_frames, "frame_shape": list(frames.frame_shape),
           "chunk_frames": chunk_frames, "pixel_size_nm": pixel_size_nm, **recorded}
    provenance = {"model": path, "model_sha256": checksum, "tem_keras_version": __version__,
                  "threshold": options.threshold, "command": "predict_to_store"}
    refuse_inputs(out, [path, x, frames.files or ()], within=True)  # before anything is written
    start = time.perf_counter()
    lock_output(out, advice="one job writes a store at a time: wait for it, or choose another output")
    try:
        store = PredictionStore.prepare(out, job, provenance, pixel_size_nm=frames.pixel_size_nm,
                                        overwrite=overwrite)
        done = store.done_chunks()
        pending = [c for c in range(store.n_chunks) if c not in done]
        report = StoreReport(store, skipped=sorted(done))
        tasks = {c: ChunkTask(str(store.path), c, path, checksum, frames.files,
                              frames.pixel_size_nm if frames.files is None else pixel_size_nm,
                              recorded) for c in pending}
        bar = _progress_bar(sum(len(store.chunk_range(c)) for c in pending), progress)
        try:
            run = _run_on_cluster if client is not None else _run_here
            for record in run(client, tasks, frames, chunk_frames, retries):
                report.computed.append(record["chunk"])
                where = record.get("worker") or "local"
                report.workers[where] = report.workers.get(where, 0) + 1
                bar.update(record["frames"][1] - record["frames"][0])
        finally:
            bar.close()
        if track:
            store.write_tracks(tracks_of(store.particles(), frames.n_frames, max_distance=max_distance))
        report.seconds = time.perf_counter() - start
        store.update_info(completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return report
    finally:
        unlock_output(out)


def _progress_bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal only, quiet in logs and pipes
    return tqdm(total=total, unit="frame", desc="predict", disable=None if progress else True)


def _run_here(client, tasks: dict, frames, chunk_frames: int, retries: int):
    """The chunks one after another in this process (one model load)."""
    cache = ModelCache()
    for chunk, task in tasks.items():
        block = None
        if frames.files is None:
            block = frames.block(PredictionStore(task.store).chunk_range(chunk))
        yield run_chunk(task, cache, block)


def _run_on_cluster(client, tasks: dict, frames, chunk_frames: int, retries: int):
    """The chunks as tasks on ``client``'s workers; markers in the order they finish."""
    distributed = require("distributed")
    from .worker import PLUGIN_NAME, ModelCachePlugin, run_chunk_on_worker

    client.register_plugin(ModelCachePlugin(), name=PLUGIN_NAME)
    token = uuid.uuid4().hex[:8]
    keys = {c: f"tem-keras-chunk-{c:05d}-{token}" for c in tasks}
    if frames.files is not None:
        futures = [client.submit(run_chunk_on_worker, task, key=keys[c], retries=retries, pure=False)
                   for c, task in tasks.items()]
    else:
        import dask

        blocks = frames.dask_blocks(chunk_frames)
        work = [dask.delayed(run_chunk_on_worker, pure=False)(task, blocks[c], dask_key_name=keys[c])
                for c, task in tasks.items()]
        futures = client.compute(work, retries=retries)
    try:
        for future in distributed.as_completed(futures):
            record = future.result()
            if "input_error" in record:
                raise TEMInputError(*record["input_error"])
            yield record
    finally:
        client.cancel([f for f in futures if not f.done()])  # interrupted: stop the rest
