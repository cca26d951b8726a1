"""What training and export leave on disk, and how it is opened: :class:`Run`, :class:`ExportedModel`,
:class:`ModelBundle` and one :func:`load`.

A *model bundle* is a model together with what it needs to be applied to raw micrographs: its
:class:`~tem_keras.data.preprocess.Preprocessing`, the tuned threshold of the particle
probability, the class names and the pixel size it was trained at. Every way of holding a
trained model is one:

- :class:`ModelBundle` — a bare Keras model (default preprocessing) or a bundle made by hand;
- :class:`Run` — a training run folder (``config.json``, ``best.keras``, ``thresholds.json``);
- :class:`ExportedModel` — an export folder (``tem_keras.json``, ``model.keras``, ``saved_model/``).

:func:`load` opens any of them (or a ``.keras`` file) and :func:`tem_keras.predict`,
:func:`tem_keras.evaluate` and :func:`tem_keras.export` accept what it returns. The run folder
follows StarDist's convention: ``config.json`` rebuilds the model, ``thresholds.json`` holds the
tuned threshold, and the folder reloads to the same predictions.

This module depends only on :mod:`tem_keras.io`-level helpers, :mod:`tem_keras.data` and
:mod:`tem_keras.models`; inference, export and training build on it.

References
----------
U. Schmidt, M. Weigert, C. Broaddus, G. Myers, "Cell detection with star-convex polygons",
MICCAI 2018 (StarDist's model folder with ``config.json`` and ``thresholds.json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _env  # noqa: F401
from .errors import TEMInputError
from .validation import check_keras_file
from .validation.files import (check_config_json, check_export_json, check_history_csv, check_split,
                      check_thresholds_json, read_json)

__all__ = ["ModelBundle", "Run", "ExportedModel", "SavedModelNetwork", "load", "load_keras_model",
           "model_kind", "read_history", "read_threshold", "write_threshold"]

#: name of the file holding a run's tuned threshold (``{"threshold": float, ...}``)
THRESHOLDS_FILE = "thresholds.json"


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

def read_threshold(folder) -> float | None:
    """The tuned threshold stored in ``folder/thresholds.json``, or None.

    Parameters
    ----------
    folder : str or Path
        A run folder (or any folder holding a ``thresholds.json`` of the form
        ``{"threshold": float, ...}``).

    Returns
    -------
    float or None
        None when the file is missing.

    Raises
    ------
    TEMInputError
        The file is not JSON or holds no number in [0, 1] under ``"threshold"``.
    """
    path = Path(folder) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    return float(check_thresholds_json(read_json(path), path)["threshold"])


def write_threshold(folder, threshold: float, **details) -> Path:
    """Store a tuned threshold in ``folder/thresholds.json`` (read back by :func:`read_threshold`).

    Parameters
    ----------
    folder : str or Path
        A run folder.
    threshold : float
        Threshold of the particle probability, in [0, 1].
    **details
        Stored beside it (e.g. the metric it maximises and the dataset it was tuned on).
    """
    path = Path(folder) / THRESHOLDS_FILE
    path.write_text(json.dumps({"threshold": float(threshold), **details}, indent=2))
    return path


def read_history(path):
    """A run's ``history.csv`` as a DataFrame (one row per epoch); None when it is missing or
    empty (no epoch finished: an interrupted fit).

    Raises
    ------
    TEMInputError
        Binary content, no header line, or rows that are not a table; the message names the file.
    """
    import io

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return None
    text = check_history_csv(path)
    if not text.strip():
        return None
    try:
        return pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, ValueError) as error:
        raise TEMInputError(f"is not a table of epochs ({' '.join(str(error).split())[:120]}); the run "
                            "folder is damaged: delete history.csv or train again", path) from None


# --------------------------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------------------------

class ModelBundle:
    """A model with its preprocessing, threshold, classes and pixel size.

    Parameters
    ----------
    model : keras.Model
        Input ``[N, H, W, 1]`` (standardised images), output class probabilities ``[N, H, W, C]``.
    preprocessing : Preprocessing, optional
        None: the default :class:`~tem_keras.data.preprocess.Preprocessing`.
    threshold : float, optional
        Tuned threshold of the particle probability (None: 0.5 / argmax).
    classes : dict, optional
        Class index (str) -> name.
    pixel_size_nm : float, optional
        Pixel size of the training images.

    Notes
    -----
    :class:`Run` and :class:`ExportedModel` are model bundles too; ``run`` is the
    :class:`Run` behind a bundle (None when there is none).
    """

    run = None

    def __init__(self, model, preprocessing=None, threshold: float | None = None, classes=None,
                 pixel_size_nm: float | None = None):
        self.model = model
        self.preprocessing = preprocessing
        self.threshold = None if threshold is None else float(threshold)
        self.classes = dict(classes or {})
        self.pixel_size_nm = pixel_size_nm

    def __repr__(self):
        return (f"{type(self).__name__}(model={getattr(self.model, 'name', '?')!r}, "
                f"threshold={self.threshold})")


@dataclass(repr=False)
class Run(ModelBundle):
    """A finished (or loaded) training run.

    Attributes
    ----------
    path : Path
        The run folder.
    model : keras.Model
        The model with the best validation weights.
    config : dict
        Contents of ``config.json``.
    history : pandas.DataFrame
        One row per epoch.
    metrics : dict
        Test-split scores (``metrics.json``).
    split : dict
        Stems of the train/val/test images.

    Class probabilities of one image: ``tem_keras.predict_image(run, image)``.
    """

    path: Path
    model: object
    config: dict
    history: object = None
    metrics: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path) -> "Run":
        """Open a run folder (the best model, config, history, metrics and split)."""
        path = Path(path)
        for name in ("config.json", "best.keras"):
            if not (path / name).is_file():
                raise TEMInputError(f"not a finished tem_keras run folder: {name} is missing", path)
        advice = "; the run folder is damaged: train again"
        config = check_config_json(read_json(path / "config.json", advice=advice), path / "config.json")
        split, metrics = {}, {}
        if (path / "split.json").is_file():
            split = check_split(read_json(path / "split.json", advice=advice), path / "split.json",
                                field="split.json", required=True)
        if (path / "metrics.json").is_file():
            metrics = read_json(path / "metrics.json", advice=advice)
            if not isinstance(metrics, dict):
                raise TEMInputError("must hold a JSON object of scores" + advice, path / "metrics.json")
        read_threshold(path)  # a damaged thresholds.json is reported now, not at the first prediction
        history = read_history(path / "history.csv")
        return cls(path, load_keras_model(path / "best.keras"), config, history, metrics, split)

    @property
    def preprocessing(self):
        """The run's :class:`~tem_keras.data.preprocess.Preprocessing` (None if the config has none)."""
        from .data.preprocess import Preprocessing

        config = self.config.get("preprocessing")
        return None if config is None else Preprocessing.from_dict(config)

    @property
    def threshold(self) -> float | None:
        """The tuned threshold of ``thresholds.json`` (None when the run has none)."""
        return read_threshold(self.path)

    @property
    def classes(self) -> dict:
        return dict(self.config.get("classes") or {})

    @property
    def pixel_size_nm(self):
        return self.config.get("pixel_size_nm")

    @property
    def run(self) -> "Run":
        return self

    def __repr__(self):
        dice = self.metrics.get("per_image", {}).get("dice")
        test = f"test dice {dice['mean']:.3f} ± {dice['std']:.3f} per image" if dice else "no test images"
        return f"Run({str(self.path)!r}, model={self.model.name!r}, {test})"


