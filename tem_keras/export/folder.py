"""The export folder: :func:`export` writes every format, the metadata and the card.

The layout of the folder is in :mod:`tem_keras.export`. Each format has its writer module
(:mod:`~tem_keras.export.saved_model`, :mod:`~tem_keras.export.keras_file`,
:mod:`~tem_keras.export.onnx_file`, :mod:`~tem_keras.export.bioimageio`); every file that runs the
model is checked against the in-memory model on a test image when it is written.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import ExportedModel, Run, SavedModelNetwork, load, model_kind
from ..data.preprocess import pad_to_multiple
from ..hardware import float32_model
from . import predict_script
from ..errors import TEMInputError
from ..inference.predictor import Predictor
from ..io.outputs import OutputFolder, legacy_folder
from ..validation import check_bool, check_number, check_path, check_pixel_size
from . import onnx_file
from .bioimageio import write_bioimageio
from .keras_file import write_keras
from .card import default_name, model_card, training_summary
from .saved_model import write_saved_model
from .serving import serving_module

__all__ = ["export", "check_export", "FORMATS", "EXPORT_FORMAT"]

#: every format :func:`export` knows, in the order it writes them
FORMATS = ("saved_model", "keras", "onnx", "bioimageio")
#: version of the export folder layout (``tem_keras.json["export_format"]``)
EXPORT_FORMAT = 1


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
    from ..data.preprocess import Preprocessing

    bundle = load(run_or_model)  # a model, a run (folder), an export folder or a .keras file
    preprocessing = preprocessing or bundle.preprocessing or Preprocessing()
    threshold = bundle.threshold if threshold is None else threshold
    threshold = None if threshold is None else float(threshold)
    if isinstance(bundle, Run):
        return _Source(bundle.model, preprocessing, threshold, dict(bundle.config),
                       dict(bundle.metrics or {}), Path(bundle.path), dict(bundle.split or {}))
    if isinstance(bundle, ExportedModel):
        return _Source(bundle.model, preprocessing, threshold,
                       dict(bundle.metadata.get("run_config", {})), dict(bundle.metadata.get("metrics", {})))
    return _Source(bundle.model, preprocessing, threshold)


#: what :func:`export` writes into an export folder (its manifest lists them)
EXPORT_ENTRIES = ("model.keras", "saved_model", "model.onnx", "predict.py", "bioimageio", "README.md",
                  "tem_keras.json")


_LEGACY_EXPORT = legacy_folder("tem_keras.json", EXPORT_ENTRIES)


def _out_folder(out_dir: Path, overwrite: bool, inputs=()) -> OutputFolder:
    """The export folder, checked touching nothing: see :class:`tem_keras.io.outputs.OutputFolder`."""
    folder = OutputFolder(out_dir, "export", inputs=inputs)
    if (out_dir.is_dir() and folder.owner is None and (out_dir / "config.json").is_file()
            and (out_dir / "best.keras").is_file()):
        raise TEMInputError("is a training run folder; export into another folder (it is never "
                            "overwritten, even with overwrite=True)", out_dir)
    folder.check_prepare(overwrite=overwrite, legacy=_LEGACY_EXPORT)
    return folder


def _checked_formats(formats, threshold, pixel_size_nm, overwrite) -> tuple:
    """The formats as a tuple, after checking them and the other options of :func:`export`."""
    if isinstance(formats, str):
        formats = tuple(f.strip() for f in formats.split(",") if f.strip())
    check_number("threshold", threshold, 0.0, 1.0, optional=True)
    check_pixel_size("pixel_size_nm", pixel_size_nm)
    check_bool("overwrite", overwrite)
    if not isinstance(formats, (list, tuple, set, frozenset)) or not all(isinstance(f, str) for f in formats):
        raise TypeError(f"formats must be a list of format names or a comma-separated string, got {formats!r}")
    formats = tuple(dict.fromkeys(formats))
    if not formats:
        raise ValueError(f"formats is empty: an export needs a model; choose from {FORMATS}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {FORMATS}")
    if "bioimageio" in formats and "saved_model" not in formats:
        raise ValueError("the bioimage.io package holds the SavedModel: add 'saved_model' to formats")
    return formats


def check_export(run_dir, out_dir, formats=FORMATS, overwrite: bool = False, *,
                 threshold: float | None = None, pixel_size_nm: float | None = None) -> None:
    """The arguments of :func:`export` for a model on disk, checked touching nothing and without
    TensorFlow (``tem-keras export`` answers at once): the options, that ``run_dir`` is a run
    folder, export folder or ``.keras`` file, and that ``out_dir`` may be written.

    Raises
    ------
    TEMInputError, ValueError
        As :func:`export` would, before it loads the model.
    """
    _checked_formats(formats, threshold, pixel_size_nm, overwrite)
    model_kind(run_dir)
    _out_folder(Path(out_dir), overwrite, inputs=[run_dir])


def _example_image(src: _Source, d: int, size=(90, 125)) -> tuple[np.ndarray, str]:
    """A test image: the run's first test (or validation) image when readable, else synthetic."""
    dataset = src.config.get("data", {}).get("dataset_dir")
    if dataset and src.split:
        try:
            from ..data.datasets import discover
            from ..io import read_image

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
    from ..data.synthetic import make_image

    image = make_image(max(size), pixel_size_nm=src.config.get("pixel_size_nm"), seed=0).image
    return np.ascontiguousarray(image[:size[0], :size[1]].astype(np.float32)), "synthetic image"


