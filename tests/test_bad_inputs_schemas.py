"""Damaged files tem_keras reads back, and arguments of the wrong type or range, at the door.

The kinds of an independent probe (issue 24): ``dataset.json``, ``config.json``, ``split.json``,
``thresholds.json``, ``history.csv``, ``tem_keras.json`` and ``model.weights.h5`` holding garbage,
wrong types or out-of-range values; ``fit``, ``discover``, ``export``, ``explain``, ``label``,
``synth``, ``sweep`` and ``plan`` given nonsense; data sets whose masks hold no particle.

Every case must end in one line of our own naming the file and the field (or the argument), and
leave every byte under the test's folder as it was: the user's files, the output folder that was
asked for, the working directory and an unrelated folder beside them. No case trains.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tem_keras.errors import TEMInputError

TE, VE, TY = TEMInputError, ValueError, TypeError
STEMS = [f"synthetic_{i:03d}" for i in range(4)]


# --------------------------------------------------------------------------------------------
# The world: a user's data sets, a run folder and an export, with damaged copies
# --------------------------------------------------------------------------------------------

def _copy(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        edit(dst)
    return dst


def _json(name: str, value):
    """An edit writing ``value`` (JSON, or raw str/bytes) into ``folder/name``."""
    def edit(folder: Path):
        path = folder / name
        if isinstance(value, bytes):
            path.write_bytes(value)
        elif isinstance(value, str):
            path.write_text(value)
        else:
            path.write_text(json.dumps(value))
    return edit


def _update(name: str, **fields):
    """An edit setting ``fields`` in the JSON object ``folder/name``."""
    def edit(folder: Path):
        path = folder / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return edit


def _weights(content: bytes | None):
    """An edit replacing (None: removing) ``model.weights.h5`` inside ``best.keras``."""
    def edit(folder: Path):
        path = folder / "best.keras"
        with zipfile.ZipFile(path) as archive:
            members = {n: archive.read(n) for n in archive.namelist()}
        if content is None:
            del members["model.weights.h5"]
        else:
            members["model.weights.h5"] = content
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return edit


BINARY = bytes(range(256)) * 8

DATASET_VARIANTS = {  # name: (edit of dataset.json, text the message must hold besides the file)
    "garbage": (_json("dataset.json", "{not json"), "not valid JSON"),
    "binary": (_json("dataset.json", BINARY), "binary"),
    "list": (_json("dataset.json", [1, 2]), "JSON object"),
    "string": (_json("dataset.json", '"particles"'), "JSON object"),
    "classes-str": (_update("dataset.json", classes="particle"), '"classes"'),
    "classes-int": (_update("dataset.json", classes=3), '"classes"'),
    "classes-list-mixed": (_update("dataset.json", classes=["background", 1]), '"classes"'),
    "classes-name-key": (_update("dataset.json", classes={"a": "particle"}), '"classes"'),
    "classes-background-only": (_update("dataset.json", classes={"0": "background"}), "background"),
    "classes-index-300": (_update("dataset.json", classes={"0": "bg", "300": "x"}), '"classes"'),
    "classes-negative": (_update("dataset.json", classes={"0": "bg", "-1": "x"}), '"classes"'),
    "labels-duplicate": (_update("dataset.json", classes=None, labels={"background": 0, "particle": 0}),
                         '"labels"'),
    "labels-float-index": (_update("dataset.json", classes=None, labels={"background": 0, "particle": 1.5}),
                           '"labels"'),
    "split-list": (_update("dataset.json", split=["synthetic_000"]), '"split"'),
    "split-str": (_update("dataset.json", split="train"), '"split"'),
    "split-stems-str": (_update("dataset.json", split={"train": "synthetic_000"}), '"split.train"'),
    "split-stems-int": (_update("dataset.json", split={"train": [1, 2]}), '"split.train"'),
    "split-unknown-name": (_update("dataset.json", split={"training": STEMS}), "'training'"),
    "split-leak-train-test": (_update("dataset.json", split={"train": STEMS[:3], "val": STEMS[3:],
                                                             "test": STEMS[:1]}), "leak"),
    "split-leak-all-three": (_update("dataset.json", split={"train": STEMS, "val": STEMS[:1],
                                                            "test": STEMS[:1]}), "synthetic_000"),
    "split-twice": (_update("dataset.json", split={"train": STEMS[:2] + STEMS[:1], "val": STEMS[2:3]}),
                    "twice"),
    "split-unknown-stem": (_update("dataset.json", split={"train": ["nope"], "val": STEMS[:1]}), "nope"),
    "pixel-negative": (_update("dataset.json", pixel_size_nm=-1), '"pixel_size_nm"'),
    "pixel-zero": (_update("dataset.json", pixel_size_nm=0), '"pixel_size_nm"'),
    "pixel-str": (_update("dataset.json", pixel_size_nm="0.5"), '"pixel_size_nm"'),
    "pixel-bool": (_update("dataset.json", pixel_size_nm=True), '"pixel_size_nm"'),
    "pixel-nan": (_json("dataset.json", '{"pixel_size_nm": NaN}'), '"pixel_size_nm"'),
}

RUN_VARIANTS = {  # name: (edit of the run folder, file the message names, text it must hold)
    "config-garbage": (_json("config.json", "{x"), "config.json", "not valid JSON"),
    "config-binary": (_json("config.json", BINARY), "config.json", "binary"),
    "config-list": (_json("config.json", [1, 2]), "config.json", "JSON object"),
    "config-classes-str": (_update("config.json", classes="particle"), "config.json", '"classes"'),
    "config-classes-list": (_update("config.json", classes=["background", "particle"]), "config.json",
                            '"classes"'),
    "config-pixel-negative": (_update("config.json", pixel_size_nm=-2), "config.json", '"pixel_size_nm"'),
    "config-preprocessing-unknown-key": (_update("config.json", preprocessing={"bogus": 1}), "config.json",
                                         "'bogus'"),
    "config-preprocessing-str": (_update("config.json", preprocessing="standard"), "config.json",
                                 '"preprocessing"'),
    "config-normalization": (_update("config.json", preprocessing={"normalization": "minmax"}), "config.json",
                             '"preprocessing.normalization"'),
    "config-percentiles": (_update("config.json", preprocessing={"percentiles": [99, 1]}), "config.json",
                           '"preprocessing.percentiles"'),
    "config-outlier-sigma": (_update("config.json", preprocessing={"outlier_sigma": -1}), "config.json",
                             '"preprocessing.outlier_sigma"'),
    "config-remove-outliers": (_update("config.json", preprocessing={"remove_outliers": "yes"}), "config.json",
                               '"preprocessing.remove_outliers"'),
    "config-request-list": (_update("config.json", request=[]), "config.json", '"request"'),
    "config-model-int": (_update("config.json", model=3), "config.json", '"model"'),
    "split-garbage": (_json("split.json", "{x"), "split.json", "not valid JSON"),
    "split-list": (_json("split.json", ["a"]), "split.json", "split.json"),
    "split-stems-str": (_json("split.json", {"train": "a"}), "split.json", "train"),
    "split-leak": (_json("split.json", {"train": STEMS, "test": STEMS[:1]}), "split.json", "leak"),
    "thresholds-string": (_json("thresholds.json", '"0.5"'), "thresholds.json", "JSON object"),
    "thresholds-text-value": (_json("thresholds.json", {"threshold": "high"}), "thresholds.json",
                              '"threshold"'),
    "thresholds-above-one": (_json("thresholds.json", {"threshold": 1.5}), "thresholds.json", "[0, 1]"),
    "thresholds-bool": (_json("thresholds.json", {"threshold": True}), "thresholds.json", '"threshold"'),
    "thresholds-missing": (_json("thresholds.json", {"metric": "f1"}), "thresholds.json", "missing"),
    "thresholds-garbage": (_json("thresholds.json", "{"), "thresholds.json", "not valid JSON"),
    "metrics-list": (_json("metrics.json", [1]), "metrics.json", "JSON object"),
    "history-binary": (_json("history.csv", BINARY), "history.csv", "binary"),
    "history-nul": (_json("history.csv", b"epoch,loss\n0,\x00\x00\n"), "history.csv", "binary"),
    "history-no-header": (_json("history.csv", "1,2,3\n4,5,6\n"), "history.csv", "epoch"),
    "history-ragged": (_json("history.csv", "epoch,loss\n0,1\n1,2,3,4\n"), "history.csv", "table"),
    "weights-not-hdf5": (_weights(b"garbage" * 100), "best.keras", "HDF5"),
    "weights-missing": (_weights(None), "best.keras", "model.weights.h5"),
}

EXPORT_VARIANTS = {  # name: (edit of the export folder, text the message must hold)
    "list": (_json("tem_keras.json", [1]), "JSON object"),
    "binary": (_json("tem_keras.json", BINARY), "binary"),
    "no-files": (lambda f: _update_drop(f, "files"), '"files"'),
    "files-list": (_update("tem_keras.json", files=["model.keras"]), '"files"'),
    "preprocessing-unknown-key": (_update("tem_keras.json", preprocessing={"scale": 2}), "'scale'"),
    "threshold-str": (_update("tem_keras.json", threshold="0.5"), '"threshold"'),
    "threshold-two": (_update("tem_keras.json", threshold=2), '"threshold"'),
    "num-classes-zero": (_update("tem_keras.json", num_classes=0), '"num_classes"'),
    "pixel-negative": (_update("tem_keras.json", pixel_size_nm=-1), '"pixel_size_nm"'),
    "classes-str": (_update("tem_keras.json", classes="particle"), '"classes"'),
}


def _update_drop(folder: Path, key: str) -> None:
    path = folder / "tem_keras.json"
    meta = json.loads(path.read_text())
    del meta[key]
    path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``root/user`` (data sets, a run folder and an export with damaged copies), ``root/cwd``
    (the working directory of every case) and ``root/elsewhere`` (a folder no case may touch)."""
    import tem_keras
    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.data.synthetic import make_dataset
    from tem_keras.io import write_mask
    from tem_keras.models import build_model

    root = tmp_path_factory.mktemp("schemas")
    user, out = root / "user", root / "out"
    for folder in (user, out, root / "cwd", root / "elsewhere"):
        folder.mkdir()
    (root / "elsewhere" / "notes.txt").write_text("mine")
    ds = make_dataset(user / "ds", n_images=4, size=48, seed=0, progress=False)
    for name, (edit, _) in DATASET_VARIANTS.items():
        _copy(ds, user / f"ds_{name}", edit)
    empty, full = _copy(ds, user / "ds_empty_masks"), _copy(ds, user / "ds_full_masks")
    for stem in STEMS:
        write_mask(empty / "masks" / f"{stem}.png", np.zeros((48, 48), np.uint8), overwrite=True)
        write_mask(full / "masks" / f"{stem}.png", np.ones((48, 48), np.uint8), overwrite=True)
    two = user / "ds_two"
    _copy(ds, two)
    for stem in STEMS[2:]:
        (two / "images" / f"{stem}.tif").unlink()
        (two / "masks" / f"{stem}.png").unlink()
    one = _copy(two, user / "ds_one")
    (one / "images" / f"{STEMS[1]}.tif").unlink()
    (one / "masks" / f"{STEMS[1]}.png").unlink()

    run = user / "run"
    run.mkdir()
    build_model("unet", base_filters=2, depth=2).save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({
        "classes": {"0": "background", "1": "particle"}, "pixel_size_nm": 0.5, "model": {"name": "unet"},
        "preprocessing": Preprocessing().to_dict(), "request": {}}))
    (run / "split.json").write_text(json.dumps({"train": STEMS[:2], "val": STEMS[2:3], "test": STEMS[3:]}))
    (run / "thresholds.json").write_text(json.dumps({"threshold": 0.4, "metric": "f1"}))
    (run / "metrics.json").write_text(json.dumps({}))
    (run / "history.csv").write_text("epoch,loss,val_dice\n0,0.7,0.5\n1,0.6,0.55\n")
    for name, (edit, _, _) in RUN_VARIANTS.items():
        _copy(run, user / f"run_{name}", edit)
    export = tem_keras.export(run, user / "export", formats=("keras",), verbose=False)
    for name, (edit, _) in EXPORT_VARIANTS.items():
        _copy(export, user / f"export_{name}", edit)
    from tem_keras.io import write_image

    write_image(user / "image.tif", np.random.default_rng(0).random((48, 48)).astype(np.float32))
    return {"root": root, "user": user, "out": out}