class ExportedModel(ModelBundle):
    """An opened export folder: a model bundle, plus the SavedModel on demand.

    Attributes
    ----------
    model : keras.Model
        From ``model.keras`` (safe mode); when the folder has no ``model.keras``, a
        :class:`SavedModelNetwork` around the SavedModel's ``network`` signature.
    preprocessing : Preprocessing
        From ``tem_keras.json``.
    threshold : float
        From ``tem_keras.json``.
    path : Path
        The export folder.
    metadata : dict
        ``tem_keras.json``.
    """

    def __init__(self, model, preprocessing, threshold, path: Path, metadata: dict, saved=None):
        metadata = dict(metadata or {})
        super().__init__(model, preprocessing, threshold, metadata.get("classes"),
                         metadata.get("pixel_size_nm"))
        self.path, self.metadata, self._saved = Path(path), metadata, saved

    @property
    def saved_model(self):
        """The loaded SavedModel (``serve``, ``serve_mask``, ``network``); loaded on first use."""
        if self._saved is None:
            folder = self.path / "saved_model"
            if not (folder / "saved_model.pb").is_file():
                raise TEMInputError("has no saved_model/ (exported without it)", self.path)
            self._saved = load_saved_model(folder)
        return self._saved

    def serve(self, images) -> np.ndarray:
        """Probabilities ``[N, H, W, C]`` of raw images ``[N, H, W, 1]`` through the SavedModel."""
        from .validation import check_serving_images  # NaN or constant images: a clear message

        return self.saved_model.serve(check_serving_images(images)).numpy()

    def __repr__(self):
        return f"ExportedModel({str(self.path)!r}, model={getattr(self.model, 'name', '?')!r})"


