"""Prediction on micrographs of any size, stacks and videos: tiles, blending, thresholds, evaluation.

:func:`predict` takes a model (or run folder) and an image, a file, a list of files, a folder, a
stack or a video, and returns :class:`Prediction` objects: the label mask, optionally the class
probabilities, the threshold used and the pixel size. :func:`predict_stack` is the same as a
generator, one frame in memory at a time, for long videos; ``frames="i/n"`` takes the i-th of n
contiguous shards so that many processes or machines can share one video. :func:`evaluate` scores
a model on a dataset folder.

How an image is predicted
-------------------------
1. The run's :class:`~tem_keras.data.preprocess.Preprocessing` (outlier removal, per-image
   standardisation) is applied to the whole image, as in training; for many frames this runs in a
   background thread, two frames ahead of the model.
2. The image is reflect-padded at the bottom and right to a multiple of the model's down-sampling
   factor ``d`` (:func:`~tem_keras.models.receptive_field.downsampling_factor`).
3. Images whose activations fit the memory budget (``max_memory_gb``; and at most ``max_pixels``
   when given) are predicted whole, unless ``tile_size`` is given. Larger images are
   cut into square tiles (side a multiple of ``d``, origins on the ``d`` grid so that pooling sees the
   same pixel phases as for the whole image) that overlap by ``overlap`` pixels. Tiles of one or
   many images are batched into one call of a traced ``tf.function`` (one trace per model).
4. Overlapping tiles are blended by a separable window: within ``margin`` pixels of an inner tile
   edge the weight is 0 (the receptive field of those pixels leaves the tile, their output is
   affected by the tile's zero padding), then rises as a squared sine over the rest of the overlap
   to 1; the weights are normalised to sum to 1 at every pixel. With the default overlap
   (receptive field plus a ramp) every blended pixel comes from tiles that saw its whole receptive
   field, so the tiled prediction equals the whole-image prediction up to float round-off, apart
   from a band of about ``receptive_field / 2`` pixels along the image border where the padding
   differs (the first row/column of tiles starts at the image border exactly as the whole image
   does). Memory is bounded by one image, its probability map and one batch of tiles.

Masks
-----
For 2-class (or 1-channel sigmoid) models the mask is ``probability(particle) >= threshold`` with
``threshold`` 0.5 by default (the same as argmax), a number, or ``"otsu"`` (Otsu's threshold of the
probability map of each image, Horwath et al. 2020). For ``K > 2`` classes the mask is the argmax
over the classes; with a threshold, a pixel is background unless ``1 - p(background)`` reaches it,
and then gets the most probable foreground class. :func:`evaluate` also reports the threshold that
maximises F1 (or another metric) on a labelled set (``best_threshold`` of :mod:`tem_keras.metrics`);
pass it to :func:`predict` for new images.

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

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _env  # noqa: F401
from .distribute import PerformanceHint
from .errors import TEMInputError

__all__ = ["Prediction", "PerformanceHint", "predict", "predict_stack", "predict_image", "evaluate",
           "load_model", "labels_from_probabilities", "shard_range", "tile_layout", "pad_to_multiple",
           "save_prediction", "overlay", "plot_threshold_curve"]

#: images up to this many pixels are predicted whole when ``tile_size`` and ``max_pixels`` are None
#: and the model's activation memory cannot be estimated
MAX_WHOLE_PIXELS = 2048 * 2048
#: largest tile side when an image is too large to be predicted whole, no ``tile_size`` is given
#: and the model's activation memory cannot be estimated (else the side that fits the budget)
DEFAULT_TILE_SIZE = 1024
#: the smallest and largest tile sides chosen to fit ``max_memory_gb`` when no ``tile_size`` is given
MIN_AUTO_TILE, MAX_AUTO_TILE = 256, 8192
#: the tile margin derived from the receptive field is capped at this many pixels
MAX_MARGIN = 256
#: activation memory of one model call, when ``max_memory_gb`` is None: min(1.5 GiB, RAM / 4).
#: With TensorFlow's runtime (~0.9 GB) a 4096² image then peaks below 3 GB (Horwath UNet with
#: oneDNN: 2.04 GiB; 2 GiB gave 3.07 GiB for 2 % less time: ``ab_library.py --only budget``)
DEFAULT_MEMORY_BYTES = 3 * 1024**3 // 2
#: models with up to this many bytes of weights run with them frozen into the graph: freezing
#: and the first call cost about 20 times the weights' bytes at their peak (UNet-64: +2.4 GB for
#: 124 MB of weights); larger models run with their variables
FREEZE_MAX_WEIGHT_BYTES = 100 * 1024**2
#: measured peak of a model call / liveness estimate of its activations (oneDNN workspace,
#: weight reorders, TensorFlow's allocator; UNet-64 on 1024² tiles, float32)
WORKSPACE_FACTOR = 1.5


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass(repr=False)
class Prediction:
    """The segmentation of one image or frame.

    Attributes
    ----------
    mask : ndarray ``[H, W]`` uint8
        Labels: 0 background, 1..K-1 classes (1 = particle for binary models).
    probabilities : ndarray ``[H, W, C]`` float32 or None
        Class probabilities; only when asked for (``return_probabilities=True``).
    threshold : float or None
        Threshold applied to the particle probability (None: argmax of a multi-class model).
    pixel_size_nm : float or None
        From the file (or the ``pixel_size_nm`` argument).
    source : str or None
        The file the image came from.
    frame : int or None
        Frame index inside ``source`` when it holds several frames.
    index : int
        Position in the whole input (all files and frames, before sharding).
    metadata : dict
        The micrograph's metadata.
    image : ndarray ``[H, W]`` float32 or None
        The micrograph as read (before preprocessing); only with ``return_image=True``.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None = None
    threshold: float | None = None
    pixel_size_nm: float | None = None
    source: str | None = None
    frame: int | None = None
    index: int = 0
    metadata: dict = field(default_factory=dict)
    image: np.ndarray | None = None

    @property
    def name(self) -> str:
        """A file-name stem for outputs: ``<stem>`` or ``<stem>_f<frame>``."""
        if not self.source:
            return f"image{self.index:05d}" if self.frame is None else f"frame{self.frame:05d}"
        stem = Path(self.source).stem
        return stem if self.frame is None else f"{stem}_f{self.frame:05d}"

    def __repr__(self) -> str:
        h, w = self.mask.shape
        fraction = float(np.count_nonzero(self.mask)) / max(self.mask.size, 1)
        return (f"Prediction({self.name!r}, {h}×{w}, particle fraction {fraction:.3f}, "
                f"threshold={self.threshold}, probabilities={'yes' if self.probabilities is not None else 'no'})")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