def _snapshot(root: Path) -> dict:
    """Every path under ``root``: a file's size, modification time and hash, or ``"dir"``."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns,
                                                hashlib.sha1(path.read_bytes()).hexdigest())
        else:
            out[str(path.relative_to(root))] = "dir"
    return out


# --------------------------------------------------------------------------------------------
# The cases: (id, call(world), expected exception types, texts the message must hold)
# --------------------------------------------------------------------------------------------

class _CliError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def _api(name):
    import tem_keras

    return getattr(tem_keras, name)


def _cli(*argv):
    """``tem_keras.cli.main`` in-process; its exit status becomes a _CliError."""
    def call(w):
        from tem_keras.cli import main

        args = [a.format(user=w["user"], out=w["out"]) for a in argv]
        try:
            code = main(args)
        except SystemExit as stop:
            code = stop.code
        raise _CliError(code)
    return call


@functools.lru_cache(maxsize=1)
def _tiny_model():
    """One untrained UNet for the explain cases (none of them changes it)."""
    from tem_keras.models import build_model

    return build_model("unet", base_filters=2, depth=2)


CASES = []


def case(id_, call, types, names):
    CASES.append(pytest.param(call, types, names if isinstance(names, tuple) else (names,), id=id_))


# dataset.json: through discover, the check command and (a few) fit
for name, (_, text) in DATASET_VARIANTS.items():
    case(f"discover-dataset.json-{name}", lambda w, n=name: _api("discover")(w["user"] / f"ds_{n}"), TE,
         (f"ds_{name}/dataset.json", text))
    case(f"cli-check-dataset.json-{name}", _cli("check", f"{{user}}/ds_{name}"), _CliError,
         (f"ds_{name}/dataset.json", text))
for name in ("classes-str", "split-list", "split-leak-all-three", "pixel-negative", "garbage"):
    case(f"fit-dataset.json-{name}",
         lambda w, n=name: _api("fit")(w["user"] / f"ds_{n}", run_dir=w["out"] / "run", verbose=0),
         TE, (f"ds_{name}/dataset.json", DATASET_VARIANTS[name][1]))
    case(f"cli-fit-dataset.json-{name}",
         _cli("fit", f"{{user}}/ds_{name}", "--run-dir", "{out}/run", "--quiet"), _CliError,
         (f"ds_{name}/dataset.json",))
case("evaluate-dataset.json-classes-str",
     lambda w: _api("evaluate")(w["user"] / "run", w["user"] / "ds_classes-str"), TE,
     ("dataset.json", '"classes"'))

# run folders: through load, the predict command, export and evaluate
for name, (_, file, text) in RUN_VARIANTS.items():
    case(f"load-run-{name}", lambda w, n=name: _api("load")(w["user"] / f"run_{n}"), TE,
         (f"run_{name}/{file}", text))
for name in ("config-garbage", "config-list", "config-preprocessing-unknown-key", "split-garbage",
             "thresholds-string", "history-binary", "weights-not-hdf5", "metrics-list"):
    case(f"cli-predict-run-{name}",
         _cli("predict", f"{{user}}/run_{name}", "{user}/image.tif", "-o", "{out}/pred", "--quiet"),
         _CliError, (f"run_{name}/{RUN_VARIANTS[name][1]}",))
for name in ("config-classes-str", "thresholds-above-one", "weights-missing", "history-ragged"):
    case(f"export-run-{name}", lambda w, n=name: _api("export")(w["user"] / f"run_{n}", w["out"] / "export"),
         TE, (f"run_{name}/{RUN_VARIANTS[name][1]}",))
for name in ("split-leak", "config-pixel-negative"):
    case(f"evaluate-run-{name}", lambda w, n=name: _api("evaluate")(w["user"] / f"run_{n}", w["user"] / "ds"),
         TE, (f"run_{name}/{RUN_VARIANTS[name][1]}",))

# export folders
for name, (_, text) in EXPORT_VARIANTS.items():
    case(f"load-export-{name}", lambda w, n=name: _api("load")(w["user"] / f"export_{n}"), TE,
         (f"export_{name}/tem_keras.json", text))
case("cli-predict-export-threshold-two",
     _cli("predict", "{user}/export_threshold-two", "{user}/image.tif", "-o", "{out}/pred", "--quiet"),
     _CliError, ("tem_keras.json", '"threshold"'))


# fit, discover, plan, sweep: types and ranges before anything is read or written
def _fit(**kw):
    return lambda w: _api("fit")(w["user"] / "ds", **{"run_dir": w["out"] / "run", "verbose": 0, **kw})


for id_, kw, types, names in (
        ("overwrite-yes", dict(overwrite="yes"), TY, "overwrite"),
        ("overwrite-1", dict(overwrite=1), TY, "overwrite"),
        ("resume-no", dict(resume="no"), TY, "resume"),
        ("devices-negative", dict(devices=-1), VE, ("devices", "-1")),
        ("devices-zero", dict(devices=0), VE, ("devices", "0")),
        ("devices-bool", dict(devices=True), TY, "devices"),
        ("devices-empty", dict(devices=[]), TY, "devices"),
        ("devices-str", dict(devices="gpu"), TY, "devices"),
        ("devices-float", dict(devices=1.5), TY, "devices"),
        ("verbose-5", dict(verbose=5), VE, "verbose"),
        ("verbose-str", dict(verbose="loud"), TY, "verbose"),
        ("particles-grey", dict(particles="grey"), VE, ("particles", "grey")),
        ("pairing-int", dict(pairing=1), VE, "pairing"),
        ("labels-bool", dict(labels=True), VE, "labels"),
        ("run-dir-int", dict(run_dir=3), TY, "run_dir"),
        ("plan-int", dict(plan=7), TY, "plan"),
        ("preprocessing-dict", dict(preprocessing={"normalization": "standard"}), TY, "preprocessing"),
        ("images-int", dict(images=3, masks="masks"), TY, "images"),
        ("seed-bool", dict(seed=True), VE, "seed"),
        ("epochs-bool", dict(epochs=True), VE, "epochs"),
        ("learning-rate-bool", dict(learning_rate=True), VE, "learning_rate"),
        ("split-bool", dict(split=(True, 0.1, 0.2)), VE, "split")):
    case(f"fit-{id_}", _fit(**kw), types, names)
case("fit-None", lambda w: _api("fit")(None), TY, ("dataset_dir", "None"))
case("fit-int", lambda w: _api("fit")(3), TY, "dataset_dir")
case("fit-empty-string", lambda w: _api("fit")(""), TY, "dataset_dir")
case("discover-None", lambda w: _api("discover")(None), TY, ("dataset_dir", "None"))
case("discover-list", lambda w: _api("discover")([w["user"] / "ds"]), TY, "dataset_dir")
case("discover-include-unlabelled-str", lambda w: _api("discover")(w["user"] / "ds", include_unlabelled="yes"),
     TY, "include_unlabelled")
case("discover-strict-int", lambda w: _api("discover")(w["user"] / "ds", strict=1), TY, "strict")
case("plan-None", lambda w: _api("plan")(None), TY, "dataset_dir")
case("plan-out-int", lambda w: _api("plan")(w["user"] / "ds", 3), TY, "out")
case("plan-labels", lambda w: _api("plan")(w["user"] / "ds", w["out"] / "p.json", labels="some"), VE, "labels")
case("sweep-models-empty", lambda w: _api("sweep")(w["user"] / "ds", [], out_dir=w["out"] / "s"), TY, "models")
case("sweep-models-str", lambda w: _api("sweep")(w["user"] / "ds", "unet", out_dir=w["out"] / "s"), TY, "models")
case("sweep-models-no-name", lambda w: _api("sweep")(w["user"] / "ds", [{"depth": 2}], out_dir=w["out"] / "s"),
     TY, "models")
case("sweep-seeds-empty", lambda w: _api("sweep")(w["user"] / "ds", ["unet"], seeds=[], out_dir=w["out"] / "s"),
     TY, "seeds")
case("sweep-seeds-float", lambda w: _api("sweep")(w["user"] / "ds", ["unet"], seeds=[1.5], out_dir=w["out"] / "s"),
     TY, "seeds")
case("cli-fit-devices-negative", _cli("fit", "{user}/ds", "--run-dir", "{out}/run", "--devices", "-1",
                                      "--quiet"), _CliError, "devices")

# masks with no particle or no background
case("fit-every-mask-empty", lambda w: _api("fit")(w["user"] / "ds_empty_masks", run_dir=w["out"] / "run",
                                                   verbose=0), TE, ("ds_empty_masks", "no pixel is a particle"))
case("fit-every-mask-full", lambda w: _api("fit")(w["user"] / "ds_full_masks", run_dir=w["out"] / "run",
                                                  verbose=0), TE, ("ds_full_masks", "no pixel is background"))
case("cli-check-every-mask-empty", _cli("check", "{user}/ds_empty_masks"), _CliError,
     ("ds_empty_masks", "no pixel is a particle"))
case("cli-check-every-mask-full", _cli("check", "{user}/ds_full_masks"), _CliError,
     ("ds_full_masks", "no pixel is background"))

# export
for id_, kw, types, names in (
        ("formats-empty-tuple", dict(formats=()), VE, ("formats", "empty")),
        ("formats-empty-list", dict(formats=[]), VE, ("formats", "empty")),
        ("formats-empty-string", dict(formats=""), VE, ("formats", "empty")),
        ("formats-int", dict(formats=[1]), TY, "formats"),
        ("formats-none", dict(formats=None), TY, "formats"),
        ("overwrite-yes", dict(overwrite="yes"), TY, "overwrite"),
        ("name-empty", dict(name=""), TY, "name"),
        ("authors-str", dict(authors="me"), TY, "authors"),
        ("verbose-str", dict(verbose="no"), TY, "verbose")):
    case(f"export-{id_}", lambda w, kw=kw: _api("export")(w["user"] / "run", w["out"] / "export", **kw), types,
         names)
case("export-out-dir-None", lambda w: _api("export")(w["user"] / "run", None), TY, "out_dir")
case("cli-export-formats-empty", _cli("export", "{user}/run", "{out}/export", "--formats", ",", "--quiet"),
     _CliError, "formats")


# explain
def _explain(function, *args, **kw):
    def call(w):
        import tem_keras.explain as explain

        return getattr(explain, function)(_tiny_model(), *[a(w) if callable(a) else a for a in args], **kw)
    return call


IMAGE = lambda w: w["user"] / "image.tif"  # noqa: E731
for id_, function, args, kw, types, names in (
        ("grad_cam-class_index-2", "grad_cam", (IMAGE,), dict(class_index=2), VE, ("class_index", "[0, 1]")),
        ("grad_cam-class_index-negative", "grad_cam", (IMAGE,), dict(class_index=-1), VE, "class_index"),
        ("grad_cam-class_index-bool", "grad_cam", (IMAGE,), dict(class_index=True), TY, "class_index"),
        ("grad_cam-class_index-float", "grad_cam", (IMAGE,), dict(class_index=0.5), TY, "class_index"),
        ("grad_cam-layer-name", "grad_cam", (IMAGE,), dict(layer="nope"), VE, ("layer", "nope")),
        ("grad_cam-layer-index", "grad_cam", (IMAGE,), dict(layer=999), VE, ("layer", "999")),
        ("grad_cam-layer-object", "grad_cam", (IMAGE,), dict(layer=object()), TY, "layer"),
        ("grad_cam-normalize-str", "grad_cam", (IMAGE,), dict(normalize="yes"), TY, "normalize"),
        ("match_kernels-bank-empty", "match_kernels", (), dict(bank={}), VE, ("bank", "an empty dict")),
        ("match_kernels-bank-list", "match_kernels", (), dict(bank=[np.ones((3, 3))]), VE, "bank"),
        ("match_kernels-top-0", "match_kernels", (), dict(top=0), VE, "top"),
        ("mean_kernel-class_index-3", "mean_kernel", (), dict(class_index=3), VE, "class_index"),
        ("get_kernels-layer-index", "get_kernels", (), dict(layer=-5), VE, "layer"),
        ("plot_kernels-max_filters-0", "plot_kernels", (), dict(max_filters=0), VE, "max_filters"),
        ("activation_maps-layer-float", "activation_maps", (IMAGE,), dict(layers=[2.5]), TY, "layer"),
        ("activation_maps-max_channels-0", "activation_maps", (IMAGE,), dict(max_channels=0), VE, "max_channels"),
        ("activation_maps-layer-unknown", "activation_maps", (IMAGE,), dict(layers=["nope"]), VE, "nope"),
        ("erf-size-0", "effective_receptive_field", (), dict(size=0), VE, "size"),
        ("erf-size-float", "effective_receptive_field", (), dict(size=2.5), TY, "size"),
        ("erf-n_samples-0", "effective_receptive_field", (), dict(n_samples=0), VE, "n_samples"),
        ("erf-fraction-0", "effective_receptive_field", (), dict(fraction=0), VE, "fraction"),
        ("erf-class_index-5", "effective_receptive_field", (), dict(class_index=5), VE, "class_index")):
    case(f"explain-{id_}", _explain(function, *args, **kw), types, names)
case("explain-filter_bank-size-0", lambda w: __import__("tem_keras.explain", fromlist=["x"]).filter_bank(0), VE,
     "size")
case("explain-filter_bank-size-negative", lambda w: __import__("tem_keras.explain", fromlist=["x"]).filter_bank(-3),
     VE, "size")
case("explain-line_profile-n_points-1",
     lambda w: __import__("tem_keras.explain", fromlist=["x"]).line_profile(
         np.zeros((8, 8)), np.zeros((8, 8)), (0, 0), (7, 7), n_points=1), VE, "n_points")
case("explain-line_profile-class_index-3",
     lambda w: __import__("tem_keras.explain", fromlist=["x"]).line_profile(
         np.zeros((8, 8)), np.zeros((8, 8, 2)), (0, 0), (7, 7), class_index=3), VE, "class_index")
case("explain-write-class_index-7",
     lambda w: __import__("tem_keras.explain.report", fromlist=["x"]).write_explanation(
         _tiny_model(), w["user"] / "image.tif", "gradcam", w["out"] / "explain", class_index=7), VE,
     "class_index")
case("explain-write-layer-unknown",
     lambda w: __import__("tem_keras.explain.report", fromlist=["x"]).write_explanation(
         _tiny_model(), None, "kernels", w["out"] / "explain", layer="nope"), VE, "nope")
case("cli-explain-class-index-5", _cli("explain", "{user}/run", "{user}/image.tif", "-o", "{out}/explain",
                                       "--class-index", "5"), _CliError, "class_index")
case("cli-explain-layer-unknown", _cli("explain", "{user}/run", "-o", "{out}/explain", "--method", "kernels",
                                       "--layer", "nope"), _CliError, "nope")

# label and synth
for id_, argv, names in (
        ("sigma-negative", ("--method", "otsu", "--sigma", "-2"), ("--sigma", "-2")),
        ("sigma-nan", ("--method", "otsu", "--sigma", "nan"), "--sigma"),
        ("disk-radius-negative", ("--method", "horwath", "--disk-radius", "-1"), "--disk-radius"),
        ("scale-zero", ("--method", "auto", "--scale", "0"), "--scale")):
    case(f"cli-label-{id_}", _cli("label", "{user}/image.tif", "-o", "{out}/labels", *argv), _CliError, names)
for id_, kw, types, names in (
        ("sigma-negative", dict(method="otsu", sigma=-2), VE, "sigma"),
        ("disk_radius-float", dict(method="horwath", disk_radius=1.5), TY, "disk_radius"),
        ("levels-1", dict(method="horwath", levels=1), VE, "levels"),
        ("particles-grey", dict(particles="grey"), VE, "particles"),
        ("scale_px-zero", dict(scale_px=0), VE, "scale_px")):
    case(f"label_image-{id_}", lambda w, kw=kw: __import__("tem_keras.autolabel", fromlist=["x"]).label_image(
        np.zeros((16, 16)), **kw), types, names)
for id_, argv, names in (
        ("size-huge", ("--size", "100000000"), ("size", "too large")),
        ("size-zero", ("--size", "0"), "size"),
        ("size-four", ("--size", "4"), "size"),
        ("n-images-zero", ("--n-images", "0"), "n_images"),
        ("n-images-negative", ("--n-images", "-3"), "n_images")):
    case(f"cli-synth-{id_}", _cli("synth", "{out}/synth", *argv), _CliError, names)
for id_, kw, types, names in (
        ("size-bool", dict(size=True), TY, "size"),
        ("size-float", dict(size=2.5), TY, "size"),
        ("size-one-side", dict(size=(64,)), VE, "size"),
        ("size-huge-pair", dict(size=(100000, 100000)), VE, "too large"),
        ("n_images-float", dict(n_images=1.5), TY, "n_images"),
        ("overwrite-str", dict(overwrite="yes"), TY, "overwrite")):
    case(f"make_dataset-{id_}", lambda w, kw=kw: __import__("tem_keras.data.synthetic", fromlist=["x"]).make_dataset(
        w["out"] / "synth", **kw), types, names)


def _last_frame_file(error: BaseException) -> str:
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


def test_the_table_has_at_least_110_cases():
    assert len(CASES) >= 110


@pytest.mark.parametrize("call, types, names", CASES)
def test_refused_at_the_door(world, call, types, names, capsys, monkeypatch):
    monkeypatch.chdir(world["root"] / "cwd")  # a default output folder would land here
    before = _snapshot(world["root"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(types) as info:
            call(world)
    error = info.value
    if isinstance(error, _CliError):
        captured = capsys.readouterr()
        assert error.code == 2, captured.err
        assert "Traceback" not in captured.err + captured.out
        lines = [line for line in captured.err.splitlines() if "error:" in line]
        assert lines and lines[-1].startswith("tem-keras "), captured.err
        message = lines[-1]
    else:
        assert isinstance(error, TEMInputError) or type(error) in (ValueError, TypeError)
        assert f"{Path('tem_keras')}" in _last_frame_file(error), (
            f"{type(error).__name__} raised outside tem_keras: {_last_frame_file(error)}")
        message = str(error)
        assert "\n" not in message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    assert _snapshot(world["root"]) == before, "a file or folder was changed"


# --------------------------------------------------------------------------------------------
# Known answers: what the valid files give, and the messages that advise
# --------------------------------------------------------------------------------------------

def test_the_valid_files_load_with_their_values(world):
    import tem_keras

    ds = tem_keras.discover(world["user"] / "ds")
    assert ds.class_names == {0: "background", 1: "particle"} and len(ds) == 4
    run = tem_keras.load(world["user"] / "run")
    assert run.threshold == pytest.approx(0.4)
    assert run.split == {"train": STEMS[:2], "val": STEMS[2:3], "test": STEMS[3:]}
    assert list(run.history["val_dice"]) == pytest.approx([0.5, 0.55])
    assert run.pixel_size_nm == pytest.approx(0.5)
    export = tem_keras.load(world["user"] / "export")
    assert export.threshold == pytest.approx(0.4)


@pytest.mark.parametrize("classes, expected", [
    (["background", "particle", "oxide"], {0: "background", 1: "particle", 2: "oxide"}),
    ({"0": "background", "2": "shell"}, {0: "background", 2: "shell"}),
])
def test_dataset_json_classes_in_both_forms(world, tmp_path, classes, expected):
    import tem_keras

    ds = _copy(world["user"] / "ds", tmp_path / "ds", _update("dataset.json", classes=classes))
    assert tem_keras.discover(ds).class_names == expected


def test_nnunet_labels_are_read_by_value(world, tmp_path):
    import tem_keras

    ds = _copy(world["user"] / "ds", tmp_path / "ds",
               _update("dataset.json", classes=None, labels={"background": 0, "particle": 1}))
    assert tem_keras.discover(ds).class_names == {0: "background", 1: "particle"}


def test_preprocessing_keys_are_the_fields_of_preprocessing():
    from dataclasses import fields

    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.validation.files import PREPROCESSING_KEYS

    assert set(PREPROCESSING_KEYS) == {f.name for f in fields(Preprocessing)}


def test_an_interrupted_run_with_an_empty_history_loads(world, tmp_path):
    import tem_keras

    run = _copy(world["user"] / "run", tmp_path / "run", _json("history.csv", ""))
    assert tem_keras.load(run).history is None


def test_mask_contents_are_counted_exactly():
    from tem_keras.validation import check_mask_contents

    blank, full, mixed = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), np.eye(4, dtype=np.uint8)
    assert check_mask_contents([("a.png", mixed), ("b.png", mixed)], "ds") is None
    note = check_mask_contents([("a.png", mixed), ("b.png", blank), ("c.png", full)], "ds")
    assert "1 of 3 masks have no particle (b.png)" in note and "1 of 3 masks have no background (c.png)" in note
    ignored = np.full((4, 4), 255, np.uint8)  # unlabelled pixels are neither
    with pytest.raises(TEMInputError, match="every mask \\(2\\) is empty"):
        check_mask_contents([("a.png", blank), ("b.png", ignored)], "ds")
    six = [(f"m{i}.png", blank) for i in range(6)] + [("ok.png", mixed)]
    assert "m0.png, m1.png, m2.png, m3.png, m4.png and 1 more" in check_mask_contents(six, "ds")


def test_check_notes_a_mask_without_particles_and_keeps_the_others(world, tmp_path, capsys):
    from tem_keras.cli import main
    from tem_keras.io import write_mask

    ds = _copy(world["user"] / "ds", tmp_path / "ds")
    write_mask(ds / "masks" / "synthetic_001.png", np.zeros((48, 48), np.uint8), overwrite=True)
    assert main(["check", str(ds)]) == 0
    captured = capsys.readouterr()
    assert "4 of 4 pairs are ready" in captured.out
    assert "1 of 4 masks have no particle (synthetic_001.png)" in captured.err


@pytest.mark.parametrize("dataset, split, advice", [
    ("ds_two", (0.7, 0.1, 0.2), "split=(0.5, 0.5, 0.0)"),
    ("ds_two", (1.0, 0.0, 0.0), "split=(0.7, 0.1, 0.2)"),
    ("ds_one", (0.7, 0.1, 0.2), "label at least one more"),
])
def test_no_validation_image_advises_a_different_split(world, dataset, split, advice):
    import tem_keras

    before = _snapshot(world["root"])
    with pytest.raises(TEMInputError) as info:
        tem_keras.fit(world["user"] / dataset, run_dir=world["out"] / "run", split=split, verbose=0)
    message = str(info.value)
    assert advice in message and dataset in message and "val > 0" not in message
    assert _snapshot(world["root"]) == before


def test_watch_lock_advises_no_shard_option(tmp_path):
    from tem_keras.live.ledger import ParticleTable

    table = tmp_path / "particles.csv"
    (tmp_path / ".particles.csv.lock").write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(FileExistsError) as info:
        ParticleTable(table).lock()
    assert "--shard" not in str(info.value) and "--out" in str(info.value)


def test_a_refused_resume_says_overwrite_as_the_command_line_spells_it(world, tmp_path, capsys):
    """An unfinished run asked for with other settings: the CLI says ``--overwrite``."""
    from tem_keras.cli import main

    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"request": {"epochs": 5}}))
    before = _snapshot(tmp_path)
    code = main(["fit", str(world["user"] / "ds"), "--run-dir", str(run), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--overwrite" in err and "overwrite=True" not in err
    assert _snapshot(tmp_path) == before