class SavedModelNetwork:
    """The SavedModel's ``network`` signature behind the small part of the Keras Model interface
    that :func:`tem_keras.predict` uses (``inputs``, ``outputs``, ``weights``, ``__call__``).

    Parameters
    ----------
    saved : object
        ``tf.saved_model.load`` of an export's ``saved_model/``.
    num_classes, downsampling : int
        From ``tem_keras.json``.
    name : str
        Shown in messages.
    """

    def __init__(self, saved, num_classes: int, downsampling: int, name: str):
        import keras

        self.saved, self.name, self.downsampling = saved, name, downsampling
        self.inputs = [keras.KerasTensor((None, None, None, 1))]
        self.outputs = [keras.KerasTensor((None, None, None, num_classes))]

    def __call__(self, x, training=False):
        # predict() pads to the factor it finds (32 when it cannot walk this wrapper): pad on to
        # the network's own factor and crop back, so any padded size works
        import tensorflow as tf

        from .data.preprocess_tf import pad_to_multiple_tf

        h, w = tf.shape(x)[1], tf.shape(x)[2]
        return self.saved.network(pad_to_multiple_tf(x, self.downsampling))[:, :h, :w]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_saved_model(folder: Path):
    """``tf.saved_model.load`` with a clear error for a corrupt or partial export folder."""
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(folder))
    except Exception as error:  # noqa: BLE001
        raise TEMInputError(f"could not be loaded as a SavedModel ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200] if str(error) else 'no details'}); "
                            "the export is corrupt or incomplete: export it again", folder) from None


def load_keras_model(path):
    """A ``.keras`` file loaded in Keras's safe mode (no Lambda layers, no serialised code).

    Raises
    ------
    TEMInputError
        The file holds Python code, or is corrupt or incomplete; the message names the file.
    """
    import keras

    from .models import register_layers

    register_layers()

    path = Path(path)
    check_keras_file(path)  # empty, truncated, or damaged weights: said before Keras opens it
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


def _open_export_folder(path: Path) -> ExportedModel:
    from .data.preprocess import Preprocessing

    meta_path = path / "tem_keras.json"
    meta = check_export_json(read_json(meta_path, advice="; the export is corrupt: export the model again"),
                             meta_path)
    preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    missing = [f for f in meta["files"].values() if not (path / f).exists()]
    if (path / "saved_model").exists() and not (path / "saved_model" / "saved_model.pb").is_file():
        missing.append("saved_model/saved_model.pb")
    if missing:
        raise TEMInputError(f"is a partial export: {', '.join(missing)} listed in tem_keras.json "
                            "is missing; export the model again", path)
    threshold = None if meta.get("threshold") is None else float(meta["threshold"])
    if "keras" in meta["files"]:
        model = load_keras_model(path / meta["files"]["keras"])
        return ExportedModel(model, preprocessing, threshold, path, meta)
    if "saved_model" in meta["files"]:
        saved = load_saved_model(path / meta["files"]["saved_model"])
        network = SavedModelNetwork(saved, int(meta.get("num_classes", 2)), int(meta.get("downsampling", 32)),
                                    str(meta.get("name", "saved_model")))
        return ExportedModel(network, preprocessing, threshold, path, meta, saved)
    raise TEMInputError("holds neither model.keras nor saved_model/; export with formats including "
                        "'keras' or 'saved_model'", path)