@dataclass
class _ModelInfo:
    """A model with its preprocessing, tuned threshold and run (what :func:`load_model` finds)."""

    model: object
    preprocessing: object | None = None
    threshold: float | None = None
    run: object | None = None


def load_model(model_or_path) -> _ModelInfo:
    """The model, preprocessing and tuned threshold behind a model, Run, run folder or file.

    Parameters
    ----------
    model_or_path : keras.Model, Run, str or Path
        A Keras model; a :class:`~tem_keras.training.Run`; a run folder (``config.json`` +
        ``best.keras``); an export folder (``tem_keras.json``, opened by
        :func:`tem_keras.export.load`); or a ``.keras`` file (default preprocessing).
    """
    import keras

    from .training import Run

    if isinstance(model_or_path, _ModelInfo):
        return model_or_path
    if isinstance(model_or_path, keras.Model):
        return _ModelInfo(model_or_path)
    if isinstance(model_or_path, Run):
        return _run_info(model_or_path)
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a keras.Model, a Run or a path, got {type(model_or_path).__name__}")
    path = Path(model_or_path)
    if not path.exists():
        raise TEMInputError("no such model file or run folder", path)
    from . import models  # noqa: F401  (registers the custom layers)

    if path.is_dir():
        if (path / "config.json").is_file() and (path / "best.keras").is_file():
            from .validation import load_run  # hardening: damaged best.keras, empty history.csv

            return _run_info(load_run(path))
        if (path / "tem_keras.json").is_file():  # an export folder: preprocessing and threshold inside
            from .export import load

            return load(path)
        if (path / "model.keras").is_file():
            if any((path / n).exists() for n in ("saved_model", "README.md")):  # hardening:
                from .export import load  # an export without tem_keras.json is refused by name

                return load(path)
            return _ModelInfo(_load_keras(path / "model.keras"))
        raise TEMInputError("is neither a run folder (config.json + best.keras) nor an export "
                            "folder (tem_keras.json + model.keras)", path)
    if path.suffix.lower() != ".keras":
        raise TEMInputError("expected a .keras model file or a run folder", path)
    return _ModelInfo(_load_keras(path))


def _load_keras(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt or foreign file: say so, not a Keras traceback
        raise TEMInputError(f"could not be loaded as a Keras model ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200] if str(error) else 'no details'})",
                            path) from error


def _run_info(run) -> _ModelInfo:
    threshold = None
    thresholds = Path(run.path) / "thresholds.json"
    if thresholds.is_file():
        import json

        value = json.loads(thresholds.read_text()).get("threshold")
        threshold = float(value) if isinstance(value, (int, float)) else None
    preprocessing = run.preprocessing if "preprocessing" in run.config else None
    return _ModelInfo(run.model, preprocessing, threshold, run)


_PRECISIONS = ("float32", "bfloat16", "float16", "auto")
_CLONES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_GEOMETRY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _resolve_precision(mixed_precision: str) -> str:
    if mixed_precision not in _PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {_PRECISIONS}, got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        from .distribute import BFLOAT16_MIN_SPEEDUP, bfloat16_speedup

        return "bfloat16" if bfloat16_speedup() >= BFLOAT16_MIN_SPEEDUP else "float32"
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "bfloat16" if capability >= (8, 0) else "float16" if capability >= (7, 0) else "float32"


def _with_precision(model, precision: str):
    """``model`` rebuilt under the ``mixed_<precision>`` policy with the same weights (cached).

    Every float32 layer is re-created from its config with ``dtype="mixed_bfloat16"`` (or
    float16): variables stay float32, computations run in the low precision; the output layers
    (the softmax head) stay float32. Predictions are cast back to float32.
    """
    if precision == "float32":
        return model
    import keras

    cache = _CLONES.setdefault(model, {})
    if precision not in cache:
        policy = f"mixed_{precision}"
        keep = {"softmax"}  # the output layers stay float32 (stable softmax)
        for tensor in model.outputs:
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                keep.add(history[0].name)

        def clone(layer):
            config = layer.get_config()
            dtype = config.get("dtype")
            name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
            if name in (None, "float32") and layer.name not in keep:
                config["dtype"] = policy
            return layer.__class__.from_config(config)

        try:
            copy = keras.models.clone_model(model, clone_function=clone)
        except Exception as error:
            raise ValueError(f"model {model.name!r} cannot be rebuilt under {policy!r} "
                             f"({type(error).__name__}: {error}); use mixed_precision='float32'") from error
        copy.set_weights(model.get_weights())
        cache[precision] = copy
    return cache[precision]


def _compiled(model):
    """The model call traced once per model for any batch and tile shape; small models' weights
    frozen in (:class:`_Frozen`)."""
    fn = _FUNCTIONS.get(model)
    if fn is None:
        import tensorflow as tf

        channels = int(model.inputs[0].shape[-1] or 1)
        ref = weakref.ref(model)  # the cache must not keep the model alive

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])
        def traced(x):
            return tf.cast(ref()(x, training=False), tf.float32)

        small = _weight_bytes(model) <= FREEZE_MAX_WEIGHT_BYTES
        fn = _FUNCTIONS[model] = _Frozen(traced) if small else _Traced(traced)
    return fn


def _weight_bytes(model) -> int:
    """Bytes of the model's weights in float32."""
    return sum(4 * math.prod(v.shape) for v in getattr(model, "weights", ()))


class _Traced:
    """A traced model call (weights read from the model's variables)."""

    def __init__(self, traced):
        self.traced = traced

    def __call__(self, x):
        return self.traced(x)

    def experimental_get_tracing_count(self) -> int:
        return self.traced.experimental_get_tracing_count()


class _Frozen(_Traced):
    """A traced model call with its variables turned into graph constants.

    oneDNN then reorders each convolution's weights once into its preferred blocked layout and
    keeps them, instead of reading them from a variable in plain layout on every call: the
    4-level 64-filter UNet at 1024² runs 6.5 → 5.0 s on 2 cores, the residual UNet 3 % faster.
    The price is memory: freezing and the first call took about 20 times the weights' bytes
    more at their peak (UNet-64: +2.4 GB), so only models with up to
    :data:`FREEZE_MAX_WEIGHT_BYTES` of weights are frozen. Falls back to the traced
    function when the graph cannot be frozen (e.g. a SavedModel-only export).
    """

    def __init__(self, traced):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        from tensorflow.python.util import deprecation

        super().__init__(traced)
        concrete = traced.get_concrete_function()
        try:
            with deprecation.silence():  # it calls TF1's extract_sub_graph, which warns each time
                self.call = convert_variables_to_constants_v2(concrete)
        except Exception:  # noqa: BLE001 - any graph that cannot be frozen runs as traced
            self.call = concrete

    def __call__(self, x):
        import tensorflow as tf

        return tf.nest.flatten(self.call(tf.convert_to_tensor(x, tf.float32)))[0]


