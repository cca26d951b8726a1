"""Segment micrographs of any size, stacks and videos: :func:`predict`, :func:`predict_stack`,
:func:`predict_image`, and their result, :class:`Prediction`.

How an image is predicted
-------------------------
1. The run's :class:`~tem_keras.data.preprocess.Preprocessing` (outlier removal, per-image
   standardisation) is applied to the whole image, as in training; for many frames this runs in a
   background thread, two frames ahead of the model.
2. The image is reflect-padded at the bottom and right to a multiple of the model's down-sampling
   factor ``d`` (:func:`~tem_keras.models.receptive_fields.downsampling_factor`).
3. Images whose activations fit the memory budget (``max_memory_gb``; and at most ``max_pixels``
   when given) are predicted whole, unless ``tile_size`` is given. Larger images are
   cut into square tiles (side a multiple of ``d``, origins on the ``d`` grid so that pooling sees the
   same pixel phases as for the whole image) that overlap by ``overlap`` pixels. Tiles of one or
   many images are batched into one call of a traced ``tf.function`` (one trace per model, held
   by the model's :class:`~tem_keras.inference.predictor.Predictor`).
4. Overlapping tiles are blended (:mod:`tem_keras.inference.tiling`): the tiled prediction equals
   the whole-image prediction up to float round-off, apart from a band of about
   ``receptive_field / 2`` pixels along the image border where the padding differs. Memory is
   bounded by one image, its probability map and one batch of tiles.
5. Masks come from the probabilities and the threshold (:mod:`tem_keras.inference.masks`).

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, npj Comput. Mater. 6, 108 (2020) — Otsu
thresholds of the softmax map.
O. Ronneberger, P. Fischer, T. Brox, "U-Net", MICCAI 2015 — overlap-tile strategy.
"""

from __future__ import annotations

import os

import numpy as np

from .. import artifacts
from ..errors import TEMInputError
from ..validation import check_bool, check_predict_input
from .onnx_engine import choose_engine, onnx_folder
from .options import PredictOptions, check_frames
from .sources import input_sources, select_frames
from .stream import Prediction, stream_predictions

__all__ = ["Prediction", "PredictOptions", "predict", "predict_stack", "predict_image"]


def predict_stack(model_or_path, x, *, options: PredictOptions | None = None, frames=None,
                  return_probabilities: bool = False, return_image: bool = False,
                  progress: bool = False, client=None, out=None, **keywords):
    """Predict frame by frame: an iterator of :class:`Prediction`, one frame in memory at a time.

    Frames are read and preprocessed two frames ahead of the model in a background thread; tiles
    of consecutive frames share batches. Parameters as :func:`predict`; ``frames`` picks a shard
    (``"i/n"``), a slice or a list of frame indices across all inputs (see :func:`shard_range`).

    With ``out="masks.zarr"`` (and optionally a Dask ``client``) the frames are written to a
    Zarr store instead, in chunks of frames computed on the cluster's workers (or in this
    process without a client), and a summary is returned: see
    :func:`tem_keras.distributed.predict_to_store` for ``out``, ``client`` and its own keywords
    (``chunk_frames``, ``particles``, ``track``, ``overwrite``, ...). Needs the ``cluster`` extra
    (``pip install "tem_keras[cluster]"``).
    """
    option_keywords, store_options = PredictOptions.split(keywords)
    options = PredictOptions.build(options, **option_keywords)
    check_frames(frames)
    for name, value in (("return_probabilities", return_probabilities),
                        ("return_image", return_image), ("progress", progress)):
        check_bool(name, value)
    if client is not None or out is not None:
        return _to_store(model_or_path, x, out, client, options, frames=frames,
                         return_probabilities=return_probabilities, return_image=return_image,
                         progress=progress, **store_options)
    if store_options:
        raise TypeError(f"predict_stack() got unexpected keyword argument(s) {sorted(store_options)} "
                        "(they are options of a Zarr store: give out='masks.zarr')")
    check_predict_input(x)
    engine = _engine_options(options)
    onnx_folder(model_or_path, options.engine, **engine)  # an impossible engine choice fails before any reading
    sources, _ = input_sources(x)
    selected = list(select_frames(sources, frames))
    onnx = choose_engine(model_or_path, options.engine, n_frames=len(selected), **engine)
    bundle = onnx if onnx is not None else open_model(model_or_path)
    return stream_predictions(bundle, selected, options.for_model(bundle, onnx=onnx is not None),
                              return_probabilities=return_probabilities, return_image=return_image,
                              progress=progress, onnx=onnx)


