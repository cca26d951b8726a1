"""The :class:`Predictor`: one model made ready to predict, and the engine that feeds it tiles.

A Predictor is built once per model (:meth:`Predictor.of`) and owns everything derived from it
that costs time to make: the copy rewritten for inference
(:func:`tem_keras.models.optimize.for_inference`: batch norms folded, fused decoders), made
again when the weights change (:class:`~tem_keras.models.optimize.WeightFingerprint`); its
copies under mixed precision policies; the traced (and, for small models, frozen) model call;
the down-sampling factor and receptive field; and the activation memory per input pixel, which
sets how many pixels one call may take within the memory budget.

The engine (:meth:`Predictor.stream_probabilities`) preprocesses and pads each frame, cuts it
into tiles when needed (:func:`~tem_keras.inference.tiling.tile_layout`), stacks tiles (or
whole frames) of the same shape across consecutive frames into batches sent through one traced
function, and blends them back.
"""

from __future__ import annotations

import math
import os
import warnings
import weakref

import numpy as np

from ..hardware import PerformanceHint
from ..errors import TEMInputError
from .compiled import traced_call
from .precision import resolve_precision, weight_bytes, with_precision
from .sources import read_ahead
from .tiling import DEFAULT_TILE_SIZE, MAX_WHOLE_PIXELS, pad_to_multiple, tile_layout

__all__ = ["Predictor", "pixels_per_call", "tile_options", "DEFAULT_MEMORY_BYTES", "WORKSPACE_FACTOR",
           "MIN_AUTO_TILE", "MAX_AUTO_TILE"]

#: activation memory of one model call, when ``max_memory_gb`` is None: min(1.5 GiB, RAM / 4).
#: With TensorFlow's runtime (~0.9 GB) a 4096² image then peaks below 3 GB (Horwath UNet with
#: oneDNN: 2.04 GiB; 2 GiB gave 3.07 GiB for 2 % less time: ``ab_library.py --only budget``)
DEFAULT_MEMORY_BYTES = 3 * 1024**3 // 2
#: measured peak of a model call / liveness estimate of its activations (oneDNN workspace,
#: weight reorders, TensorFlow's allocator; UNet-64 on 1024² tiles, float32)
WORKSPACE_FACTOR = 1.5
#: the smallest and largest tile sides chosen to fit ``max_memory_gb`` when no ``tile_size`` is given
MIN_AUTO_TILE, MAX_AUTO_TILE = 256, 8192

# the one cache of the package: model -> its Predictor, weakly keyed (a Predictor holds its
# model weakly too, so a model nobody else holds is freed with its Predictor)
_PREDICTORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def model_geometry(model) -> tuple[int, int | None]:
    """``(down-sampling factor, receptive field)`` of a model; the field is None when unknown
    (a graph that cannot be walked is assumed to have a 5-level encoder, factor 32)."""
    from ..models.receptive_fields import downsampling_factor, receptive_field

    try:
        d = max(1, int(downsampling_factor(model)))
    except Exception:  # noqa: BLE001 - graph not walkable
        d = 32
    try:
        rf = receptive_field(model)
        rf = None if math.isinf(rf) else int(rf)
    except Exception:  # noqa: BLE001
        rf = None
    return d, rf


def pixels_per_call(activation_bytes_per_pixel: float, max_memory_gb: float | None = None) -> float:
    """Input pixels one model call may take within the activation memory budget (inf: unknown).

    Parameters
    ----------
    activation_bytes_per_pixel : float
        Of the network (:meth:`Predictor.activation_bytes`; stored in an export's
        ``tem_keras.json``); 0 or less: unknown.
    max_memory_gb : float, optional
        The budget; default min(:data:`DEFAULT_MEMORY_BYTES`, a quarter of the RAM). The
        activations are counted :data:`WORKSPACE_FACTOR` times.
    """
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
    per_pixel = float(activation_bytes_per_pixel or 0)
    return budget / (WORKSPACE_FACTOR * per_pixel) if per_pixel > 0 else math.inf