def load(model_or_path) -> ModelBundle:
    """Open a trained model for :func:`tem_keras.predict`: the one loader of tem_keras.

    Parameters
    ----------
    model_or_path : keras.Model, ModelBundle, str or Path
        A Keras model (returned in a :class:`ModelBundle` with the default preprocessing); a
        bundle (:class:`Run`, :class:`ExportedModel`: returned as it is); a run folder
        (``config.json`` + ``best.keras``: its :class:`Run`); an export folder
        (``tem_keras.json``: an :class:`ExportedModel` with the Keras model in safe mode,
        preprocessing and threshold, and the SavedModel on demand, ``.serve``); a folder holding
        only ``model.keras``, or a ``.keras`` file (a :class:`ModelBundle`, default preprocessing).

    Returns
    -------
    ModelBundle
        ``.model``, ``.preprocessing``, ``.threshold``, ``.classes``, ``.pixel_size_nm``.

    Raises
    ------
    TEMInputError
        Missing path, a folder that is none of these, a corrupt or partial export (missing or
        unreadable ``tem_keras.json``, files it lists missing, an unreadable model), or a
        ``.keras`` file holding Python code (Lambda layers are refused).

    Examples
    --------
    A ``.keras`` file opens as a bundle without preprocessing, threshold or pixel size of its
    own (:func:`tem_keras.predict` then applies the defaults); a run or export folder has them:

    >>> from tem_keras.models import unet
    >>> unet(depth=1, base_filters=2).save("tiny.keras")
    >>> bundle = load("tiny.keras")
    >>> bundle.model.name, bundle.threshold, bundle.preprocessing, bundle.pixel_size_nm
    ('unet_d1_f2', None, None, None)
    """
    if isinstance(model_or_path, ModelBundle):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        import keras

        if isinstance(model_or_path, keras.Model):
            return ModelBundle(model_or_path)
        raise TypeError(f"expected a keras.Model, a Run, an ExportedModel or a path, "
                        f"got {type(model_or_path).__name__}")
    path = Path(model_or_path)
    kind = model_kind(path)
    if kind == "run":
        return Run.load(path)
    if kind == "export":
        return _open_export_folder(path)
    return ModelBundle(load_keras_model(path if kind == "keras" else path / "model.keras"))


def model_kind(path) -> str:
    """What a model path holds, from its file names only (no TensorFlow, nothing read).

    Returns
    -------
    {"keras", "run", "export", "model_folder"}
        A ``.keras`` file, a run folder (``config.json`` + ``best.keras``), an export folder
        (``tem_keras.json``) or a folder holding only ``model.keras``.

    Raises
    ------
    TEMInputError
        No such path, another kind of file, a partial export or a folder of none of these kinds.
    """
    path = Path(path)
    if not path.exists():
        raise TEMInputError("no such model file (.keras), run folder or export folder", path)
    if path.is_file():
        if path.suffix.lower() != ".keras":
            raise TEMInputError("expected a run folder, an export folder or a .keras file", path)
        return "keras"
    if (path / "config.json").is_file() and (path / "best.keras").is_file():
        return "run"
    if (path / "tem_keras.json").is_file():
        return "export"
    present = [n for n in ("saved_model", "README.md") if (path / n).exists()]
    if present:
        raise TEMInputError(f"looks like a partial export ({', '.join(present)} but no tem_keras.json): "
                            "the export was interrupted; export it again", path)
    if (path / "model.keras").is_file():
        return "model_folder"
    raise TEMInputError("is neither a run folder (config.json + best.keras) nor an export folder "
                        "(tem_keras.json)", path)
