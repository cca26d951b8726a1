"""Prediction of whole experiments into a Zarr store, on a Dask cluster or in one process.

``predict_stack(model, x, out="video.zarr", client=client)`` (or ``tem-keras predict MODEL
INPUT... -o OUT.zarr --scheduler local:N | tcp://HOST:PORT``) cuts the frames into chunks,
runs one task per chunk on the cluster's workers (each loads the model once) and writes masks,
optional probabilities, thresholds, per-chunk particle tables (Parquet) and provenance into the
store; a rerun of the same job computes only the chunks not yet finished.

Modules: :mod:`.cluster` (the job: :func:`predict_to_store`, :func:`connect`), :mod:`.store`
(:class:`PredictionStore`, the layout and its markers), :mod:`.chunks` (one task's work and the
per-process :class:`ModelCache`), :mod:`.worker` (the Dask worker plugin), :mod:`.inputs`
(inputs and model identity), :mod:`.extra` (the optional dependencies).

Importing this package imports neither Dask nor Zarr nor TensorFlow; they are needed (the
``cluster`` extra: ``pip install "tem_keras[cluster]"``) when a job runs.
"""

from importlib import import_module

_API = {"predict_to_store": ".cluster", "connect": ".cluster", "StoreReport": ".cluster",
        "tracks_of": ".cluster", "PredictionStore": ".store", "ModelCache": ".chunks"}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(import_module(_API[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tem_keras.distributed' has no attribute {name!r}")
