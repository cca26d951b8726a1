"""Prediction on micrographs of any size, stacks and videos: tiles, blending, thresholds, evaluation.

:func:`predict` takes a model (or run folder, or export folder) and an image, a file, a list of
files, a folder, a stack or a video, and returns :class:`Prediction` objects: the label mask,
optionally the class probabilities, the threshold used and the pixel size. :func:`predict_stack`
is the same as a generator, one frame in memory at a time, for long videos; ``frames="i/n"`` takes
the i-th of n contiguous shards so that many processes or machines can share one video.
:func:`evaluate` scores a model on a dataset folder.

One home per concept:

- :mod:`~tem_keras.inference.options` — :class:`PredictOptions`, how to predict, checked once
  at the door and passed along by every entry point;
- :mod:`~tem_keras.inference.predict` — :func:`predict`, :func:`predict_stack`,
  :func:`predict_image` (how an image is predicted, step by step);
- :mod:`~tem_keras.inference.stream` — :class:`Prediction` and the frame-by-frame generator that
  :func:`predict_stack` and the Dask workers of :mod:`tem_keras.distributed` share;
- :mod:`~tem_keras.inference.predictor` — :class:`Predictor`, one per model: the network
  rewritten for inference, its mixed-precision copies, the traced call, the geometry, the memory
  budget, and the engine that batches tiles of consecutive frames;
- :mod:`~tem_keras.inference.precision`, :mod:`~tem_keras.inference.compiled` — precision
  policies and the traced (frozen) model call;
- :mod:`~tem_keras.inference.tiling` — padding, tile layout, blending windows, shards;
- :mod:`~tem_keras.inference.sources` — inputs as sources of frames, read ahead in a thread;
- :mod:`~tem_keras.inference.masks` — thresholds and labels from probabilities;
- :mod:`~tem_keras.inference.evaluate` — scores on a labelled set, best threshold;
- :mod:`~tem_keras.inference.output` — overlays, files, particle rows, threshold curves.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Comput. Mater. 6, 108 (2020) — Otsu thresholds of the softmax map, precision/recall/F1.

K. Sytwu, C. Groschner, M. C. Scott, "Understanding the influence of receptive field and network
complexity in neural network-guided TEM image analysis", Microsc. Microanal. 28, 1896 (2022) —
receptive fields, which set the tile overlap.

O. Ronneberger, P. Fischer, T. Brox, "U-Net", MICCAI 2015 — overlap-tile strategy for seamless
segmentation of arbitrarily large images.
"""

from .. import _env  # noqa: F401
from ..artifacts import load as load_model
from ..hardware import PerformanceHint
from .compiled import FREEZE_MAX_WEIGHT_BYTES, traced_call
from .evaluate import evaluate
from .masks import foreground_probability, labels_from_probabilities
from .options import PredictOptions
from .output import overlay, particle_rows, plot_threshold_curve, save_prediction
from .precision import resolve_precision, with_precision
from .predict import Prediction, predict, predict_image, predict_stack
from .predictor import (
    DEFAULT_MEMORY_BYTES,
    MAX_AUTO_TILE,
    MIN_AUTO_TILE,
    WORKSPACE_FACTOR,
    Predictor,
)
from .sources import input_sources, select_frames
from .tiling import (
    DEFAULT_TILE_SIZE,
    MAX_MARGIN,
    MAX_WHOLE_PIXELS,
    TileLayout,
    pad_to_multiple,
    shard_range,
    tile_layout,
)

__all__ = ["Prediction", "PredictOptions", "PerformanceHint", "Predictor", "predict", "predict_stack", "predict_image",
           "evaluate", "load_model", "labels_from_probabilities", "foreground_probability",
           "shard_range", "tile_layout", "TileLayout", "pad_to_multiple", "save_prediction", "overlay",
           "particle_rows",
           "plot_threshold_curve", "input_sources", "select_frames", "resolve_precision",
           "with_precision", "traced_call", "MAX_WHOLE_PIXELS", "DEFAULT_TILE_SIZE", "MAX_MARGIN",
           "DEFAULT_MEMORY_BYTES", "WORKSPACE_FACTOR", "MIN_AUTO_TILE", "MAX_AUTO_TILE",
           "FREEZE_MAX_WEIGHT_BYTES"]