def _in_memory_probabilities(src: _Source, image: np.ndarray, d: int) -> np.ndarray:
    """Probabilities of one image with the NumPy preprocessing and the Keras model."""
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
        The export folder; it must be new or empty, or hold an earlier export (replaced only
        with ``overwrite``). It may not be or hold the model or run exported.
    formats : sequence of str
        Any of ``"saved_model"``, ``"keras"``, ``"onnx"``, ``"bioimageio"`` (all by default).
        ``"onnx"`` (with ``predict.py``) is skipped with a message when tf2onnx or onnxruntime
        cannot be imported (both come with the base install); ``"bioimageio"`` needs
        ``"saved_model"`` and is validated offline with ``bioimageio.spec`` (base install too). ``tem_keras.json`` and
        ``README.md`` are always written.
    overwrite : bool
        Replace an earlier export in ``out_dir``: only the files an export wrote there (listed
        in its manifest ``.tem_keras_output``) are removed; a folder holding other files is
        refused.
    preprocessing : Preprocessing, optional
        Overrides the run's.
    threshold : float, optional
        Threshold of the particle probability for masks; default the run's ``thresholds.json``,
        else 0.5 (binary models) or the argmax (more classes).
    pixel_size_nm : float, optional
        Overrides the run's (for a bare model, the only source).
    name : str, optional
        Model name in the card and the bioimage.io package; default the architecture and what it
        was trained on (``"residual_unet for synthetic bright-field micrographs"``).
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
        ``out_dir`` is or holds the model, or the run folder is incomplete.
    FileExistsError
        ``out_dir`` holds an earlier export (and not ``overwrite``), or files export did not
        write.
    RuntimeError
        An exported file does not reproduce the in-memory model (a bug: please report it).

    Examples
    --------
    Export a run, then serve it without tem_keras::

        export("runs/unet_seed0", "exports/unet_seed0")
        probabilities = tf.saved_model.load("exports/unet_seed0/saved_model").serve(images)
    """
    formats = _checked_formats(formats, threshold, pixel_size_nm, overwrite)
    check_path("out_dir", out_dir, what="an export folder")
    check_bool("verbose", verbose)
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise TypeError(f"name must be a non-empty string or None, got {name!r}")
    if authors is not None and (isinstance(authors, str) or not all(isinstance(a, str) for a in authors)):
        raise TypeError(f"authors must be a list of names (strings) or None, got {authors!r}")
    src = _source(run_or_model, preprocessing, threshold)
    model = src.model = _float32_model(src.model, run_or_model)
    out_dir = Path(out_dir)
    _out_folder(out_dir, overwrite, inputs=[run_or_model, src.run_path]).prepare(
        overwrite=overwrite, legacy=_LEGACY_EXPORT, entries=EXPORT_ENTRIES)
    say = print if verbose else (lambda *a, **k: None)

    from ..models.description import describe

    pixel = pixel_size_nm if pixel_size_nm is not None else src.config.get("pixel_size_nm")
    info = describe(model, pixel)
    d = max(1, int(info["downsampling"]))
    if src.threshold is None and int(model.outputs[0].shape[-1]) <= 2:
        src.threshold = 0.5
    training = training_summary(src.config, src.split)
    name = name or default_name(src.config.get("model", {}).get("name") or model.name, training)
    image, image_source = _example_image(src, d)
    reference = _in_memory_probabilities(src, image, d)
    written, checks, skipped = {}, {}, {}

    if "keras" in formats:
        write_keras(model, out_dir / "model.keras")
        written["keras"] = "model.keras"
        say(f"wrote {out_dir / 'model.keras'}")

    # one serving graph, traced once, for the SavedModel, the ONNX file and the bioimage.io package
    module = (serving_module(model, src.preprocessing, downsampling=d, threshold=src.threshold)
              if {"saved_model", "onnx"} & set(formats) else None)
    if "saved_model" in formats:
        checks["saved_model_max_abs_difference"] = write_saved_model(module, out_dir / "saved_model",
                                                                     image, reference)
        written["saved_model"] = "saved_model"
        say(f"wrote {out_dir / 'saved_model'} (max |difference| to the Keras model "
            f"{checks['saved_model_max_abs_difference']:.2g})")

    if "onnx" in formats:
        _write_onnx(module, out_dir, image, reference, written, checks, skipped, say)

    meta = _metadata(src, model, info, name=name, written=written, skipped=skipped, pixel=pixel,
                     d=d, training=training, checks=checks, image_source=image_source)
    if "bioimageio" in formats:
        _write_bioimageio(out_dir, meta, image, reference, authors, module, say)

    (out_dir / "README.md").write_text(model_card(meta), encoding="utf-8")
    if "bioimageio" in written:
        shutil.copy(out_dir / "README.md", out_dir / "bioimageio" / "README.md")
    (out_dir / "tem_keras.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    say(f"wrote {out_dir / 'tem_keras.json'} and {out_dir / 'README.md'}")
    return out_dir


def _write_onnx(module, out_dir: Path, image, reference, written: dict, checks: dict, skipped: dict,
                say) -> None:
    """``model.onnx`` (checked against ``reference``) and ``predict.py`` beside it, or the reason
    it was skipped; ``written``, ``checks`` and ``skipped`` are filled in."""
    problem = onnx_file.onnx_unavailable()
    if problem:
        skipped["onnx"] = problem
        say(f"skipped ONNX: {problem}")
    else:
        try:
            checks["onnx_max_abs_difference"] = onnx_file.write_onnx(module, out_dir / "model.onnx",
                                                                  image, reference)
        except Exception as error:  # noqa: BLE001  (an op tf2onnx cannot convert: keep the rest)
            (out_dir / "model.onnx").unlink(missing_ok=True)
            skipped["onnx"] = (f"conversion failed ({type(error).__name__}: "
                               f"{str(error).splitlines()[0][:300] if str(error) else ''})")
            say(f"skipped ONNX: {skipped['onnx']}")
        else:
            written["onnx"] = "model.onnx"
            say(f"wrote {out_dir / 'model.onnx'} (max |difference| to the Keras model "
                f"{checks['onnx_max_abs_difference']:.2g}, onnxruntime)")
            shutil.copyfile(predict_script.__file__, out_dir / "predict.py")  # the light runtime, verbatim
            written["runtime"] = "predict.py"
            say(f"wrote {out_dir / 'predict.py'} (runs model.onnx with onnxruntime and NumPy only)")


def _float32_model(model, run_or_model):
    """The model to export, computing in float32 on every machine; one 1-channel input."""
    if isinstance(model, SavedModelNetwork):
        raise TEMInputError("holds only a SavedModel; exporting again needs model.keras",
                            getattr(run_or_model, "path", run_or_model))
    model = float32_model(model)
    if len(model.inputs) != 1 or model.inputs[0].shape[-1] not in (1, None):
        raise ValueError(f"export needs a model with one 1-channel input, got inputs "
                         f"{[tuple(i.shape) for i in model.inputs]}")
    return model


def _write_bioimageio(out_dir: Path, meta: dict, image, reference, authors, module, say) -> None:
    """The bioimage.io package, its validation recorded in ``meta`` (or why it was not written:
    the rest of the export stays usable)."""
    try:
        validation = write_bioimageio(out_dir, meta, image, reference, authors, module)
    except Exception as error:  # noqa: BLE001
        validation = f"not written: {type(error).__name__}: {error}"
        meta["skipped"]["bioimageio"] = validation
    else:
        meta["files"]["bioimageio"] = "bioimageio"
    meta["checks"]["bioimageio_validation"] = validation
    say(f"bioimage.io package: {validation}")


def _metadata(src, model, info: dict, *, name, written, skipped, pixel, d, training, checks,
              image_source) -> dict:
    """The contents of ``tem_keras.json``."""
    num_classes = int(model.outputs[0].shape[-1])
    classes = src.config.get("classes") or ({"0": "background", "1": "particle"} if num_classes <= 2
                                            else {str(k): f"class_{k}" for k in range(num_classes)})
    return {
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
        # float32 activations per input pixel: sets which images tem_keras predicts whole
        "activation_bytes_per_pixel": Predictor.of(model).activation_bytes("float32"),
        "receptive_field_px": info["receptive_field_px"],
        "receptive_field_nm": info["receptive_field_nm"],
        "parameters": info["parameters"],
        "gflops_per_megapixel": info["gflops_per_megapixel"],
        "model": src.config.get("model", {"name": model.name}),
        "metrics": src.metrics,
        "training": training,
        "checks": checks,
        "test_image": image_source,
        "versions": _versions(),
        "run_config": src.config,
    }


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

    from .. import __version__

    out = {"tem_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
           "numpy": np.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for module in ("tf2onnx", "onnxruntime", "bioimageio.spec"):
        try:
            out[module] = version(module)
        except PackageNotFoundError:
            continue
    return out
