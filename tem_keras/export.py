"""Export a trained model so that colleagues can run it without the training code.

:func:`export` writes an *export folder*::

    OUT_DIR/
      saved_model/        TensorFlow SavedModel: raw float32 images [N, H, W, 1] of any H, W
                          -> class probabilities [N, H, W, C]; preprocessing inside the graph
      model.keras         the Keras model (loads in safe mode: no Lambda layers, no code)
      model.onnx          the same graph as saved_model/ (optional extra: tf2onnx + onnxruntime)
      bioimageio/         bioimage.io model package (rdf.yaml, zipped SavedModel, test tensors,
                          cover, README.md)
      tem_keras.json      classes, pixel size, normalisation, threshold, receptive field,
                          metrics, versions, files written
      README.md           the model card

:func:`load` opens an export folder (or a run folder) and returns something
:func:`tem_keras.inference.predict` accepts.

What the SavedModel graph does
------------------------------
``tf.saved_model.load(path).serve(images)`` with ``images`` a float32 tensor ``[N, H, W, 1]``
(raw intensities, any H and W, each image handled on its own):

1. outlier removal when the run used it (:func:`tem_keras.data.preprocess.remove_outliers`,
   Horwath et al. 2020): the 3×3 median (scipy's ``reflect`` border, i.e. ``SYMMETRIC``
   padding) is the 5th largest of the 9 neighbours (``tf.math.top_k``); the threshold is
   ``outlier_sigma × 1.4826 × MAD`` of the image minus its median (medians over the sorted
   pixels, the mean of the two middle values for even counts, as ``np.median``); hot pixels
   are replaced by the mean of their non-hot 8 neighbours (sums in float64 as scipy does);
2. per-image standardisation (``"standard"``: mean and standard deviation in float64, then
   float32 arithmetic as NumPy; ``"percentile"``: linear-interpolated percentiles in float64);
3. padding at the bottom and right to a multiple of the model's down-sampling factor, reflect
   (or symmetric when the pad is not smaller than the image) exactly as
   :func:`tem_keras.inference.pad_to_multiple`;
4. the network (its last layer is a float32 softmax) and cropping back to ``[H, W]``.

The network in the SavedModel (and ONNX) graph is the model as rewritten by
:func:`tem_keras.models.for_inference`, as :func:`tem_keras.predict` runs it: batch norms folded into
the convolutions, a two-class softmax as a sigmoid of the logit differences, nearest up-sampling
decoders as sub-pixel convolutions. The probabilities are the model's up to float rounding
(checked at export: at most 1e-5 apart); ``model.keras`` holds the model as trained.

Non-finite pixels or a constant image stop the call with an ``InvalidArgumentError``.
Signatures: ``serving_default`` (``images`` -> ``probabilities``), ``serve_mask`` (``images`` ->
``mask``, uint8 labels with the exported threshold) and ``network`` (already preprocessed and
padded images -> probabilities: the bare network, used by :func:`load` when there is no
``model.keras``). The same functions are attributes of the loaded object (``.serve``,
``.serve_mask``, ``.network``), returning tensors. The copy zipped into the bioimage.io package
is the same graph, except that its ``serve`` returns ``{"probabilities": ...}``, as
bioimageio.core expects.

Safety
------
A SavedModel is a program: loading it runs TensorFlow graphs written by whoever made it. Only
load SavedModels (and ONNX files) from people you trust. ``model.keras`` is loaded in Keras's
safe mode, which refuses ``Lambda`` layers and other serialised Python code.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _env  # noqa: F401
from .distribute import float32_model
from .errors import TEMInputError
from .inference import _ModelInfo

__all__ = ["FORMATS", "ExportedModel", "export", "load", "serving_module"]

#: every format :func:`export` knows, in the order it writes them
FORMATS = ("saved_model", "keras", "onnx", "bioimageio")
#: version of the export folder layout (``tem_keras.json["export_format"]``)
EXPORT_FORMAT = 1
#: ONNX opset used by :func:`export`
ONNX_OPSET = 17

_FILES = {"saved_model": "saved_model", "keras": "model.keras", "onnx": "model.onnx",
          "bioimageio": "bioimageio"}
_TRUST = ("A SavedModel (and an ONNX file) is a program: loading it runs the graphs written by "
          "whoever made it. Load SavedModels only from people you trust. `model.keras` loads in "
          "Keras's safe mode, which refuses Lambda layers and other serialised Python code.")


# --------------------------------------------------------------------------------------------
# The preprocessing, in TensorFlow
# --------------------------------------------------------------------------------------------

def _tf():
    import tensorflow as tf

    return tf


def _fold_indices(length, target, symmetric):
    """Indices ``0..target-1`` into an axis of ``length`` extended as ``np.pad`` reflect/symmetric."""
    tf = _tf()
    i = tf.range(target)
    if symmetric:
        period = 2 * length
        j = tf.math.floormod(i, period)
        return tf.where(j < length, j, period - 1 - j)
    period = tf.maximum(2 * (length - 1), 1)
    j = tf.math.floormod(i, period)
    return tf.where(j < length, j, period - j)


def pad_to_multiple_tf(images, multiple: int):
    """``[N, H, W, C]`` padded at the bottom and right to multiples of ``multiple``.

    The same as :func:`tem_keras.inference.pad_to_multiple`: ``reflect`` when both pads are
    smaller than the image, otherwise ``symmetric`` (repeated) on both axes.
    """
    tf = _tf()
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    # (m - h % m) % m, not (-h) % m: ONNX's Mod of a negative number is C's, not Python's
    ph = tf.math.floormod(multiple - tf.math.floormod(h, multiple), multiple)
    pw = tf.math.floormod(multiple - tf.math.floormod(w, multiple), multiple)
    symmetric = tf.logical_not(tf.logical_and(ph < h, pw < w))
    rows = tf.cond(symmetric, lambda: _fold_indices(h, h + ph, True),
                   lambda: _fold_indices(h, h + ph, False))
    cols = tf.cond(symmetric, lambda: _fold_indices(w, w + pw, True),
                   lambda: _fold_indices(w, w + pw, False))
    return tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)


def _shifts(x):
    """The 9 shifted copies of ``[N, H, W]`` holding the 3×3 neighbours of every pixel, row by
    row (the centre is the 5th); border: scipy's ``reflect`` = TensorFlow's ``SYMMETRIC``."""
    tf = _tf()
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    p = tf.pad(x, [[0, 0], [1, 1], [1, 1]], mode="SYMMETRIC")
    return [p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]


def _median3(x):
    """3×3 median filter (the 5th largest of 9 values: exact, no arithmetic)."""
    tf = _tf()
    return tf.math.top_k(tf.stack(_shifts(x), axis=-1), k=5, sorted=True).values[..., 4]


def _neighbour_sum64(x):
    """Sum of the 8 neighbours of every pixel in float64 (as scipy's ``convolve``), as float32."""
    tf = _tf()
    shifts = _shifts(tf.cast(x, tf.float64))
    return tf.cast(tf.add_n(shifts[:4] + shifts[5:]), tf.float32)


def _median_flat(x):
    """``np.median`` of each image of ``[N, H, W]`` (float32; mean of the middle two for even sizes)."""
    tf = _tf()
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    n = tf.shape(flat)[1]
    s = tf.sort(flat, axis=-1)
    lo = tf.gather(s, (n - 1) // 2, axis=1)
    hi = tf.gather(s, n // 2, axis=1)
    return (lo + hi) / 2.0  # equal middles give the middle itself, as np.median


def remove_outliers_tf(x, n_sigma: float = 6.0):
    """:func:`tem_keras.data.preprocess.remove_outliers` of each image of ``[N, H, W]`` float32."""
    tf = _tf()
    med = _median3(x)
    excess = x - med
    centre = _median_flat(excess)[:, None, None]
    mad = _median_flat(tf.abs(excess - centre))
    threshold = tf.where(mad > 0, tf.constant(n_sigma * 1.4826, tf.float32) * mad,
                         tf.constant(np.inf, tf.float32))
    hot = excess > threshold[:, None, None]
    good = tf.cast(tf.logical_not(hot), tf.float32)
    sums = _neighbour_sum64(x * good)
    counts = _neighbour_sum64(good)
    fill = tf.where(counts > 0, sums / tf.maximum(counts, 1.0), med)
    return tf.where(hot, fill, x)


def _percentile(x, q: float):
    """``np.percentile(image, q)`` (linear) of each image of ``[N, H, W]``, float64."""
    tf = _tf()
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    n = tf.shape(flat)[1]
    s = tf.cast(tf.sort(flat, axis=-1), tf.float64)
    index = (q / 100.0) * tf.cast(n - 1, tf.float64)
    below = tf.floor(index)
    gamma = index - below
    i = tf.cast(below, tf.int32)
    a = tf.gather(s, i, axis=1)
    b = tf.gather(s, tf.minimum(i + 1, n - 1), axis=1)
    diff = b - a
    return tf.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def standardize_tf(x, method: str = "standard", percentiles=(1.0, 99.0)):
    """:func:`tem_keras.data.preprocess.standardize` of each image of ``[N, H, W]`` float32."""
    tf = _tf()
    if method == "standard":
        x64 = tf.cast(x, tf.float64)
        center = tf.reduce_mean(x64, axis=[1, 2], keepdims=True)
        scale = tf.sqrt(tf.reduce_mean(tf.square(x64 - center), axis=[1, 2], keepdims=True))
        tf.debugging.assert_positive(scale, message="image is constant: it cannot be normalised")
        # NumPy 2: float32 array minus a Python float is float32 arithmetic
        return (x - tf.cast(center, tf.float32)) / tf.cast(scale, tf.float32)
    if method == "percentile":
        center = _percentile(x, percentiles[0])[:, None, None]
        scale = _percentile(x, percentiles[1])[:, None, None] - center
        tf.debugging.assert_positive(scale, message="image is constant: it cannot be normalised")
        return tf.cast((tf.cast(x, tf.float64) - center) / scale, tf.float32)
    raise ValueError(f"normalization must be 'standard' or 'percentile', got {method!r}")


def preprocess_tf(images, preprocessing):
    """The :class:`~tem_keras.data.preprocess.Preprocessing` of each image of ``[N, H, W, 1]``."""
    tf = _tf()
    x = images[..., 0]
    tf.debugging.assert_all_finite(x, "image has NaN or infinite pixels")
    if preprocessing.remove_outliers:
        x = remove_outliers_tf(x, preprocessing.outlier_sigma)
    x = standardize_tf(x, preprocessing.normalization, preprocessing.percentiles)
    return x[..., None]


def _labels_tf(probabilities, threshold):
    """uint8 labels as :func:`tem_keras.inference.labels_from_probabilities` with a number."""
    tf = _tf()
    c = probabilities.shape[-1]
    if threshold is None:
        if c > 2:
            return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)
        threshold = 0.5
    if c == 1:
        return tf.cast(probabilities[..., 0] >= threshold, tf.uint8)
    if c == 2:
        return tf.cast(probabilities[..., 1] >= threshold, tf.uint8)
    foreground = 1.0 - probabilities[..., 0]
    best = tf.cast(tf.argmax(probabilities[..., 1:], axis=-1) + 1, tf.uint8)
    return tf.where(foreground >= threshold, best, tf.zeros_like(best))


def serving_module(model, preprocessing=None, *, downsampling: int | None = None,
                   threshold: float | None = 0.5, dict_outputs: bool = False, rewrite: bool = True):
    """A ``tf.Module`` whose ``serve`` runs preprocessing, padding, ``model`` and cropping.

    Parameters
    ----------
    model : keras.Model
        Input ``[N, H, W, 1]``, output class probabilities ``[N, H, W, C]``.
    preprocessing : Preprocessing, optional
        Default :class:`~tem_keras.data.preprocess.Preprocessing`.
    downsampling : int, optional
        Default :func:`~tem_keras.models.receptive_field.downsampling_factor` of ``model``.
    threshold : float or None
        Used by ``serve_mask`` (see :func:`tem_keras.inference.labels_from_probabilities`):
        None is 0.5 for binary models and the plain argmax for more classes.
    dict_outputs : bool
        ``serve`` returns ``{"probabilities": ...}`` instead of the tensor (what bioimageio.core's
        ``TFSMLayer(call_endpoint="serve")`` expects; used for the bioimage.io package).
    rewrite : bool
        Run the copy of ``model`` made by :func:`tem_keras.models.for_inference` (batch norms
        folded, two-class softmax as a sigmoid, fused up-sampling decoders): the same
        probabilities up to float rounding, as fast as :func:`tem_keras.predict`.

    Returns
    -------
    tf.Module
        With ``serve`` (raw images -> probabilities), ``serve_mask`` (raw images -> uint8
        labels) and ``network`` (preprocessed, padded images -> probabilities), each a
        ``tf.function`` of one ``[None, None, None, 1]`` float32 argument.
    """
    tf = _tf()
    from .data.preprocess import Preprocessing

    preprocessing = preprocessing or Preprocessing()
    if downsampling is None:
        from .models.receptive_field import downsampling_factor

        downsampling = downsampling_factor(model)
    d = max(1, int(downsampling))
    threshold = None if threshold is None else float(threshold)
    spec = tf.TensorSpec([None, None, None, 1], tf.float32, name="images")

    module = tf.Module(name="tem_keras_serving")
    if rewrite:
        from .models.optimize import for_inference

        model = for_inference(model)
    module.model = model

    @tf.function(input_signature=[spec])
    def network(images):
        return tf.cast(module.model(images, training=False), tf.float32)

    @tf.function(input_signature=[spec])
    def serve(images):
        h, w = tf.shape(images)[1], tf.shape(images)[2]
        x = pad_to_multiple_tf(preprocess_tf(images, preprocessing), d)
        return network(x)[:, :h, :w, :]

    @tf.function(input_signature=[spec])
    def serve_mask(images):
        return _labels_tf(serve(images), threshold)

    @tf.function(input_signature=[spec])
    def serving_default(images):
        return {"probabilities": serve(images)}

    @tf.function(input_signature=[spec])
    def mask_signature(images):
        return {"mask": serve_mask(images)}

    @tf.function(input_signature=[spec])
    def network_signature(images):
        return {"probabilities": network(images)}

    module.serve, module.serve_mask, module.network = serve, serve_mask, network
    if dict_outputs:
        module.serve = serving_default
    module.downsampling = tf.Variable(d, trainable=False, name="downsampling")
    module.threshold = tf.Variable(-1.0 if threshold is None else threshold, trainable=False,
                                   name="threshold")  # -1: argmax
    module._signatures = {"serving_default": serving_default, "serve_mask": mask_signature,
                          "network": network_signature}
    return module


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

@dataclass
class _Source:
    """Everything :func:`export` needs to know about the model."""

    model: object
    preprocessing: object
    threshold: float | None
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    run_path: Path | None = None
    split: dict = field(default_factory=dict)


def _source(run_or_model, preprocessing, threshold) -> _Source:
    import keras

    from .data.preprocess import Preprocessing
    from .training import Run

    if isinstance(run_or_model, (str, os.PathLike)):
        run_or_model = load(run_or_model)  # a run folder, an export folder or a .keras file
    if isinstance(run_or_model, Run):
        run = run_or_model
        pre = preprocessing or (run.preprocessing if "preprocessing" in run.config else Preprocessing())
        if threshold is None:
            tfile = Path(run.path) / "thresholds.json"
            if tfile.is_file():
                value = json.loads(tfile.read_text()).get("threshold")
                threshold = float(value) if isinstance(value, (int, float)) else None
        return _Source(run.model, pre, None if threshold is None else float(threshold),
                       dict(run.config), dict(run.metrics or {}), Path(run.path), dict(run.split or {}))
    if isinstance(run_or_model, ExportedModel):
        return _Source(run_or_model.model, preprocessing or run_or_model.preprocessing or Preprocessing(),
                       threshold if threshold is not None else run_or_model.threshold,
                       dict(run_or_model.metadata.get("run_config", {})),
                       dict(run_or_model.metadata.get("metrics", {})))
    if isinstance(run_or_model, keras.Model):
        return _Source(run_or_model, preprocessing or Preprocessing(),
                       None if threshold is None else float(threshold))
    raise TypeError(f"export takes a Run, a run folder or a keras.Model, got {type(run_or_model).__name__}")


def _prepare_out_dir(out_dir: Path, overwrite: bool, source: Path | None = None) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TEMInputError("exists and is not a folder", out_dir)
    if source is not None and (out_dir.resolve() == source.resolve() or out_dir.resolve() in source.resolve().parents):
        raise TEMInputError("holds the run being exported; choose another export folder", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if (out_dir / "config.json").is_file() and (out_dir / "best.keras").is_file():
            raise TEMInputError("is a training run folder; export into another folder (it is never "
                                "overwritten, even with overwrite=True)", out_dir)
        if not overwrite:
            raise TEMInputError("is not empty; choose an empty or new folder, or pass overwrite=True "
                                "(--overwrite) to replace its contents", out_dir)
        for child in out_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _example_image(src: _Source, d: int, size=(90, 125)) -> tuple[np.ndarray, str]:
    """A test image: the run's first test (or validation) image when readable, else synthetic."""
    dataset = src.config.get("data", {}).get("dataset_dir")
    if dataset and src.split:
        try:
            from .data.datasets import discover
            from .io import read_image

            stems = list(src.split.get("test", [])) + list(src.split.get("val", []))
            for sample in discover(dataset).labelled:
                if sample.stem in stems:
                    data = read_image(sample.image).data.astype(np.float32)
                    h, w = data.shape
                    # a non-square crop whose sides are not multiples of the down-sampling
                    ch, cw = min(h, 250), min(w, 310)
                    ch -= 1 if (d > 1 and ch % d == 0 and ch > 8) else 0
                    cw -= 3 if (d > 1 and cw % d == 0 and cw > 8) else 0
                    return np.ascontiguousarray(data[:ch, :cw]), f"{sample.stem} (test split, top-left crop)"
        except Exception:  # noqa: BLE001, S110  (the data moved: fall back to a synthetic image)
            pass
    from .data.synthetic import make_image

    image = make_image(max(size), pixel_size_nm=src.config.get("pixel_size_nm"), seed=0).image
    return np.ascontiguousarray(image[:size[0], :size[1]].astype(np.float32)), "synthetic image"


def _in_memory_probabilities(src: _Source, image: np.ndarray, d: int) -> np.ndarray:
    """Probabilities of one image with the NumPy preprocessing and the Keras model."""
    from .inference import pad_to_multiple

    padded, (h, w) = pad_to_multiple(src.preprocessing(image), d)
    out = src.model(padded[None, ..., None], training=False)
    return np.asarray(out, dtype=np.float32)[0, :h, :w]


def export(run_or_model, out_dir, formats=FORMATS, overwrite: bool = False, *,
           preprocessing=None, threshold: float | None = None, pixel_size_nm: float | None = None,
           name: str | None = None, authors=None, verbose: bool = True) -> Path:
    """Write an export folder: SavedModel with preprocessing inside, ``.keras``, ONNX, bioimage.io.

    Parameters
    ----------
    run_or_model : Run, str, Path or keras.Model
        A finished run (or its folder). A bare model gets the default preprocessing.
    out_dir : str or Path
        The export folder; it must be new or empty unless ``overwrite``.
    formats : sequence of str
        Any of ``"saved_model"``, ``"keras"``, ``"onnx"``, ``"bioimageio"`` (all by default).
        ``"onnx"`` is skipped with a message when tf2onnx or onnxruntime is not installed
        (``pip install "tem_keras[onnx]"``); ``"bioimageio"`` needs ``"saved_model"`` and is
        validated with ``bioimageio.spec`` when it is installed. ``tem_keras.json`` and
        ``README.md`` are always written.
    overwrite : bool
        Replace the contents of a non-empty ``out_dir``.
    preprocessing : Preprocessing, optional
        Overrides the run's.
    threshold : float, optional
        Threshold of the particle probability for masks; default the run's ``thresholds.json``,
        else 0.5 (binary models) or the argmax (more classes).
    pixel_size_nm : float, optional
        Overrides the run's (for a bare model, the only source).
    name : str, optional
        Model name in the card and the bioimage.io package; default the run folder's name.
    authors : list of str, optional
        For the bioimage.io package (default: the user name).
    verbose : bool
        Print what was written and the checks.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    TEMInputError
        ``out_dir`` is not empty (and not ``overwrite``), or the run folder is incomplete.
    RuntimeError
        An exported file does not reproduce the in-memory model (a bug: please report it).

    Examples
    --------
    >>> export("runs/unet_seed0", "exports/unet_seed0")                        # doctest: +SKIP
    >>> import tensorflow as tf                                                 # doctest: +SKIP
    >>> probabilities = tf.saved_model.load("exports/unet_seed0/saved_model").serve(images)  # doctest: +SKIP
    """
    from .validation import check_bool, check_number, check_pixel_size  # hardening: at the door

    if isinstance(formats, str):
        formats = tuple(f.strip() for f in formats.split(",") if f.strip())
    check_number("threshold", threshold, 0.0, 1.0, optional=True)
    check_pixel_size("pixel_size_nm", pixel_size_nm)
    check_bool("overwrite", overwrite)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {FORMATS}")
    if "bioimageio" in formats and "saved_model" not in formats:
        raise ValueError("the bioimage.io package holds the SavedModel: add 'saved_model' to formats")
    src = _source(run_or_model, preprocessing, threshold)
    model = src.model
    if isinstance(model, _SavedModelNetwork):
        raise TEMInputError("holds only a SavedModel; exporting again needs model.keras",
                            getattr(run_or_model, "path", run_or_model))
    model = src.model = float32_model(model)  # exports compute in float32 on every machine
    if len(model.inputs) != 1 or model.inputs[0].shape[-1] not in (1, None):
        raise ValueError(f"export needs a model with one 1-channel input, got inputs "
                         f"{[tuple(i.shape) for i in model.inputs]}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite, src.run_path)
    say = print if verbose else (lambda *a, **k: None)

    from .models.describe import describe

    pixel = pixel_size_nm if pixel_size_nm is not None else src.config.get("pixel_size_nm")
    info = describe(model, pixel)
    d = max(1, int(info["downsampling"]))
    num_classes = int(model.outputs[0].shape[-1])
    classes = src.config.get("classes") or ({"0": "background", "1": "particle"} if num_classes <= 2
                                            else {str(k): f"class_{k}" for k in range(num_classes)})
    if src.threshold is None and num_classes <= 2:
        src.threshold = 0.5
    name = name or (src.run_path.name if src.run_path else model.name)
    image, image_source = _example_image(src, d)
    reference = _in_memory_probabilities(src, image, d)
    written, checks, skipped = {}, {}, {}

    if "keras" in formats:
        model.save(out_dir / "model.keras")
        written["keras"] = "model.keras"
        say(f"wrote {out_dir / 'model.keras'}")

    module = None
    if "saved_model" in formats:
        import tensorflow as tf

        module = serving_module(model, src.preprocessing, downsampling=d, threshold=src.threshold)
        tf.saved_model.save(module, str(out_dir / "saved_model"), signatures=module._signatures)
        loaded = tf.saved_model.load(str(out_dir / "saved_model"))
        got = loaded.serve(tf.constant(image[None, ..., None])).numpy()[0]
        checks["saved_model_max_abs_difference"] = float(np.max(np.abs(got - reference)))
        if not checks["saved_model_max_abs_difference"] <= 1e-5:
            raise RuntimeError(f"the exported SavedModel differs from the in-memory model by "
                               f"{checks['saved_model_max_abs_difference']:.3g} (> 1e-5)")
        written["saved_model"] = "saved_model"
        say(f"wrote {out_dir / 'saved_model'} (max |difference| to the Keras model "
            f"{checks['saved_model_max_abs_difference']:.2g})")

    if "onnx" in formats:
        if module is None:
            module = serving_module(model, src.preprocessing, downsampling=d, threshold=src.threshold)
        problem = _onnx_unavailable()
        if problem:
            skipped["onnx"] = problem
            say(f"skipped ONNX: {problem}")
        else:
            try:
                checks["onnx_max_abs_difference"] = _export_onnx(module, out_dir / "model.onnx", image,
                                                                 reference)
            except Exception as error:  # noqa: BLE001  (an op tf2onnx cannot convert: keep the rest)
                (out_dir / "model.onnx").unlink(missing_ok=True)
                skipped["onnx"] = (f"conversion failed ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0][:300] if str(error) else ''})")
                say(f"skipped ONNX: {skipped['onnx']}")
            else:
                written["onnx"] = "model.onnx"
                say(f"wrote {out_dir / 'model.onnx'} (max |difference| to the Keras model "
                    f"{checks['onnx_max_abs_difference']:.2g}, onnxruntime)")

    meta = {
        "export_format": EXPORT_FORMAT,
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "files": written,
        "skipped": skipped,
        "classes": classes,
        "num_classes": num_classes,
        "pixel_size_nm": pixel,
        "preprocessing": src.preprocessing.to_dict(),
        "threshold": src.threshold,
        "otsu_threshold": src.metrics.get("otsu_threshold"),
        "input": {"shape": [None, None, None, 1], "dtype": "float32",
                  "description": "raw intensities; any height and width"},
        "output": {"shape": [None, None, None, num_classes], "dtype": "float32",
                   "description": "class probabilities (softmax)"},
        "downsampling": d,
        "receptive_field_px": info["receptive_field_px"],
        "receptive_field_nm": info["receptive_field_nm"],
        "parameters": info["parameters"],
        "gflops_per_megapixel": info["gflops_per_megapixel"],
        "model": src.config.get("model", {"name": model.name}),
        "metrics": src.metrics,
        "training": _training_summary(src),
        "checks": checks,
        "test_image": image_source,
        "versions": _versions(),
        "run_config": src.config,
    }

    if "bioimageio" in formats:
        try:
            validation = _write_bioimageio(out_dir, meta, image, reference, authors, model,
                                           src.preprocessing)
        except Exception as error:  # noqa: BLE001  (the rest of the export stays usable)
            validation = f"not written: {type(error).__name__}: {error}"
            skipped["bioimageio"] = validation
        else:
            written["bioimageio"] = "bioimageio"
        meta["checks"]["bioimageio_validation"] = validation
        say(f"bioimage.io package: {validation}")

    (out_dir / "README.md").write_text(model_card(meta), encoding="utf-8")
    if "bioimageio" in written:
        shutil.copy(out_dir / "README.md", out_dir / "bioimageio" / "README.md")
    (out_dir / "tem_keras.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    say(f"wrote {out_dir / 'tem_keras.json'} and {out_dir / 'README.md'}")
    return out_dir


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from . import __version__

    out = {"tem_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
           "numpy": np.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for module in ("tf2onnx", "onnxruntime", "bioimageio.spec"):
        try:
            out[module] = version(module)
        except PackageNotFoundError:
            continue
    return out


def _training_summary(src: _Source) -> dict:
    config = src.config
    if not config:
        return {}
    out = {"dataset_dir": config.get("data", {}).get("dataset_dir"),
           "patch_size": config.get("data", {}).get("patch_size"),
           "images": {k: len(v) for k, v in (src.split or {}).items()},
           "augmentation": config.get("data", {}).get("augmentation"),
           **{k: config.get("training", {}).get(k) for k in ("epochs", "batch_size", "learning_rate",
                                                           "loss", "seed", "mixed_precision")}}
    dataset_json = Path(out["dataset_dir"] or "") / "dataset.json"
    if out["dataset_dir"] and dataset_json.is_file():
        try:
            ds = json.loads(dataset_json.read_text())
            out["dataset_name"] = ds.get("name")
            out["dataset_mode"] = ds.get("mode")
        except ValueError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

def _onnx_unavailable() -> str | None:
    """Why ONNX export cannot run here, or None."""
    missing = []
    for module in ("tf2onnx", "onnxruntime"):
        try:
            __import__(module)
        except Exception as error:  # noqa: BLE001  (ImportError or a broken install)
            missing.append(f"{module} ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
                           if not isinstance(error, ModuleNotFoundError) else module)
    if missing:
        return (f"{' and '.join(missing)} not available; install the extra with "
                f"pip install \"tem_keras[onnx]\"")
    return None


def _onnx_graph_def(function):
    """Frozen GraphDef of a ``tf.function`` with the XLA marks removed, for tf2onnx.

    Keras 3 runs a convolution through a nested ``tf.function(jit_compile=True)`` when the
    static channel count of its input is unknown (after ``CropOrPadTo`` in the UNet decoders);
    Grappler never inlines functions marked for XLA, and tf2onnx cannot convert the call. The
    marks only ask for compilation: without them the function body (the same convolution) is
    inlined and converted.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.util import deprecation

    with deprecation.silence():  # it calls TF1's extract_sub_graph, which warns each time
        frozen = convert_variables_to_constants_v2(function.get_concrete_function(), aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    nodes = list(graph_def.node)
    for f in graph_def.library.function:
        for key in ("_XlaMustCompile", "_noinline"):
            if key in f.attr:
                del f.attr[key]
        nodes.extend(f.node_def)
    for node in nodes:
        if "_XlaMustCompile" in node.attr:
            del node.attr["_XlaMustCompile"]
    return graph_def, [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]


def _export_onnx(module, path: Path, image: np.ndarray, reference: np.ndarray) -> float:
    import logging

    import onnxruntime as ort
    import tf2onnx
    from tensorflow.python.util import deprecation

    graph_def, inputs, outputs = _onnx_graph_def(module.serve)
    level = logging.getLogger("tf2onnx").level
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        with deprecation.silence():  # tf2onnx calls TF1 graph utilities that warn each time
            tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                           opset=ONNX_OPSET, output_path=str(path))
    finally:
        logging.getLogger("tf2onnx").setLevel(level)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: image[None, ..., None]})[0][0]
    difference = float(np.max(np.abs(got - reference)))
    if not difference <= 1e-4:
        raise RuntimeError(f"the ONNX model differs from the in-memory model by {difference:.3g} (> 1e-4)")
    return difference


# --------------------------------------------------------------------------------------------
# bioimage.io
# --------------------------------------------------------------------------------------------

def _cover(image: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """2:1 PNG: the test image (1–99 % stretch) beside the particle probability."""
    from PIL import Image

    from .inference import _foreground

    lo, hi = np.percentile(image, (1, 99))
    grey = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    prob = np.clip(_foreground(probabilities), 0, 1)
    side = 256
    left = Image.fromarray((grey * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.BILINEAR)
    right = Image.fromarray((prob * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.BILINEAR)
    canvas = Image.new("L", (2 * side, side))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (side, 0))
    canvas.save(path)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "tem-keras-model"


def _bioimageio_name(name: str) -> str:
    """A bioimage.io model name: 5-128 characters of letters, digits, spaces and ``_-()+``."""
    import re

    name = re.sub(r"[^A-Za-z0-9 _\-()+]+", "-", str(name)).strip(" -") or "model"
    if len(name) < 5:
        name = f"TEM nanoparticle segmentation {name}"
    return name[:128]


def _write_bioimageio(out_dir: Path, meta: dict, image: np.ndarray, reference: np.ndarray,
                      authors, model=None, preprocessing=None) -> str:
    """Write ``out_dir/bioimageio/`` and validate it; returns the validation summary."""
    folder = out_dir / "bioimageio"
    folder.mkdir()
    try:
        return _fill_bioimageio(folder, out_dir, meta, image, reference, authors, model, preprocessing)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written package
        raise


def _fill_bioimageio(folder, out_dir, meta, image, reference, authors, model, preprocessing) -> str:
    np.save(folder / "test_input.npy", image[None, ..., None].astype(np.float32))
    np.save(folder / "test_output.npy", reference[None].astype(np.float32))
    _cover(image, reference, folder / "cover.png")
    import tempfile

    import tensorflow as tf

    # the same graph, but ``serve`` returns {"probabilities": ...}: bioimageio.core calls
    # TFSMLayer(call_endpoint="serve") and expects a dict
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "saved_model"
        module = serving_module(model, preprocessing, downsampling=meta["downsampling"],
                                threshold=meta["threshold"], dict_outputs=True)
        tf.saved_model.save(module, str(root), signatures=module._signatures)
        with zipfile.ZipFile(folder / "saved_model.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(root.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(root).as_posix())
    import tifffile

    tifffile.imwrite(folder / "sample_input.tif", image.astype(np.float32))
    tifffile.imwrite(folder / "sample_output.tif", reference.astype(np.float32))
    # the card as it will be; export() rewrites it with the validation result
    (folder / "README.md").write_text(model_card({**meta, "files": {**meta["files"], "bioimageio": "bioimageio"},
                                                  "checks": {**meta["checks"], "bioimageio_validation":
                                                             "see tem_keras.json of the export folder"}}),
                                      encoding="utf-8")
    names = [meta["classes"].get(str(k), f"class_{k}") for k in range(meta["num_classes"])]
    if authors is None:
        import getpass

        try:
            authors = [getpass.getuser()]
        except Exception:  # noqa: BLE001
            authors = ["tem_keras user"]
    rf = meta["receptive_field_px"]
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": _bioimageio_name(meta["name"]),
        "id": None,
        "description": (f"Semantic segmentation of nanoparticles in TEM images ({meta['model'].get('name')}, "
                        f"{meta['parameters']:,} parameters, receptive field {rf} px); trained with tem_keras."),
        "authors": [{"name": a} for a in authors],
        "cite": [{"text": "Horwath et al. Understanding important features of deep learning models for "
                          "segmentation of high-resolution transmission electron microscopy images. "
                          "npj Comput. Mater. 6, 108 (2020)", "doi": "10.1038/s41524-020-00363-x"},
                 {"text": "Sytwu, Groschner & Scott. Understanding the influence of receptive field and "
                          "network complexity in neural network-guided TEM image analysis. "
                          "Microsc. Microanal. 28, 1896 (2022)", "doi": "10.1017/S1431927622012466"}],
        "license": "BSD-3-Clause",
        "tags": ["tem", "electron-microscopy", "nanoparticles", "semantic-segmentation", "unet", "2d",
                 "tensorflow"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": "raw",
            "description": "raw intensities; outlier removal, standardisation and padding run inside the model",
            "axes": [{"type": "batch"},
                     {"type": "space", "id": "y", "size": {"min": 8, "step": 1}},
                     {"type": "space", "id": "x", "size": {"min": 8, "step": 1}},
                     {"type": "channel", "channel_names": ["raw"]}],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.tif"},
            "data": {"type": "float32"},
        }],
        "outputs": [{
            "id": "probabilities",
            "description": "class probabilities (softmax over the channel axis)",
            "axes": [{"type": "batch"},
                     {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                     {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}},
                     {"type": "channel", "channel_names": [_slug(n).replace("-", "_") for n in names]}],
            "test_tensor": {"source": "test_output.npy"},
            "sample_tensor": {"source": "sample_output.tif"},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {"tensorflow_saved_model_bundle": {
            "source": "saved_model.zip",
            "tensorflow_version": meta["versions"]["tensorflow"],
            "authors": [{"name": a} for a in authors],
        }},
        "config": {"tem_keras": {k: meta[k] for k in ("classes", "pixel_size_nm", "preprocessing",
                                                     "threshold", "downsampling", "receptive_field_px",
                                                     "receptive_field_nm")}},
    }
    if meta["pixel_size_nm"]:
        scale = float(meta["pixel_size_nm"])
        for tensor in (rdf["inputs"][0], rdf["outputs"][0]):
            for axis in tensor["axes"]:
                if axis["type"] == "space":
                    axis["unit"], axis["scale"] = "nanometer", scale
    del rdf["id"]
    import yaml

    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True))
    return validate_bioimageio(folder / "rdf.yaml")


def validate_bioimageio(rdf_path, *, test_model: bool = False) -> str:
    """Validate a bioimage.io ``rdf.yaml`` offline; returns a one-line summary.

    Parameters
    ----------
    rdf_path : str or Path
    test_model : bool
        Also run the model with ``bioimageio.core.test_model`` (reproduces the test output from
        the test input and runs other sizes and batch sizes) when bioimageio.core is installed.
        Without it, ``bioimageio.spec.load_description`` checks the format and the files
        (hashes, test tensors, sample tensors, cover), which needs no network.

    Raises
    ------
    ValueError
        The package is invalid or the model test failed.
    """
    try:
        import bioimageio.spec as spec  # noqa: PLR0402
    except Exception as error:  # noqa: BLE001
        return f"written, not validated (bioimageio.spec not installed: {type(error).__name__})"
    if test_model:
        try:
            from bioimageio.core import test_model as run_test
        except Exception:  # noqa: BLE001
            test_model = False
    if test_model:
        import tempfile

        here = os.getcwd()
        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)  # bioimageio.core unzips the weights into the working directory
            try:
                summary = run_test(str(Path(here, rdf_path)))
            finally:
                os.chdir(here)
        status, version = summary.status, spec.__version__
        failed = [d for d in summary.details if d.status == "failed"]
        if status != "passed":
            raise ValueError(f"bioimage.io model test {status}: "
                             + "; ".join(f"{d.name}: {[e.msg[:200] for e in d.errors]}" for d in failed[:3]))
        return f"passed (bioimageio.core model test: test tensors reproduced, sizes and batches run; spec {version})"
    description = spec.load_description(str(rdf_path), perform_io_checks=True)
    summary = description.validation_summary
    status = summary.status
    if status not in ("passed", "valid-format"):
        details = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors[:5])
        raise ValueError(f"bioimage.io validation {status}: {details}")
    warnings = [f"{'.'.join(map(str, w.loc))}: {w.msg}" for d in summary.details for w in d.warnings]
    return (f"{status} (bioimageio.spec {spec.__version__}, format {description.format_version}"
            + (f"; {len(warnings)} warning(s): {' | '.join(warnings)[:400]}" if warnings else "") + ")")


# --------------------------------------------------------------------------------------------
# The model card
# --------------------------------------------------------------------------------------------

def _fmt(value, digits=4):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def model_card(meta: dict) -> str:
    """The ``README.md`` of an export folder, from its ``tem_keras.json`` contents."""
    pre = meta["preprocessing"]
    pixel = meta["pixel_size_nm"]
    rf, rf_nm = meta["receptive_field_px"], meta["receptive_field_nm"]
    model = meta["model"]
    arch = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
    lines = [f"# {meta['name']} — tem_keras segmentation model", "",
             (f"Semantic segmentation of nanoparticles in transmission electron micrographs, exported by "
             f"tem_keras {meta['versions']['tem_keras']} on {meta['created']}."), "",
             "## Model", "",
             f"- Architecture: `{model.get('name')}`" + (f" ({arch})" if arch else ""),
             f"- Parameters: {meta['parameters']:,}; {meta['gflops_per_megapixel']:.3g} GFLOPs per megapixel",
             f"- Receptive field: {rf} px" + (f" = {rf_nm:.3g} nm at {pixel:g} nm/px" if rf_nm else ""),
             (f"- Down-sampling factor: {meta['downsampling']} (images are padded to a multiple of it "
             "inside the exported graph)"),
             "- Classes: " + ", ".join(f"{k} = {v}" for k, v in meta["classes"].items()),
             "- Output: class probabilities (softmax), float32, same height and width as the input", "",
             "## Intended use", "",
             f"- Pixel size: trained at {_fmt(pixel)} nm/px. Use images within about ×0.8–×1.25 of it "
             "(rescale others first): the network sees particles and lattice fringes at the scale in pixels "
             "it was trained on, and the receptive field is fixed in pixels." if pixel else
             "- Pixel size: unknown at training; use images at the pixel size of the training data.",
             ("- Input: single-channel micrographs, raw intensities (any dtype converted to float32), "
             "any height and width."), ""]
    training = meta.get("training") or {}
    lines += ["## Training data", ""]
    if training:
        images = training.get("images", {})
        lines += [f"- Dataset: `{training.get('dataset_dir')}`"
                  + (f" ({training.get('dataset_name')}, {training.get('dataset_mode')})"
                     if training.get("dataset_name") else ""),
                  "- Images: " + ", ".join(f"{v} {k}" for k, v in images.items()),
                  (f"- Patches: {training.get('patch_size')} px; loss {training.get('loss')}; "
                  f"{training.get('epochs')} epochs max; batch {training.get('batch_size')}; "
                  f"learning rate {training.get('learning_rate')}; seed {training.get('seed')}; "
                  f"{training.get('mixed_precision')}"),
                  f"- Augmentation: {json.dumps(training.get('augmentation'))}", ""]
    else:
        lines += ["Exported from a bare Keras model: no training record.", ""]
    lines += ["## Preprocessing (inside the SavedModel and ONNX graphs)", "",
              (f"1. Outlier removal: pixels above the 3×3 median by more than {pre['outlier_sigma']:g} "
               "robust σ (1.4826 × MAD) are replaced by the mean of their non-outlier neighbours."
               if pre["remove_outliers"] else "1. No outlier removal."),
              ("2. Per-image standardisation to mean 0, standard deviation 1." if pre["normalization"] == "standard"
               else f"2. Per-image percentile normalisation: percentiles {pre['percentiles']} map to 0 and 1."),
              ("3. Reflect-padding at the bottom and right to the down-sampling multiple; the output is "
              "cropped back."), ""]
    metrics = meta.get("metrics") or {}
    lines += ["## Metrics (test split of the training run, patches)", ""]
    if metrics:
        lines += ["| threshold | dice | IoU | precision | recall | soft dice |", "|---|---|---|---|---|---|"]
        for key, label in (("at_0.5", "0.5"), ("at_otsu", f"Otsu ({_fmt(metrics.get('otsu_threshold'), 3)})")):
            m = metrics.get(key)
            if isinstance(m, dict):
                lines.append(f"| {label} | " + " | ".join(_fmt(m.get(k)) for k in
                                                          ("dice", "iou", "precision", "recall", "soft_dice")) + " |")
        lines.append("")
    else:
        lines += ["No test metrics recorded.", ""]
    lines += ["## Threshold", "",
              (f"Masks use probability(particle) ≥ {meta['threshold']:g}" if meta["threshold"] is not None
               else "Masks are the argmax over the classes") + " (`serve_mask` signature, "
              "`tem_keras.json[\"threshold\"]`)." + (f" Otsu's threshold of the test probabilities was "
                                                   f"{meta['otsu_threshold']:.3g}." if meta.get("otsu_threshold") else ""),
              "", "## Limitations", "",
              ("- Trained on few images: check predictions on your own data (`tem-keras evaluate`) before "
              "measuring particles; accuracy degrades away from the training pixel size, contrast mode "
              "(bright field / HAADF / HRTEM), particle size and support."),
              ("- The receptive field bounds the context the model uses: structures larger than it are "
              "judged from their parts only."),
              "- Probabilities are not calibrated; the threshold was not tuned unless stated above.",
              ("- Within about half a receptive field of the image border the prediction depends on the "
              "reflect padding."), ("- Very large images are predicted whole by the SavedModel; use "
              "`tem_keras.predict` (tiles) or cut tiles yourself when memory is short."), "",
              "## How to run", "",
              "Without tem_keras (TensorFlow and NumPy only):", "", "```python",
              "import numpy as np, tensorflow as tf",
              "model = tf.saved_model.load(\"saved_model\")",
              "images = np.asarray(my_image, np.float32)[None, :, :, None]   # [1, H, W, 1], raw",
              "probabilities = model.serve(images).numpy()[0]                  # [H, W, C]",
              "mask = model.serve_mask(images).numpy()[0]                      # uint8 labels", "```", "",
              "See `examples/predict_with_savedmodel.py` in tem_keras for a folder of images.", "",
              "With tem_keras (tiles for large images, stacks, files with pixel sizes):", "", "```python",
              "import tem_keras",
              "model = tem_keras.load(\"path/to/this/folder\")",
              "result = tem_keras.predict(model, \"image.dm4\")   # result.mask, result.threshold", "```", "",
              "Command line:", "", "```", "tem-keras predict path/to/this/folder images/ --out masks/", "```", ""]
    if "model.onnx" in meta["files"].values():
        lines += ["ONNX (onnxruntime):", "", "```python", "import onnxruntime as ort",
                  "session = ort.InferenceSession(\"model.onnx\")",
                  "probabilities = session.run(None, {session.get_inputs()[0].name: images})[0]", "```", ""]
    lines += ["## Files", "", *[f"- `{v}` ({k})" for k, v in meta["files"].items()],
              "- `tem_keras.json`: classes, pixel size, normalisation, threshold, receptive field, metrics, versions"]
    for k, why in (meta.get("skipped") or {}).items():
        lines.append(f"- {k}: not written — {why}")
    if "bioimageio" in meta["files"] or "bioimageio" in (meta.get("skipped") or {}):
        lines += ["", "## bioimage.io package", "",
              ("`bioimageio/` holds `rdf.yaml` (format 0.5), the zipped SavedModel "
              "(`tensorflow_saved_model_bundle` weights: the same graph, its `serve` returning "
              "`{\"probabilities\": ...}` as bioimageio.core expects), test input/output tensors, sample "
              "tensors, a cover and this card. "
              "What the specification cannot describe:"),
              ("- Outlier removal (3×3 median, MAD threshold, neighbour mean) is not among the spec's "
              "preprocessing operations, and per-image standardisation would be applied a second time if it "
              "were declared; so the package declares no preprocessing: it all runs inside the SavedModel, "
              "which takes raw intensities."),
              ("- The padding to the down-sampling multiple also runs inside the graph, so the input axes "
              "accept any size (min 8, step 1) rather than the network's true step."),
              "- The threshold for masks is stored under `config` (the spec has no mask-threshold field).",
              f"- Validation: {meta['checks'].get('bioimageio_validation', 'not run')}"]
    lines += ["", "## Validation", "",
              ("At export, the SavedModel and ONNX outputs were compared with the in-memory Keras model "
              "(NumPy preprocessing) on a test image whose sides are not multiples of the down-sampling:"), ""]
    for k, v in meta["checks"].items():
        if k != "bioimageio_validation":
            lines.append(f"- {k}: {_fmt(v, 3)} (test image: {meta['test_image']})")
    lines += ["", "## Safety", "", _TRUST, "", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

@dataclass(repr=False)
class ExportedModel(_ModelInfo):
    """An opened export folder: what :func:`tem_keras.inference.predict` needs, and more.

    Attributes
    ----------
    model : keras.Model
        From ``model.keras`` (safe mode); when the folder has no ``model.keras``, a thin
        wrapper of the SavedModel's ``network`` signature.
    preprocessing : Preprocessing
        From ``tem_keras.json``.
    threshold : float
        From ``tem_keras.json``.
    path : Path
        The export folder.
    metadata : dict
        ``tem_keras.json``.
    """

    path: Path | None = None
    metadata: dict = field(default_factory=dict)
    _saved: object = None

    @property
    def saved_model(self):
        """The loaded SavedModel (``serve``, ``serve_mask``, ``network``); loaded on first use."""
        if self._saved is None:
            folder = self.path / "saved_model"
            if not (folder / "saved_model.pb").is_file():
                raise TEMInputError("has no saved_model/ (exported without it)", self.path)
            self._saved = _load_saved_model(folder)
        return self._saved

    def serve(self, images) -> np.ndarray:
        """Probabilities ``[N, H, W, C]`` of raw images ``[N, H, W, 1]`` through the SavedModel."""
        from .validation import check_serving_images  # hardening: NaN/constant, not a graph error

        return self.saved_model.serve(check_serving_images(images)).numpy()

    def predict(self, x, **kwargs):
        """:func:`tem_keras.inference.predict` with this model (tiles, files, stacks, thresholds)."""
        from .inference import predict

        return predict(self, x, **kwargs)

    @property
    def classes(self) -> dict:
        return self.metadata.get("classes", {})

    @property
    def pixel_size_nm(self):
        return self.metadata.get("pixel_size_nm")

    def __repr__(self):
        return f"ExportedModel({str(self.path)!r}, model={getattr(self.model, 'name', '?')!r})"


class _SavedModelNetwork:
    """The SavedModel's ``network`` signature behind the small part of the Keras Model interface
    that :func:`tem_keras.inference.predict` uses (``inputs``, ``outputs``, ``__call__``)."""

    def __init__(self, saved, num_classes: int, downsampling: int, name: str):
        import keras

        self._saved, self.name, self.downsampling = saved, name, downsampling
        self.inputs = [keras.KerasTensor((None, None, None, 1))]
        self.outputs = [keras.KerasTensor((None, None, None, num_classes))]

    def __call__(self, x, training=False):
        # predict() pads to the factor it finds (32 when it cannot walk this wrapper): pad on to
        # the network's own factor and crop back, so any padded size works
        tf = _tf()
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        return self._saved.network(pad_to_multiple_tf(x, self.downsampling))[:, :h, :w]


def _load_saved_model(folder: Path):
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(folder))
    except Exception as error:  # noqa: BLE001
        raise TEMInputError(f"could not be loaded as a SavedModel ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200] if str(error) else 'no details'}); "
                            "the export is corrupt or incomplete: export it again", folder) from None


def _load_keras_safe(path: Path):
    import keras

    from . import models  # noqa: F401  (registers the custom layers)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001
        text = str(error)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise TEMInputError("holds Python code (a Lambda layer or a serialised function) and was "
                                "refused: tem_keras loads .keras files in Keras's safe mode. Rebuild the "
                                "model without Lambda layers (register a custom layer instead)", path) from None
        raise TEMInputError(f"could not be loaded as a Keras model ({type(error).__name__}: "
                            f"{text.splitlines()[0][:200] if text else 'no details'}); the file is "
                            "corrupt or incomplete", path) from None


def load(path):
    """Open a run folder, an export folder or a ``.keras`` file for :func:`tem_keras.predict`.

    Parameters
    ----------
    path : str or Path
        A run folder (``config.json`` + ``best.keras``): returns its
        :class:`~tem_keras.training.Run`. An export folder (``tem_keras.json``): returns an
        :class:`ExportedModel` with the Keras model (safe mode), preprocessing and threshold,
        and the SavedModel on demand (``.serve``). A ``.keras`` file: returns an
        :class:`ExportedModel` with the default preprocessing.

    Raises
    ------
    TEMInputError
        Missing path, a folder that is neither, a corrupt or partial export (missing or
        unreadable ``tem_keras.json``, files it lists missing, an unreadable model), or a
        ``.keras`` file holding Python code (Lambda layers are refused).
    """
    from .data.preprocess import Preprocessing

    path = Path(path)
    if not path.exists():
        raise TEMInputError("no such run folder, export folder or .keras file", path)
    if path.is_file():
        if path.suffix.lower() != ".keras":
            raise TEMInputError("expected a run folder, an export folder or a .keras file", path)
        return ExportedModel(_load_keras_safe(path), Preprocessing(), None, None, path.parent, {})
    if (path / "config.json").is_file() and (path / "best.keras").is_file():
        from .validation import load_run  # hardening: damaged best.keras, empty history.csv

        return load_run(path)
    meta_file = path / "tem_keras.json"
    if not meta_file.is_file():
        present = [n for n in ("saved_model", "model.keras", "README.md") if (path / n).exists()]
        if present:
            raise TEMInputError(f"looks like a partial export ({', '.join(present)} but no tem_keras.json): "
                                "the export was interrupted; export it again", path)
        raise TEMInputError("is neither a run folder (config.json + best.keras) nor an export folder "
                            "(tem_keras.json)", path)
    try:
        meta = json.loads(meta_file.read_text())
        if not isinstance(meta, dict) or "files" not in meta or "preprocessing" not in meta:
            raise ValueError("required keys 'files' and 'preprocessing' are missing")
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    except (ValueError, TypeError) as error:
        raise TEMInputError(f"tem_keras.json is corrupt ({error}); export the model again", path) from None
    missing = [f for f in meta["files"].values() if not (path / f).exists()]
    if (path / "saved_model").exists() and not (path / "saved_model" / "saved_model.pb").is_file():
        missing.append("saved_model/saved_model.pb")
    if missing:
        raise TEMInputError(f"is a partial export: {', '.join(missing)} listed in tem_keras.json "
                            "is missing; export the model again", path)
    threshold = meta.get("threshold")
    threshold = float(threshold) if isinstance(threshold, (int, float)) else None
    if "keras" in meta["files"]:
        model = _load_keras_safe(path / meta["files"]["keras"])
        return ExportedModel(model, preprocessing, threshold, None, path, meta)
    if "saved_model" in meta["files"]:
        saved = _load_saved_model(path / meta["files"]["saved_model"])
        network = _SavedModelNetwork(saved, int(meta.get("num_classes", 2)), int(meta.get("downsampling", 32)),
                                     str(meta.get("name", "saved_model")))
        return ExportedModel(network, preprocessing, threshold, None, path, meta, saved)
    raise TEMInputError("holds neither model.keras nor saved_model/; export with formats including "
                        "'keras' or 'saved_model'", path)


class _CallableModule(type(json)):
    """``tem_keras.export`` is both this module and the :func:`export` function: importing the
    submodule makes ``tem_keras.export`` the module, so the module is callable as the function."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


import sys as _sys

_sys.modules[__name__].__class__ = _CallableModule