def tile_options(downsampling: int, per_call: float, *, tile_size, overlap, max_pixels) -> dict:
    """Keyword arguments of :func:`~tem_keras.inference.tiling.tile_layout` for a call budget of
    ``per_call`` pixels: whole images when they fit it, else the largest tiles that do."""
    d = downsampling
    limit = per_call if max_pixels is None else min(int(max_pixels), per_call)
    return dict(tile_size=tile_size, overlap=overlap,
                max_pixels=MAX_WHOLE_PIXELS if math.isinf(limit) else int(limit),
                default_tile=DEFAULT_TILE_SIZE if math.isinf(per_call) else
                min(MAX_AUTO_TILE, max(MIN_AUTO_TILE, d * int(math.sqrt(per_call) // d))))


class Predictor:
    """A model made ready to predict: rewritten, in its precision, traced, with its geometry.

    Use :meth:`of` (one Predictor per model, reused across calls) rather than the constructor.

    Parameters
    ----------
    model : keras.Model
        Held weakly: the Predictor does not keep the model alive.

    Attributes
    ----------
    downsampling : int
        Images are padded, and tiles placed, on multiples of it.
    receptive_field : int or None
        Sets the tile overlap (None: unknown).
    channels, n_classes : int
        Of the model's input and output.
    """

    def __init__(self, model):
        from ..models.optimize import WeightFingerprint

        self._model = weakref.ref(model)
        self.downsampling, self.receptive_field = model_geometry(model)
        self.channels = int(model.inputs[0].shape[-1] or 1)
        self.n_classes = int(model.outputs[0].shape[-1] or 1)
        self._fingerprint = WeightFingerprint(model)
        self._weights = None      # fingerprint of the weights the networks below were made from
        self._networks = {}       # precision -> network (None: the model itself, held weakly)
        self._functions = {}      # precision -> traced call
        self._activation_bytes = {}  # precision -> activation bytes per input pixel

    @classmethod
    def of(cls, model) -> "Predictor":
        """The Predictor of ``model``, made on first use and kept while the model lives."""
        predictor = _PREDICTORS.get(model)
        if predictor is None:
            predictor = _PREDICTORS[model] = cls(model)
        return predictor

    @property
    def model(self):
        """The model as given."""
        model = self._model()
        if model is None:
            raise ReferenceError("the model of this Predictor no longer exists")
        return model

    # ---- derived networks ----------------------------------------------------------------

    def network(self, precision: str = "float32"):
        """The network :meth:`stream_probabilities` runs in ``precision``: the model rewritten by
        :func:`~tem_keras.models.optimize.for_inference`, under the ``mixed_<precision>``
        policy unless float32; made again when the model's weights have changed."""
        key = self._fingerprint()
        if key != self._weights:
            self._networks.clear()
            self._functions.clear()
            self._activation_bytes.clear()
            self._weights = key
        return self._network_for(precision)

    def _network_for(self, precision: str):
        if precision not in self._networks:
            if precision == "float32":
                from ..models.optimize import for_inference

                net = for_inference(self.model)
            else:
                net = with_precision(self._network_for("float32"), precision)
            self._networks[precision] = None if net is self.model else net
        net = self._networks[precision]
        return self.model if net is None else net

    def function(self, precision: str = "float32"):
        """The traced call of :meth:`network` (``[N, H, W, C]`` float32 -> probabilities), traced
        once for every batch and tile shape."""
        net = self.network(precision)
        if precision not in self._functions:
            self._functions[precision] = traced_call(net)
        return self._functions[precision]

    def activation_bytes(self, precision: str = "float32") -> float:
        """Activation bytes per input pixel of :meth:`network` in ``precision`` (4 bytes a value
        in float32, 2 otherwise; :func:`tem_keras.models.description.activation_bytes_per_pixel`)."""
        if precision not in self._activation_bytes:
            from ..models.description import activation_bytes_per_pixel

            self._activation_bytes[precision] = activation_bytes_per_pixel(
                self._network_for(precision), 4 if precision == "float32" else 2)
        return self._activation_bytes[precision]

    def pixels_per_call(self, precision: str = "float32", max_memory_gb: float | None = None) -> float:
        """Input pixels one model call may take within the activation memory budget (inf: unknown);
        :func:`pixels_per_call` of :meth:`activation_bytes`."""
        return pixels_per_call(self.activation_bytes(precision), max_memory_gb)

    def tile_options(self, per_call: float, *, tile_size, overlap, max_pixels) -> dict:
        """:func:`tile_options` of this model's down-sampling factor."""
        return tile_options(self.downsampling, per_call, tile_size=tile_size, overlap=overlap,
                            max_pixels=max_pixels)

    # ---- the engine ----------------------------------------------------------------------

    def _prepare(self, mg, preprocessing, options, name):
        """Preprocess and pad one Micrograph and lay out its tiles; errors name the file."""
        try:
            data = preprocessing(mg.data)
        except TEMInputError as error:
            if error.path is None:
                raise TEMInputError(error.problem, name) from None
            raise
        padded, crop = pad_to_multiple(data, self.downsampling)
        layout = tile_layout(padded.shape, self.downsampling, self.receptive_field, **options)
        return padded, crop, layout

    def stream_probabilities(self, frames, *, preprocessing, tile_size=None, overlap="auto",
                             batch_size: int = 4, max_pixels=None, mixed_precision: str = "float32",
                             max_memory_gb=None, prefetch: int = 2):
        """Yield ``(g, source, frame, Micrograph, probabilities [H, W, C])`` in input order.

        Parameters
        ----------
        frames : iterable of (int, Source, int)
            From :func:`~tem_keras.inference.sources.select_frames`.
        preprocessing : Preprocessing
            Applied to each whole frame, as in training.
        tile_size, overlap, batch_size, max_pixels, mixed_precision, max_memory_gb
            As :func:`tem_keras.predict`.
        prefetch : int
            Frames read and preprocessed ahead in a background thread.

        Notes
        -----
        Tiles (or whole padded frames) of the same shape are stacked into batches of
        ``batch_size`` across consecutive frames and sent through one traced function; a frame
        is yielded as soon as all its tiles are back, so at most the frames of one batch are
        held. A batch is also cut where its activations would exceed the memory budget
        (:meth:`pixels_per_call`), and with ``tile_size=None`` images above that budget are
        tiled rather than predicted whole.
        """
        from ..hardware import onednn_hint, tune_allocator

        tune_allocator()  # reuse freed activation buffers instead of page-faulting them in every call
        precision = resolve_precision(mixed_precision)
        fn = self.function(precision)
        hint = onednn_hint(weight_bytes(self._network_for(precision)))
        if hint:
            warnings.warn(hint, PerformanceHint, stacklevel=2)
        per_call = self.pixels_per_call(precision, max_memory_gb)
        options = self.tile_options(per_call, tile_size=tile_size, overlap=overlap, max_pixels=max_pixels)
        batch_size = max(1, int(batch_size))
        channels, n_classes = self.channels, self.n_classes
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

        def load(g, source, frame):
            mg = source.get(frame)
            return g, source, frame, mg, self._prepare(mg, preprocessing, options, source.name or mg.path)

        for g, source, frame, mg, (padded, crop, layout) in read_ahead(frames, load, prefetch):
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

    def __repr__(self):
        model = self._model()
        return (f"Predictor({getattr(model, 'name', None)!r}, downsampling={self.downsampling}, "
                f"receptive_field={self.receptive_field}, precisions={sorted(self._networks)})")


class _Job:
    """One frame in flight: its accumulator and the number of tiles still to come back."""

    def __init__(self, layout, crop, n_classes):
        self.layout, self.crop = layout, crop
        self.out = np.zeros((*layout.shape, n_classes), np.float32) if len(layout) > 1 else None
        self.pending = len(layout)
