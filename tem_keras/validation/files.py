"""What the files tem_keras reads back must hold, checked on read.

``dataset.json`` (a data set), ``config.json``, ``split.json``, ``thresholds.json`` and
``history.csv`` (a run folder) and ``tem_keras.json`` (an export folder): each has a ``check_*``
function that returns the parsed contents or raises a :class:`~tem_keras.errors.TEMInputError`
naming the file and the field::

    /data/ds/dataset.json: "classes" must be a list of names or an object {index: name}, got 'particle' (str)

Plain Python checks (no schema library); keys a file may hold beyond these are left alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import TEMInputError

__all__ = ["PREPROCESSING_KEYS", "SPLITS", "check_config_json", "check_dataset_json",
           "check_export_json", "check_history_csv", "check_preprocessing", "check_split",
           "check_thresholds_json", "read_json"]

#: the splits of a data set, in order
SPLITS = ("train", "val", "test")
#: the fields of :class:`tem_keras.data.preprocess.Preprocessing` (a test keeps them equal)
PREPROCESSING_KEYS = ("remove_outliers", "outlier_sigma", "normalization", "percentiles")
#: mask values are uint8 and 255 marks unlabelled pixels: class indices are 0..254
_MAX_CLASS = 254


def _type(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _bad(path, field: str, problem: str) -> TEMInputError:
    return TEMInputError(f'"{field}" {problem}', path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_json(path, *, advice: str = "") -> object:
    """The parsed JSON of ``path``; unreadable bytes or JSON garbage: an error naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError:
        raise TEMInputError(f"is not a text (JSON) file: it holds binary data{advice}", path) from None
    except json.JSONDecodeError as error:
        raise TEMInputError(f"is not valid JSON ({error}){advice}", path) from None


def _dict(value, path, what: str) -> dict:
    if not isinstance(value, dict):
        raise TEMInputError(f"must hold a JSON object {{...}} ({what}), got {_type(value)[:80]}", path)
    return value


def _positive(info: dict, key: str, path, *, field: str | None = None) -> None:
    value = info.get(key)
    if value is None:
        return
    if not _is_number(value):
        raise _bad(path, field or key, f"must be a number > 0 (nm per pixel) or null, got {_type(value)}")
    if not (math.isfinite(value) and value > 0):
        raise _bad(path, field or key, f"must be a number > 0 (nm per pixel) or null, got {value!r}")


def _class_index(key, path, field: str) -> int:
    if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit())):
        raise _bad(path, field, f"holds the class index {key!r}, which is not an integer 0..{_MAX_CLASS}")
    index = int(key)
    if index > _MAX_CLASS:
        raise _bad(path, field, f"holds the class index {index}; class indices are 0..{_MAX_CLASS}")
    return index


def _check_classes(classes, path, field: str, *, written: bool = False) -> None:
    """A list of names (index = position) or an object: ``{index: name}``, or nnU-Net's
    ``{name: index}``; at least one class besides the background. ``written``: a file tem_keras
    wrote, which holds ``{index: name}`` only."""
    if classes is None:
        return
    allowed = "must be an object {index: name}" if written else "must be a list of names or an object {index: name}"
    if written and not isinstance(classes, dict):
        raise _bad(path, field, f"{allowed}, got {_type(classes)[:80]}")
    if isinstance(classes, list):
        if not all(isinstance(n, str) for n in classes):
            raise _bad(path, field, f"{allowed}: every name a string, got {classes!r}"[:200])
        indices = list(range(len(classes)))
    elif isinstance(classes, dict):
        values = list(classes.values())
        if values and all(_is_number(v) for v in values):  # nnU-Net: {name: index}
            indices = [_class_index(v, path, field) for v in values]
        else:
            indices = [_class_index(k, path, field) for k in classes]
            if not all(isinstance(v, str) for v in values):
                raise _bad(path, field, f"{allowed}: every name a string, got {classes!r}"[:200])
        if len(set(indices)) != len(indices):
            raise _bad(path, field, f"gives one class index to several names: {classes!r}"[:200])
    else:
        raise _bad(path, field, f"{allowed}, got {_type(classes)}")
    if classes and max(indices) < 1:
        raise _bad(path, field, "lists only the background (class 0); name the particle class(es) "
                   "1..K as well")


def check_split(split, path, *, field: str = "split", required: bool = False) -> dict | None:
    """``{"train": [stems], "val": [...], "test": [...]}``: stems are strings, none listed twice,
    and no image in two splits (a leak of test or validation images into training)."""
    if split is None and not required:
        return None
    if not isinstance(split, dict):
        raise _bad(path, field, 'must be an object {"train": [stems], "val": [...], "test": [...]}, '
                   f"got {_type(split)[:80]}")
    unknown = sorted(str(k) for k in split if k not in SPLITS)
    if unknown:
        raise _bad(path, field, f"has the unknown split(s) {', '.join(map(repr, unknown))}; the splits "
                   f"are {', '.join(SPLITS)}")
    seen: dict[str, str] = {}
    for name, stems in split.items():
        if not isinstance(stems, list) or not all(isinstance(s, str) for s in stems):
            raise _bad(path, f"{field}.{name}", f"must be a list of image stems (strings), got "
                       f"{_type(stems)[:80]}")
        for stem in stems:
            if stem in seen:
                where = "twice" if seen[stem] == name else f"in both {seen[stem]!r} and {name!r}"
                raise _bad(path, field, f"lists the image {stem!r} {where}: an image belongs to one "
                           "split only (otherwise validation or test images leak into training)")
            seen[stem] = name
    return split