def _geometry(model) -> tuple[int, int]:
    """``(down-sampling factor, receptive field)`` of a model; the field is None when unknown."""
    if model not in _GEOMETRY:
        from .models.receptive_field import downsampling_factor, receptive_field

        try:
            d = max(1, int(downsampling_factor(model)))
        except Exception:  # graph not walkable: assume a 5-level encoder
            d = 32
        try:
            rf = receptive_field(model)
            rf = None if math.isinf(rf) else int(rf)
        except Exception:
            rf = None
        _GEOMETRY[model] = (d, rf)
    return _GEOMETRY[model]


# --------------------------------------------------------------------------------------------
# Geometry: padding, tiles, windows, shards
# --------------------------------------------------------------------------------------------

def pad_to_multiple(image: np.ndarray, multiple: int):
    """Reflect-pad ``[H, W]`` at the bottom and right so both sides are multiples of ``multiple``.

    Returns the padded image and the ``(H, W)`` to crop back to. Images smaller than the padding
    are padded symmetrically (repeating), so even a 3×3 image reaches one down-sampling multiple.
    """
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "symmetric"
        widths = ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, widths, mode=mode)
    return image, (h, w)


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _origins(length: int, tile: int, stride: int) -> np.ndarray:
    if length <= tile:
        return np.array([0])
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return np.array(sorted(set(starts)))


def _ramp(length: int, overlap: int, margin: int) -> np.ndarray:
    """Rising edge of a window of ``length``: 0 for ``margin`` px, squared sine up to ``overlap - margin``."""
    margin = min(margin, overlap // 2)
    ramp = overlap - 2 * margin
    x = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    w[x < margin] = 0.0
    if ramp > 0:
        inside = (x >= margin) & (x < margin + ramp)
        w[inside] = np.sin(0.5 * np.pi * (x[inside] - margin + 0.5) / ramp) ** 2
    return w


def _axis_weights(origins: np.ndarray, tile: int, length: int, margin: int) -> list[np.ndarray]:
    """1-D blending weights of the tiles along one axis, normalised to sum to 1 at every pixel."""
    n = len(origins)
    weights = []
    for i, start in enumerate(origins):
        w = np.ones(tile)
        if i > 0:
            w *= _ramp(tile, int(origins[i - 1] + tile - start), margin)
        if i < n - 1:
            w *= _ramp(tile, int(start + tile - origins[i + 1]), margin)[::-1]
        weights.append(w)
    total = np.zeros(length)
    for start, w in zip(origins, weights):
        total[start:start + tile] += w
    if np.any(total <= 0):  # cannot happen with margin <= overlap / 2; guard against a silent hole
        raise AssertionError("tile weights leave pixels uncovered")
    return [(w / total[s:s + tile]).astype(np.float32) for s, w in zip(origins, weights)]


@dataclass
class TileLayout:
    """Where the tiles of one (padded) image go and how they are weighted.

    Attributes
    ----------
    shape : (int, int)
        Padded image size (multiples of the down-sampling factor).
    tile : (int, int)
        Tile height and width (the padded size along an axis shorter than the tile).
    rows, cols : ndarray
        Tile origins along each axis (multiples of the down-sampling factor).
    row_weights, col_weights : list of ndarray
        Normalised 1-D blending weights per origin; tile ``(i, j)`` has weight
        ``row_weights[i][:, None] * col_weights[j][None, :]``.
    margin : int
        Pixels at inner tile edges that get no weight.
    overlap : int
        Nominal overlap of neighbouring tiles.
    """

    shape: tuple
    tile: tuple
    rows: np.ndarray
    cols: np.ndarray
    row_weights: list
    col_weights: list
    margin: int
    overlap: int

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self):
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                yield int(r), int(c), self.row_weights[i], self.col_weights[j]