def open_model(model_or_path):
    """The :class:`~tem_keras.artifacts.ModelBundle` of ``model_or_path``: a bundle as it is,
    anything else opened by :func:`tem_keras.artifacts.load` (once per call of a public entry
    point: :func:`evaluate` and :func:`~tem_keras.watch` hand their bundle on)."""
    if isinstance(model_or_path, artifacts.ModelBundle):
        return model_or_path
    return artifacts.load(model_or_path)


def _engine_options(options: PredictOptions) -> dict:
    """The options that decide between the ONNX and TensorFlow engines (:func:`onnx_folder`)."""
    return {"tile_size": options.tile_size, "tta": options.tta,
            "mixed_precision": options.mixed_precision, "preprocessing": options.preprocessing}


def _to_store(model_or_path, x, out, client, options: PredictOptions, *, frames, return_probabilities,
              return_image, progress, **store_options):
    """:func:`predict_stack` with ``out=`` / ``client=``: the Zarr store job."""
    from ..distributed.cluster import predict_to_store

    if frames is not None:
        raise ValueError("frames= splits a job by hand; with out= (and client=) the whole input "
                         "is written to the store in chunks: leave frames=None")
    if return_image:
        raise ValueError("return_image=True has no place in a Zarr store: leave it False")
    if options.engine == "onnx":
        raise ValueError("engine='onnx' runs in this process; a Zarr store job runs the model "
                         "with TensorFlow on its workers: leave engine='auto'")
    return predict_to_store(model_or_path, x, out, client=client, options=options,
                            probabilities=return_probabilities, progress=progress, **store_options)