def check_preprocessing(value, path, *, field: str = "preprocessing") -> dict:
    """The preprocessing settings stored with a model: only the known keys, each in range."""
    if not isinstance(value, dict):
        raise _bad(path, field, f"must be an object of preprocessing settings, got {_type(value)[:80]}")
    unknown = sorted(str(k) for k in value if k not in PREPROCESSING_KEYS)
    if unknown:
        raise _bad(path, field, f"has the unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
                   f"{', '.join(PREPROCESSING_KEYS)} (written by a newer tem_keras, or edited?)")
    checks = {
        "remove_outliers": (lambda v: isinstance(v, bool), "must be true or false"),
        "outlier_sigma": (lambda v: _is_number(v) and math.isfinite(v) and v > 0, "must be a number > 0"),
        "normalization": (lambda v: v in ("standard", "percentile"), "must be 'standard' or 'percentile'"),
        "percentiles": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(p) for p in v)
                        and 0 <= v[0] < v[1] <= 100, "must be two numbers 0 <= low < high <= 100"),
    }
    for key, (ok, allowed) in checks.items():
        if key in value and not ok(value[key]):
            raise _bad(path, f"{field}.{key}", f"{allowed}, got {_type(value[key])}")
    return value


def check_dataset_json(info, path) -> dict:
    """A data set's ``dataset.json``: ``pixel_size_nm`` > 0, ``classes`` (or nnU-Net's
    ``labels``) and a ``split`` without leaks."""
    info = _dict(info, path, "the data set's pixel size, classes and split")
    _positive(info, "pixel_size_nm", path)
    for key in ("classes", "labels"):
        _check_classes(info.get(key), path, key)
    check_split(info.get("split"), path)
    return info


def check_config_json(config, path) -> dict:
    """A run's ``config.json``: an object whose classes, pixel size, preprocessing, request, plan
    and model have the right types."""
    config = _dict(config, path, "the settings of the run")
    _check_classes(config.get("classes"), path, "classes", written=True)
    _positive(config, "pixel_size_nm", path)
    if config.get("preprocessing") is not None:
        check_preprocessing(config["preprocessing"], path)
    for key in ("request", "plan", "training", "data"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise _bad(path, key, f"must be an object, got {_type(config[key])[:80]}")
    model = config.get("model")
    if model is not None and not isinstance(model, (str, dict)):
        raise _bad(path, "model", f"must be a name or an object, got {_type(model)[:80]}")
    return config


def check_thresholds_json(value, path) -> dict:
    """A run's ``thresholds.json``: ``{"threshold": number in [0, 1], ...}``."""
    value = _dict(value, path, '{"threshold": number in [0, 1], ...}')
    if "threshold" not in value:
        raise _bad(path, "threshold", "is missing; the file must hold {\"threshold\": number in [0, 1]}")
    threshold = value["threshold"]
    if not _is_number(threshold):
        raise _bad(path, "threshold", f"must be a number in [0, 1], got {_type(threshold)}")
    if not 0 <= threshold <= 1:
        raise _bad(path, "threshold", f"must be a number in [0, 1], got {threshold!r}")
    return value


def check_export_json(meta, path) -> dict:
    """An export's ``tem_keras.json``: ``files`` (format → file name), ``preprocessing``, a
    threshold in [0, 1], classes, pixel size and the network's sizes."""
    meta = _dict(meta, path, "the export's description")
    for key in ("files", "preprocessing"):
        if key not in meta:
            raise _bad(path, key, "is missing: the export is incomplete; export the model again")
    files = meta["files"]
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise _bad(path, "files", f"must be an object {{format: file name}}, got {_type(files)[:80]}")
    check_preprocessing(meta["preprocessing"], path)
    threshold = meta.get("threshold")
    if threshold is not None and not (_is_number(threshold) and 0 <= threshold <= 1):
        raise _bad(path, "threshold", f"must be a number in [0, 1] or null, got {_type(threshold)}")
    _check_classes(meta.get("classes"), path, "classes", written=True)
    _positive(meta, "pixel_size_nm", path)
    for key in ("num_classes", "downsampling"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _bad(path, key, f"must be an integer >= 1, got {_type(value)}")
    return meta


def check_history_csv(path) -> str:
    """The text of a run's ``history.csv`` (one row per epoch, first line the column names);
    binary content or a missing header: an error naming the file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise TEMInputError("is not a text table (it holds binary data); the run folder is damaged: "
                            "delete history.csv or train again", path)
    header = text.splitlines()[0] if text.strip() else ""
    if text.strip() and ("epoch" not in header.split(",")):
        raise TEMInputError(f"first line must name the columns (epoch, loss, ...), got {header[:80]!r}; "
                            "the run folder is damaged: delete history.csv or train again", path)
    return text
