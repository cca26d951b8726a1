"""The Dask side of a worker: a plugin that gives each worker process one
:class:`~tem_keras.distributed.chunks.ModelCache`, and the task function that uses it.

Registered once per cluster (``idempotent``), the plugin is also set up on workers that join or
are restarted later (a nanny restarting a killed worker), so a retried task finds a cache there
too; the model is loaded by the first task a worker runs.

References
----------
Dask distributed, "Plugins", https://distributed.dask.org/en/stable/plugins.html
"""

from __future__ import annotations

from distributed import WorkerPlugin, get_worker

from ..errors import TEMInputError
from .chunks import ChunkTask, ModelCache, run_chunk

__all__ = ["PLUGIN_NAME", "ModelCachePlugin", "run_chunk_on_worker"]

#: the plugin's name on every worker
PLUGIN_NAME = "tem-keras-model-cache"


class ModelCachePlugin(WorkerPlugin):
    """Holds a :class:`ModelCache` on each worker (created in :meth:`setup`, never pickled)."""

    name = PLUGIN_NAME
    idempotent = True  # registered again by a later job: the workers keep their loaded models

    def setup(self, worker) -> None:
        self.cache = ModelCache()

    def __getstate__(self):
        return {}  # a cache never travels: each worker builds its own


def run_chunk_on_worker(task: ChunkTask, block=None) -> dict:
    """:func:`~tem_keras.distributed.chunks.run_chunk` with the worker's cache.

    Bad input (:class:`~tem_keras.errors.TEMInputError`) is returned as
    ``{"input_error": (problem, path)}`` rather than raised, so that it is reported once instead
    of being retried on every worker.
    """
    worker = get_worker()
    try:
        return run_chunk(task, worker.plugins[PLUGIN_NAME].cache, block, worker=worker.address)
    except TEMInputError as error:
        return {"input_error": (error.problem, error.path), "chunk": task.chunk}