def tile_layout(shape, downsampling: int, receptive_field: int | None, *, tile_size: int | None = None,
                overlap="auto", max_pixels: int = MAX_WHOLE_PIXELS,
                default_tile: int = DEFAULT_TILE_SIZE) -> TileLayout:
    """Tiles covering an image of ``shape`` (already padded to a multiple of ``downsampling``).

    Parameters
    ----------
    shape : (int, int)
        Padded image size.
    downsampling : int
        Tile sides and origins are multiples of it.
    receptive_field : int or None
        Of the model; sets the default overlap and the margin (``ceil(rf / 2)``, at most
        :data:`MAX_MARGIN`). None: 64 px assumed.
    tile_size : int, optional
        Tile side (rounded up to a multiple of ``downsampling``). Default: the whole image when
        its area is at most ``max_pixels``, otherwise ``default_tile``.
    overlap : int or "auto"
        Pixels shared by neighbouring tiles. ``"auto"``: twice the margin plus a squared-sine ramp of
        ``max(downsampling, margin / 2)`` pixels, rounded up to the down-sampling, at most half a tile.
        An overlap below twice the margin cannot be exact; the margin then shrinks to a quarter
        of the overlap and the rest is blended.
    max_pixels, default_tile : int
        See ``tile_size``.
    """
    h, w = shape
    d = max(1, int(downsampling))
    auto = tile_size is None
    if auto:
        if h * w <= max_pixels:
            return TileLayout((h, w), (h, w), np.array([0]), np.array([0]),
                              [np.ones(h, np.float32)], [np.ones(w, np.float32)], 0, 0)
        tile_size = default_tile
    tile = _round_up(max(int(tile_size), d), d)
    rf = 64 if receptive_field is None else int(receptive_field)
    margin = min(int(math.ceil(rf / 2)), MAX_MARGIN)
    largest = max(((tile // 2) // d) * d, 0)
    if overlap == "auto":
        overlap = min(_round_up(2 * margin + max(d, margin / 2), d), largest)
    overlap = int(overlap)
    if overlap < 0 or overlap > tile - d:
        raise ValueError(f"overlap must be between 0 and tile_size - {d} = {tile - d}, got {overlap}")
    exact = overlap >= 2 * margin
    if not exact:
        margin = overlap // 4
    if auto and tile - overlap >= d:
        # the fewest tiles of at most ``default_tile``, each shrunk to just cover the image: less
        # overlap predicted twice (4096² with 2368 px tiles: 4 tiles of 2176², not of 2368²)
        need = 0
        for length in (h, w):
            n = max(1, math.ceil((length - overlap) / (tile - overlap)))
            need = max(need, math.ceil((length + (n - 1) * overlap) / n))
        tile = min(tile, max(_round_up(need, d), overlap + d))
    stride = max(d, ((tile - overlap) // d) * d)
    th, tw = min(tile, h), min(tile, w)
    rows, cols = _origins(h, th, stride), _origins(w, tw, stride)
    if not exact and len(rows) * len(cols) > 1:
        need = 2 * min(int(math.ceil(rf / 2)), MAX_MARGIN)
        warnings.warn(f"tiles of {tile} px overlapping by {overlap} px cannot reproduce whole-image "
                      f"prediction for a receptive field of {rf} px (that needs an overlap >= {need} "
                      f"px, at most half a tile): tile borders may show; use overlap >= {need} and "
                      f"tile_size >= {_round_up(2 * need + 2 * d, d)}", RuntimeWarning, stacklevel=2)
    return TileLayout((h, w), (th, tw), rows, cols, _axis_weights(rows, th, h, margin),
                      _axis_weights(cols, tw, w, margin), margin, overlap)


def shard_range(n_frames: int, frames) -> range:
    """The frame indices selected by ``frames``.

    Parameters
    ----------
    n_frames : int
        Frames in the input (all files together).
    frames : None, "i/n", (i, n), slice, range or sequence of int
        ``"i/n"`` (0-based ``i < n``) is the i-th of ``n`` contiguous, near-equal ranges: the
        shards ``0/n … (n-1)/n`` partition the frames exactly, so ``n`` processes or machines can
        split a long video (``tem-keras predict --shard i/n``).
    """
    if frames is None:
        return range(n_frames)
    if isinstance(frames, str) or (isinstance(frames, tuple) and len(frames) == 2
                                   and all(isinstance(v, int) for v in frames)):
        try:
            i, n = (int(v) for v in (frames.split("/") if isinstance(frames, str) else frames))
        except ValueError:
            raise ValueError(f"a shard is written 'i/n' with 0 <= i < n, got {frames!r}") from None
        if not 0 <= i < n:
            raise ValueError(f"a shard is written 'i/n' with 0 <= i < n (0-based), got {frames!r}")
        return range(i * n_frames // n, (i + 1) * n_frames // n)
    if isinstance(frames, slice):
        return range(n_frames)[frames]
    indices = list(frames)
    bad = [i for i in indices if not -n_frames <= int(i) < n_frames]
    if bad:
        raise ValueError(f"frames {bad} do not exist: the input has {n_frames} frame(s)")
    return [int(i) % n_frames for i in indices]


# --------------------------------------------------------------------------------------------
# Inputs: everything becomes a list of sources of frames
# --------------------------------------------------------------------------------------------

@dataclass
class _Source:
    name: str | None          # path or None for arrays
    n: int                    # frames
    get: object               # i -> Micrograph
    multi: bool               # frames are numbered in outputs


def _array_source(array: np.ndarray, name=None) -> _Source:
    from .io import Micrograph

    if array.ndim == 2:
        return _Source(name, 1, lambda i: Micrograph(array, path=name), False)
    if array.ndim == 3:
        if array.shape[-1] in (3, 4) and array.shape[0] > 4:
            raise TEMInputError(f"a 3-D array of shape {array.shape} looks like a colour image "
                                "[H, W, channels]; convert it to grey [H, W] (or pass a stack "
                                "as [frames, H, W])", name)
        return _Source(name, len(array), lambda i: Micrograph(array[i], path=name), True)
    raise TEMInputError(f"expected an image [H, W] or a stack [frames, H, W], got shape "
                        f"{array.shape}", name)


def _sources(x) -> tuple[list[_Source], bool]:
    """The sources of ``x`` and whether ``x`` is one single image."""
    from .io import Micrograph, MicrographStack, read_stack

    if isinstance(x, Micrograph):
        return [_Source(x.path, 1, lambda i: x, False)], True
    if isinstance(x, MicrographStack):
        return [_Source(x.path, len(x), x.__getitem__, True)], False
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and not isinstance(x, (str, os.PathLike))):
        array = np.asarray(x)
        return [_array_source(array)], array.ndim == 2
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if path.is_dir() or (not path.exists() and any(c in str(x) for c in "*?[")):
            stack = read_stack(x)
            return [_Source(str(p), 1, (lambda i, k=k: stack[k]), False)
                    for k, p in enumerate(_stack_files(stack, x))], False
        stack = read_stack(path)
        single = len(stack) == 1
        return [_Source(str(path), len(stack), stack.__getitem__, not single)], single
    if isinstance(x, Sequence):
        if not len(x):
            raise TEMInputError("no images given (empty list)")
        out = []
        for item in x:
            sources, _ = _sources(item)
            out.extend(sources)
        return out, False
    raise TypeError(f"cannot predict on {type(x).__name__}: give an array, a path, a list of paths, "
                    "a folder or a MicrographStack")


def _stack_files(stack, pattern) -> list[str]:
    """File names behind a folder or pattern stack (read one header at a time would be slower)."""
    from .io import _image_files, _natural_key

    path = Path(pattern)
    if path.is_dir():
        return [str(p) for p in _image_files(path)]
    import glob

    return [str(p) for p in sorted((Path(p) for p in glob.glob(str(pattern))), key=_natural_key)
            if p.is_file()]


def _frames(sources: list[_Source], frames):
    """``(global index, source, frame)`` of the selected frames."""
    offsets = np.cumsum([0] + [s.n for s in sources])
    for g in shard_range(int(offsets[-1]), frames):
        k = int(np.searchsorted(offsets, g, side="right") - 1)
        yield g, sources[k], g - int(offsets[k])


# --------------------------------------------------------------------------------------------
# The engine: tiles of consecutive frames batched through one traced function
# --------------------------------------------------------------------------------------------

class _Job:
    """One frame in flight: its accumulator and the number of tiles still to come back."""

    def __init__(self, layout, crop, n_classes):
        self.layout, self.crop = layout, crop
        self.out = np.zeros((*layout.shape, n_classes), np.float32) if len(layout) > 1 else None
        self.pending = len(layout)


def _prepare(mg, preprocessing, d, rf, options, name):
    """Preprocess and pad one Micrograph; TEMInputError messages name the file."""
    try:
        data = preprocessing(mg.data)
    except TEMInputError as error:
        if error.path is None:
            raise TEMInputError(error.problem, name) from None
        raise
    padded, crop = pad_to_multiple(data, d)
    layout = tile_layout(padded.shape, d, rf, **options)
    return padded, crop, layout


def _stream(frames_iter, preprocessing, d, rf, options, prefetch: int):
    """Read and preprocess frames ahead of the model in a background thread.

    Yields ``(g, source, frame, Micrograph, (padded, crop, layout))`` in input order, with at
    most ``prefetch`` frames read ahead (memory stays bounded). Reading and preprocessing
    (NumPy/SciPy, which release the GIL) overlap with the model call. Errors (bad files) are
    re-raised in the caller's thread, in order, so the user sees our TEMInputError.

    A plain thread is used rather than ``tf.data.Dataset.from_generator``: an abandoned
    ``from_generator`` iterator (an error, or a caller that stops early) can hang the interpreter
    at exit, and the frames are NumPy work anyway.
    """
    def load(g, source, frame):
        mg = source.get(frame)
        name = source.name or mg.path
        return g, source, frame, mg, _prepare(mg, preprocessing, d, rf, options, name)

    if prefetch <= 0:
        for g, source, frame in frames_iter:
            yield load(g, source, frame)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending = deque()
    frames_iter = iter(frames_iter)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tem_keras_reader")
    try:
        for item in frames_iter:
            pending.append(executor.submit(load, *item))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True)


def _pixels_per_call(net, precision: str, max_memory_gb) -> float:
    """Input pixels one model call may take within the activation memory budget (inf: unknown)."""
    if max_memory_gb is None:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram = 4 * DEFAULT_MEMORY_BYTES
        budget = min(DEFAULT_MEMORY_BYTES, ram / 4)
    else:
        if not float(max_memory_gb) > 0:
            raise ValueError(f"max_memory_gb must be > 0, got {max_memory_gb!r}")
        budget = float(max_memory_gb) * 1024**3
    known = _ACTIVATION_BYTES.setdefault(net, {})
    if precision not in known:
        from .models.describe import activation_bytes_per_pixel

        known[precision] = activation_bytes_per_pixel(net, 4 if precision == "float32" else 2)
    per_pixel = known[precision]
    return budget / (WORKSPACE_FACTOR * per_pixel) if per_pixel > 0 else math.inf


_ACTIVATION_BYTES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _run_engine(info: _ModelInfo, frames_iter, *, preprocessing, tile_size, overlap, batch_size,
                max_pixels, mixed_precision, max_memory_gb=None, prefetch=2):
    """Yield ``(g, source, frame, Micrograph, probabilities [H, W, C])`` in input order.

    Tiles (or whole padded frames) of the same shape are stacked into batches of ``batch_size``
    across consecutive frames and sent through one traced function; a frame is yielded as soon
    as all its tiles are back, so at most the frames of one batch are held. A batch is also cut
    where its activations would exceed the memory budget (:func:`_pixels_per_call`), and with
    ``tile_size=None`` images above that budget are tiled rather than predicted whole.
    """
    model = info.model
    d, rf = _geometry(model)
    from .distribute import onednn_hint, tune_allocator
    from .models.optimize import for_inference

    tune_allocator()  # reuse freed activation buffers instead of page-faulting them in every call
    precision = _resolve_precision(mixed_precision)
    net = _with_precision(for_inference(model), precision)
    fn = _compiled(net)
    hint = onednn_hint(_weight_bytes(net))
    if hint:
        warnings.warn(hint, PerformanceHint, stacklevel=2)
    channels = int(model.inputs[0].shape[-1] or 1)
    n_classes = int(model.outputs[0].shape[-1] or 1)
    per_call = _pixels_per_call(net, precision, max_memory_gb)
    limit = per_call if max_pixels is None else min(int(max_pixels), per_call)
    options = dict(tile_size=tile_size, overlap=overlap,
                   max_pixels=MAX_WHOLE_PIXELS if math.isinf(limit) else int(limit),
                   default_tile=DEFAULT_TILE_SIZE if math.isinf(per_call) else
                   min(MAX_AUTO_TILE, max(MIN_AUTO_TILE, d * int(math.sqrt(per_call) // d))))
    batch_size = max(1, int(batch_size))
    jobs: list = []      # (g, source, frame, mg, _Job), input order
    queue: list = []     # (job, r, c, wr, wc, tile)

    def flush():
        if not queue:
            return
        tiles = np.stack([q[-1] for q in queue])[..., None]
        if channels > 1:
            tiles = np.repeat(tiles, channels, axis=-1)
        out = np.asarray(fn(tiles))  # a read-only view, no copy: whole frames are copied when done
        for (job, r, c, wr, wc, _), p in zip(queue, out):
            if job.out is None:
                job.out = p
            else:
                th, tw = p.shape[:2]
                job.out[r:r + th, c:c + tw] += p * (wr[:, None, None] * wc[None, :, None])
            job.pending -= 1
        queue.clear()

    def finished():
        while jobs and jobs[0][-1].pending == 0:
            g, source, frame, mg, job = jobs.pop(0)
            h, w = job.crop
            # a copy: a whole frame is a view into its batch, a tile accumulator is padded
            yield g, source, frame, mg, np.array(job.out[:h, :w], copy=True)

    for g, source, frame, mg, (padded, crop, layout) in _stream(frames_iter, preprocessing, d, rf,
                                                                options, prefetch):
        job = _Job(layout, crop, n_classes)
        jobs.append((g, source, frame, mg, job))
        th, tw = layout.tile
        for r, c, wr, wc in layout:
            if queue and (queue[0][-1].shape != (th, tw) or (len(queue) + 1) * th * tw > per_call):
                flush()
                yield from finished()
            queue.append((job, r, c, wr, wc, padded[r:r + th, c:c + tw]))
            if len(queue) >= batch_size:
                flush()
                yield from finished()
    flush()
    yield from finished()


# --------------------------------------------------------------------------------------------
# Thresholds and masks
# --------------------------------------------------------------------------------------------

def _foreground(probabilities: np.ndarray) -> np.ndarray:
    c = probabilities.shape[-1]
    if c == 1:
        return probabilities[..., 0]
    if c == 2:
        return probabilities[..., 1]
    return 1.0 - probabilities[..., 0]


def _check_threshold(threshold):
    if threshold is None or threshold == "otsu":
        return threshold
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            raise ValueError(f"threshold must be a number in [0, 1], 'otsu' or None, got {threshold!r}") from None
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def labels_from_probabilities(probabilities: np.ndarray, threshold=None) -> tuple[np.ndarray, float | None]:
    """Label mask (uint8) and the threshold used, from class probabilities ``[H, W, C]``.

    Parameters
    ----------
    probabilities : ndarray ``[..., C]``
        Softmax output (``C >= 2``) or a 1-channel sigmoid output.
    threshold : None, float or "otsu"
        None: 0.5 for binary models (the argmax), plain argmax for ``C > 2``. A number: the
        particle probability (``1 - p(background)`` for ``C > 2``) must reach it. ``"otsu"``:
        Otsu's threshold of that probability map (Horwath et al. 2020).
    """
    threshold = _check_threshold(threshold)
    c = probabilities.shape[-1]
    if threshold is None and c > 2:
        return probabilities.argmax(-1).astype(np.uint8), None
    fg = _foreground(probabilities)
    if threshold == "otsu":
        from .metrics import otsu_threshold

        threshold = float(otsu_threshold(fg))
    elif threshold is None:
        threshold = 0.5
    mask = fg >= threshold
    if c > 2:
        return np.where(mask, 1 + probabilities[..., 1:].argmax(-1), 0).astype(np.uint8), threshold
    return mask.astype(np.uint8), threshold


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def predict_stack(model_or_path, x, *, frames=None, tile_size: int | None = None, overlap="auto",
                  batch_size: int = 4, threshold=None, return_probabilities: bool = False,
                  preprocessing=None, mixed_precision: str = "float32",
                  max_pixels: int | None = None, max_memory_gb: float | None = None,
                  pixel_size_nm: float | None = None, progress: bool = False,
                  return_image: bool = False) -> Iterator[Prediction]:
    """Predict frame by frame: a generator of :class:`Prediction`, one frame in memory at a time.

    Frames are read and preprocessed two frames ahead of the model in a background thread; tiles
    of consecutive frames share batches. Parameters as :func:`predict`; ``frames`` picks a shard
    (``"i/n"``), a slice or a list of frame indices across all inputs (see :func:`shard_range`).
    """
    from .validation import check_predict_arguments, check_predict_input  # hardening: at the door

    check_predict_input(x)
    check_predict_arguments(tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            mixed_precision=mixed_precision, max_pixels=max_pixels,
                            max_memory_gb=max_memory_gb, pixel_size_nm=pixel_size_nm,
                            return_probabilities=return_probabilities, return_image=return_image,
                            progress=progress)
    info = load_model(model_or_path)
    threshold = _check_threshold(info.threshold if threshold is None else threshold)
    if preprocessing is None:
        from .data.preprocess import Preprocessing

        preprocessing = info.preprocessing or Preprocessing()
    sources, _ = _sources(x)
    selected = list(_frames(sources, frames))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(selected), unit="frame", desc="predict")
    try:
        for g, source, frame, mg, probabilities in _run_engine(
                info, iter(selected), preprocessing=preprocessing, tile_size=tile_size,
                overlap=overlap, batch_size=batch_size, max_pixels=max_pixels,
                mixed_precision=mixed_precision, max_memory_gb=max_memory_gb,
                prefetch=2 if len(selected) > 1 else 0):
            mask, used = labels_from_probabilities(probabilities, threshold)
            if bar is not None:
                bar.update(1)
            yield Prediction(mask, probabilities if return_probabilities else None, used,
                             mg.pixel_size_nm if mg.pixel_size_nm is not None else pixel_size_nm,
                             source.name or mg.path, frame if source.multi else None, g,
                             dict(mg.metadata), mg.data if return_image else None)
    finally:
        if bar is not None:
            bar.close()


def predict(model_or_path, x, *, tile_size: int | None = None, overlap="auto", batch_size: int = 4,
            threshold=None, return_probabilities: bool = False, frames=None, preprocessing=None,
            mixed_precision: str = "float32", max_pixels: int | None = None,
            max_memory_gb: float | None = None, pixel_size_nm: float | None = None,
            progress: bool = False, return_image: bool = False):
    """Segment micrographs of any size with a trained model.

    Parameters
    ----------
    model_or_path : keras.Model, Run, str or Path
        A model, a :class:`~tem_keras.training.Run`, a run folder, an export folder or a ``.keras``
        file. A run's preprocessing (and threshold from ``thresholds.json``) is used; for a bare
        model the default :class:`~tem_keras.data.preprocess.Preprocessing`.
    x : ndarray, Micrograph, path, list of paths, folder, glob pattern or MicrographStack
        ``[H, W]`` array or one single-frame file: one image. ``[T, H, W]`` array, a multi-frame
        file (dm3/dm4/ser/emd/tif/mrc/npy/h5 stack, video), a folder, a pattern or a list: many.
    tile_size : int, optional
        Tile side (a multiple of the model's down-sampling factor; rounded up). Default: whole
        images when they fit ``max_memory_gb`` (and ``max_pixels``), otherwise the fewest tiles
        that fit it (at most 8192 px; 1024 px when the model's memory cannot be estimated), each
        shrunk to just cover the image.
    overlap : int or "auto"
        Pixels shared by neighbouring tiles; ``"auto"`` = receptive field + a blending ramp, so
        the result equals whole-image prediction (see :func:`tile_layout`).
    batch_size : int
        Tiles (or whole frames) per model call, at most (see ``max_memory_gb``).
    threshold : None, float or "otsu"
        See :func:`labels_from_probabilities`. None: the run's tuned threshold if it has one
        (``thresholds.json``), else 0.5 / argmax.
    return_probabilities : bool
        Keep the ``[H, W, C]`` float32 probabilities in the result.
    frames : None, "i/n", slice or list of int
        Frames to predict (all by default); ``"i/n"`` is the i-th of n contiguous shards.
    preprocessing : Preprocessing, optional
        Overrides the run's.
    mixed_precision : {"float32", "bfloat16", "float16", "auto"}
        Run the model under a ``mixed_*`` policy: it is rebuilt layer by layer from its config
        with that policy and the same weights (cached per model); probabilities are float32.
        ``"auto"``: bfloat16 on GPUs of compute capability ≥ 8, float16 on 7.x; on CPUs
        bfloat16 where it is measured faster than float32
        (:func:`tem_keras.distribute.bfloat16_speedup`: AMX yes, AVX512_BF16 alone no), else
        float32.
        Expect differences of ~1e-2 in probabilities.
    max_pixels : int, optional
        Largest image predicted whole when ``tile_size`` is None (besides the memory budget).
    max_memory_gb : float, optional
        Budget for the activations of one model call (estimated from the graph by
        :func:`tem_keras.models.describe.activation_bytes_per_pixel`, times
        :data:`WORKSPACE_FACTOR`): batches are cut to fit it, and with ``tile_size=None`` images
        larger than it are tiled. Default: min(1.5 GiB, a quarter of the RAM). A 4-level 64-filter
        UNet needs about 1.6 GB per 1024² tile in float32, the residual UNet 80 MB.
    pixel_size_nm : float, optional
        Used for images whose file has no calibration.
    progress : bool
        tqdm progress bar over the frames.
    return_image : bool
        Keep the raw image in the result (for overlays and intensity measurements).

    Returns
    -------
    Prediction or list of Prediction
        One :class:`Prediction` for one image; a list (input order) for many. Use
        :func:`predict_stack` to stream long stacks without keeping all results.

    Raises
    ------
    TEMInputError
        Unreadable files, NaN pixels, constant images; the message names the file.

    Examples
    --------
    >>> result = predict("runs/unet_seed0", "particles.dm4", threshold="otsu")   # doctest: +SKIP
    >>> result.mask.shape, result.threshold                                     # doctest: +SKIP
    ((4096, 4096), 0.43)
    """
    from .validation import check_predict_arguments, check_predict_input  # hardening: at the door

    check_predict_input(x)
    check_predict_arguments(tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            mixed_precision=mixed_precision, max_pixels=max_pixels,
                            max_memory_gb=max_memory_gb, pixel_size_nm=pixel_size_nm,
                            return_probabilities=return_probabilities, return_image=return_image,
                            progress=progress)
    _, single = _sources(x) if frames is None else (None, False)
    results = list(predict_stack(model_or_path, x, frames=frames, tile_size=tile_size, overlap=overlap,
                                 batch_size=batch_size, threshold=threshold,
                                 return_probabilities=return_probabilities, preprocessing=preprocessing,
                                 mixed_precision=mixed_precision, max_pixels=max_pixels,
                                 max_memory_gb=max_memory_gb, pixel_size_nm=pixel_size_nm, progress=progress,
                                 return_image=return_image))
    return results[0] if single else results


def predict_image(model, image, *, preprocessing=None, batch_size: int = 1, **kwargs) -> np.ndarray:
    """Class probabilities ``[H, W, C]`` (float32) of one 2-D image (array, Micrograph or file).

    The probability-only shortcut of :func:`predict` (same keyword arguments), used by
    :meth:`tem_keras.training.Run.predict`.

    Raises
    ------
    TEMInputError
        For 3-D input or a multi-frame file: use :func:`predict_stack` (or ``read_stack``).
    """
    from .io import Micrograph

    if not isinstance(image, Micrograph):
        if isinstance(image, (str, os.PathLike)):
            from .io import read_stack

            stack = read_stack(image)
            if len(stack) != 1:
                raise TEMInputError(f"holds {len(stack)} frames; predict_image takes one 2-D image: "
                                    "use predict_stack(model, path) or read_stack(path)", image)
            image = stack[0]
        else:
            array = np.asarray(image)
            if array.ndim != 2:
                raise TEMInputError(f"predict_image takes one 2-D image [H, W], got shape {array.shape}; "
                                    "for a stack [frames, H, W] use predict_stack or read_stack")
            image = Micrograph(array)
    return predict(model, image, preprocessing=preprocessing, batch_size=batch_size,
                   return_probabilities=True, **kwargs).probabilities


def overlay(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 picture of ``image`` (1–99 % contrast stretch) with the mask tinted and outlined.

    Class 1 is red, 2 green, 3 blue, ...; particle outlines are drawn in full colour.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, (1, 99))
    grey = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = np.array([[1, 0.15, 0.1], [0.1, 0.9, 0.2], [0.2, 0.4, 1], [1, 0.9, 0.1], [0.9, 0.2, 1]])
    for k in range(1, int(mask.max(initial=0)) + 1):
        region = mask == k
        if not region.any():
            continue
        colour = colours[(k - 1) % len(colours)]
        rgb[region] = (1 - alpha) * rgb[region] + alpha * colour
        edge = region & ~ndimage.binary_erosion(region)
        rgb[edge] = colour
    return (rgb * 255 + 0.5).astype(np.uint8)


def save_prediction(prediction: Prediction, out_dir, *, mask_format: str = "png",
                    probabilities: bool = False, overlay_png: bool = False,
                    overwrite: bool = False) -> dict:
    """Write a :class:`Prediction` into ``out_dir`` as ``<name>_mask.<png|tif>``, optionally
    ``<name>_probabilities.tif`` (float32, one page per class, pixel size in nm) and
    ``<name>_overlay.png``.

    Returns the paths written, by kind. Existing files are kept unless ``overwrite``.
    """
    from .io import write_mask, write_probabilities

    out_dir = Path(out_dir)
    written = {"mask": write_mask(out_dir / f"{prediction.name}_mask.{mask_format}", prediction.mask,
                                  overwrite=overwrite)}
    if probabilities:
        if prediction.probabilities is None:
            raise ValueError("predict with return_probabilities=True to save probabilities")
        p = prediction.probabilities
        written["probabilities"] = write_probabilities(
            out_dir / f"{prediction.name}_probabilities.tif", p[..., 1] if p.shape[-1] == 2 else p,
            prediction.pixel_size_nm, overwrite=overwrite)
    if overlay_png:
        if prediction.image is None:
            raise ValueError("predict with return_image=True to save overlays")
        from skimage.io import imsave

        from .io import _check_target

        path = _check_target(out_dir / f"{prediction.name}_overlay.png", overwrite)
        imsave(path, overlay(prediction.image, prediction.mask), check_contrast=False)
        written["overlay"] = path
    return written


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def evaluate(model_or_run, dataset_dir, *, threshold=None, split: str | None = None,
             metric: str = "f1", tile_size: int | None = None, overlap="auto", batch_size: int = 4,
             mixed_precision: str = "float32", plot=None, progress: bool = False):
    """Score a model on a labelled dataset folder, per image and overall.

    Parameters
    ----------
    model_or_run : keras.Model, Run or path
        As :func:`predict`.
    dataset_dir : str or Path
        ``images/`` + ``masks/`` (or the other layouts of :func:`tem_keras.data.datasets.discover`).
    threshold : None, float or "otsu"
        Threshold of the particle probability for the masks scored (see :func:`predict`); None:
        the run's tuned threshold (``thresholds.json``) if any, else 0.5.
    split : {None, "train", "val", "test"}
        With a run: only the images of that split of the run (``split.json``); None: all.
    metric : str
        Metric maximised by the ``best_threshold`` reported (``"f1"`` by default).
    plot : str or Path, optional
        Write the threshold curve (precision, recall, F1 against threshold) there.

    Returns
    -------
    per_image : pandas.DataFrame
        One row per image: ``image`` and the scores of
        :func:`tem_keras.metrics.segmentation_scores` (plus ``threshold``).
    overall : dict
        ``n_images``; ``threshold`` used; ``scores`` over all pixels pooled (sums of the
        per-image counts); ``mean`` of the per-image scores; ``best_threshold`` for ``metric``
        on the pooled pixels (thresholds 0, 0.01, ..., 1) and the scores there (``at_best``);
        ``curve``, the pooled threshold curve (DataFrame: threshold, tp, fp, fn, precision,
        recall, f1, iou). Binary (particle vs background) scores; for multi-class models the
        particle probability is ``1 - p(background)``. Memory stays that of one image.

    Examples
    --------
    >>> per_image, overall = evaluate("runs/unet_seed0", "data/particles", split="test")  # doctest: +SKIP
    >>> overall["best_threshold"], overall["at_best"]["f1"]                               # doctest: +SKIP
    (0.46, 0.912)
    """
    import pandas as pd

    from .data.datasets import discover, read_mask
    from .metrics import segmentation_scores, threshold_curve

    thresholds = np.linspace(0.0, 1.0, 101)
    column = {"f1": "f1", "dice": "f1", "iou": "iou"}.get(metric)
    if column is None:
        raise ValueError(f"metric must be 'f1', 'dice' or 'iou', got {metric!r}")
    from .validation import check_choice, check_predict_arguments  # hardening: at the door

    check_predict_arguments(tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            mixed_precision=mixed_precision, progress=progress)
    check_choice("split", split, ("train", "val", "test"), optional=True)
    info = load_model(model_or_run)
    ds = discover(dataset_dir)
    samples = list(ds.labelled)
    if split is not None:
        if info.run is None or split not in (info.run.split or {}):
            raise TEMInputError(f"split={split!r} needs a run whose split.json lists it", dataset_dir)
        wanted = set(info.run.split[split])
        samples = [s for s in samples if s.stem in wanted]
    if not samples:
        raise TEMInputError("no labelled images (image + mask pairs) to evaluate", dataset_dir)
    rows, curve = [], None
    results = predict_stack(info, [s.image for s in samples], threshold=threshold,
                            tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            return_probabilities=True, mixed_precision=mixed_precision,
                            progress=progress)
    for sample, result in zip(samples, results):
        truth = read_mask(sample.mask)
        n_classes = max(2, int(result.probabilities.shape[-1]), ds.num_classes)  # hardening
        if truth.max(initial=0) >= n_classes:
            raise TEMInputError(f"mask holds class {int(truth.max())} but the model and data set "
                                f"have {n_classes} classes (0..{n_classes - 1}); list the classes "
                                "in dataset.json", sample.mask)
        if truth.shape != result.mask.shape:
            raise TEMInputError(f"mask is {truth.shape[0]}×{truth.shape[1]} px but its image "
                                f"{Path(sample.image).name} is {result.mask.shape[0]}×"
                                f"{result.mask.shape[1]} px", sample.mask)
        fg = _foreground(result.probabilities)
        t = truth > 0
        rows.append({"image": sample.stem, "threshold": result.threshold,
                     **segmentation_scores(result.mask > 0, t, probabilities=fg)})
        counts = threshold_curve(fg, t, thresholds)[["tp", "fp", "fn"]]
        curve = counts if curve is None else curve + counts
    per_image = pd.DataFrame(rows)
    # pooled over all pixels: sums of the per-image counts (memory stays one image)
    curve.insert(0, "threshold", thresholds)
    for key, value in _scores_from_counts(curve["tp"], curve["fp"], curve["fn"]).items():
        curve[key] = value
    best = int(np.argmax(curve[column].to_numpy()))
    sums = {k: int(per_image[k].sum()) for k in ("tp", "fp", "fn", "tn")}
    pooled = {k: float(v) for k, v in _scores_from_counts(*(np.array([sums[k]]) for k in ("tp", "fp", "fn"))).items()}
    numeric = per_image.drop(columns=["image"]).select_dtypes("number")
    overall = {"n_images": len(rows), "threshold": rows[0]["threshold"] if len(
                   {r["threshold"] for r in rows}) == 1 else "per image",
               "scores": {**pooled, **sums},
               "mean": {k: float(v) for k, v in numeric.mean().items() if k not in sums},
               "metric": metric, "best_threshold": float(curve["threshold"].iloc[best]),
               "at_best": {k: float(curve[k].iloc[best]) for k in ("precision", "recall", "f1", "iou")},
               "curve": curve}
    if plot is not None:
        plot_threshold_curve(curve, plot, best=overall["best_threshold"])
    return per_image, overall


def _scores_from_counts(tp, fp, fn) -> dict:
    """Precision, recall, F1 (= dice) and IoU from pixel counts, with the conventions of
    :mod:`tem_keras.metrics` for empty masks."""
    from .metrics import _prf_from_counts

    precision, recall, f1, iou = _prf_from_counts(tp, fp, fn)
    out = {"precision": precision, "recall": recall, "f1": f1, "iou": iou}
    if np.ndim(precision) and np.size(precision) == 1:
        out = {k: np.asarray(v).ravel()[0] for k, v in out.items()}
        out["dice"] = out["f1"]
    return out


def plot_threshold_curve(curve, path, *, best: float | None = None):
    """Precision, recall and F1 against threshold (from :func:`tem_keras.metrics.threshold_curve`).

    Parameters
    ----------
    curve : pandas.DataFrame or dict
        Columns ``threshold`` and any of ``precision``, ``recall``, ``f1``, ``dice``, ``iou``.
    path : str or Path
        PNG file to write.
    best : float, optional
        Marked with a vertical line.
    """
    from .plots import _figure, _save

    fig, ax = _figure(figsize=(5, 3.6))
    thresholds = np.asarray(curve["threshold"])
    for key in ("precision", "recall", "f1", "iou"):
        if key in curve:
            ax.plot(thresholds, np.asarray(curve[key]), label=key)
    if best is not None:
        ax.axvline(best, color="grey", ls="--", label=f"best {best:.2f}")
    ax.set(xlabel="threshold on particle probability", ylabel="score", ylim=(0, 1.02), xlim=(0, 1))
    ax.legend(loc="lower left")
    return _save(fig, path)