def predict(model_or_path, x, *, options: PredictOptions | None = None, frames=None,
            return_probabilities: bool = False, return_image: bool = False, progress: bool = False,
            as_signal: bool = False, **keywords):
    """Segment micrographs of any size with a trained model.

    How to predict is one :class:`~tem_keras.inference.options.PredictOptions` (``options=``),
    checked once; its fields may be given as keywords instead, or beside it to replace them.

    Parameters
    ----------
    model_or_path : keras.Model, Run, str or Path
        A model, a :class:`~tem_keras.artifacts.Run`, a run folder, an export folder or a
        ``.keras`` file (anything :func:`tem_keras.artifacts.load` opens). A run's preprocessing
        (and threshold from ``thresholds.json``) is used; for a bare model the default
        :class:`~tem_keras.data.preprocess.Preprocessing`.
    x : ndarray, Micrograph, path, list of paths, folder, glob pattern, MicrographStack or HyperSpy signal
        ``[H, W]`` array or one single-frame file: one image. ``[T, H, W]`` array, a multi-frame
        file (dm3/dm4/ser/emd/tif/mrc/npy/h5 stack, video), a folder, a pattern or a list: many.
        A HyperSpy ``Signal2D`` (lazy or not): one image, or one per navigation position; the
        pixel size comes from its signal axes (:mod:`tem_keras.io.hyperspy`).
    options : PredictOptions, optional
        Threshold, tiles, batch, precision, memory, TTA, engine, preprocessing, pixel size: the
        fields below from ``threshold`` to ``pixel_size_nm`` (default: all their defaults).
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
        (:func:`tem_keras.hardware.bfloat16_speedup`: AMX yes, AVX512_BF16 alone no), else
        float32.
        Expect differences of ~1e-2 in probabilities.
    max_pixels : int, optional
        Largest image predicted whole when ``tile_size`` is None (besides the memory budget).
    max_memory_gb : float, optional
        Budget for the activations of one model call (estimated from the graph by
        :func:`tem_keras.models.description.activation_bytes_per_pixel`, times
        :data:`~tem_keras.inference.predictor.WORKSPACE_FACTOR`): batches are cut to fit it, and with ``tile_size=None`` images
        larger than it are tiled. Default: min(1.5 GiB, a quarter of the RAM). A 4-level 64-filter
        UNet needs about 1.6 GB per 1024² tile in float32, the residual UNet 80 MB.
    pixel_size_nm : float, optional
        Used for images whose file has no calibration.
    progress : bool
        tqdm progress bar over the frames (with :func:`predict_stack`, a frame counts once the
        caller asks for the next one: the bar covers what it does with each).
    return_image : bool
        Keep the raw image in the result (for overlays and intensity measurements).
    tta : bool
        Test-time augmentation: the mean of the probabilities of the 8 rotations and mirror
        images (:mod:`tem_keras.inference.augment`); 8 times the time.
    engine : {"auto", "onnx", "tensorflow"}
        What runs the model (:mod:`tem_keras.inference.onnx_engine`). ``"auto"``: for a few
        images (at most :data:`~tem_keras.inference.onnx_engine.MAX_ONNX_FRAMES`), an export
        folder's ``model.onnx`` through onnxruntime while TensorFlow is not imported in the
        process (no TensorFlow start-up for a script that segments a few images), images it would
        tile through TensorFlow; otherwise TensorFlow. ``"onnx"``: every image whole through
        ``model.onnx``.
    as_signal : bool
        Return the masks as one HyperSpy ``Signal2D`` with the axes and calibration of ``x``,
        which must be a HyperSpy signal (threshold and model under ``metadata.Segmentation``).
        A plain return value is kept by default so that the type does not depend on the input.

    Returns
    -------
    Prediction, list of Prediction or hyperspy.signals.Signal2D
        One :class:`Prediction` for one image; a list (input order) for many; the masks as a
        signal with ``as_signal=True``. Use :func:`predict_stack` to stream long stacks without
        keeping all results.

    Raises
    ------
    TEMInputError
        Unreadable files, NaN pixels, constant images; the message names the file.

    Examples
    --------
    ``predict("runs/unet_seed0", "particles.dm4", threshold="otsu")`` segments a file with a
    trained run; here an untrained network on a synthetic image:

    >>> from tem_keras.data.synthetic import make_image
    >>> from tem_keras.models import unet
    >>> result = predict(unet(depth=2, base_filters=4), make_image(64, seed=0).image, threshold=0.4)
    >>> result.mask.shape, result.mask.dtype, result.threshold
    ((64, 64), dtype('uint8'), 0.4)
    >>> stack = np.stack([make_image(64, seed=seed).image for seed in range(3)])
    >>> options = PredictOptions(threshold=0.4, batch_size=2)
    >>> [r.mask.shape for r in predict(unet(depth=2, base_filters=4), stack, options=options)]
    [(64, 64), (64, 64), (64, 64)]
    """
    options = PredictOptions.build(options, **keywords)
    check_predict_input(x)
    if as_signal:
        _check_signal(x, frames)
    _, single = input_sources(x) if frames is None else (None, False)
    results = list(predict_stack(model_or_path, x, options=options, frames=frames,
                                 return_probabilities=return_probabilities,
                                 return_image=return_image, progress=progress))
    if as_signal:
        return _as_signal(results, x, model_or_path)
    return results[0] if single else results


def _check_signal(x, frames) -> None:
    """``as_signal=True`` needs a whole HyperSpy signal."""
    from ..io.hyperspy import is_signal

    if not is_signal(x) or frames is not None:
        raise TypeError("as_signal=True returns the masks of a whole HyperSpy signal: give a "
                        f"signal and no frames (got {type(x).__name__}"
                        f"{', frames' if frames is not None else ''})")


def _as_signal(results, x, model_or_path):
    """The masks of ``results`` as one HyperSpy signal with the axes of the signal ``x``."""
    from ..io.hyperspy import masks_to_signal

    model = getattr(model_or_path, "path", model_or_path)
    return masks_to_signal(np.stack([r.mask for r in results]), x, metadata={
        "threshold": results[0].threshold if results else None,
        "model": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__})


def predict_image(model, image, *, options: PredictOptions | None = None, **keywords) -> np.ndarray:
    """Class probabilities ``[H, W, C]`` (float32) of one 2-D image (array, Micrograph or file).

    The probability-only shortcut of :func:`predict` (same options; ``batch_size`` 1 unless
    given): with a
    :class:`~tem_keras.artifacts.Run` (or run folder), the run's preprocessing is applied, as in
    training.

    Raises
    ------
    TEMInputError
        For 3-D input or a multi-frame file: use :func:`predict_stack` (or ``read_stack``).
    """
    from ..io import Micrograph

    if not isinstance(image, Micrograph):
        if isinstance(image, (str, os.PathLike)):
            from ..io import read_stack

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
    if options is None:
        keywords.setdefault("batch_size", 1)
    return predict(model, image, options=options, return_probabilities=True, **keywords).probabilities
