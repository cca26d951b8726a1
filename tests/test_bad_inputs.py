"""A table of bad inputs through the API and the command line.

Every case must end in a clear error of our own: a :class:`TEMInputError`, or a ``ValueError`` /
``TypeError`` raised by tem_keras's own validation (the traceback's last frame is in a tem_keras
module, never in NumPy, pandas, TensorFlow or Keras); its message names the file or the argument;
and the files the user had are unchanged (bytes and modification times).

One tiny untrained UNet (base_filters=2, depth=2) is saved once per module, with a run folder
made by hand (``config.json`` + ``best.keras``) and one export folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from tem_keras.errors import TEMInputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "formats"
HS = SHARED / "hyperspy176_testdata"
REAL = {  # real files whose truncated copies are bad inputs (skipped when absent)
    "dm3": HS / "dm3" / "test-1.dm3",
    "dm4": HS / "dm4" / "test-1.dm4",
    "emd": SHARED / "temul_toolkit_experimental" / "example_Au_nanoparticle.emd",
    "ser": HS / "fei_tia" / "64x64_TEM_images_acquire_1.ser",
}
IMAGE_EXTENSIONS = (".dm3", ".dm4", ".ser", ".emd", ".mrc", ".tif", ".png", ".jpg", ".bmp",
                    ".npy", ".h5")


# --------------------------------------------------------------------------------------------
# The world: what a user has on disk (never to be changed), and where outputs go
# --------------------------------------------------------------------------------------------

def _write_dataset(root: Path, images: dict, masks: dict, info: dict | None = None) -> Path:
    from tem_keras.io import write_image, write_mask

    for stem, image in images.items():
        write_image(root / "images" / f"{stem}.tif", image)
    for stem, mask in masks.items():
        write_mask(root / "masks" / f"{stem}.png", mask)
    if info is not None:
        (root / "dataset.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import tifffile

    from tem_keras.io import write_image
    from tem_keras.models import build_model

    user = tmp_path_factory.mktemp("user")
    out = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    w = {"user": user, "out": out, "image": image}

    # models: one run folder by hand, damaged copies, a .keras file, an export
    run = user / "run"
    run.mkdir()
    build_model("unet", base_filters=2, depth=2).save(run / "best.keras")
    (run / "config.json").write_text("{}")
    keras_bytes = (run / "best.keras").read_bytes()
    for name, content in (("run_truncated", keras_bytes[: len(keras_bytes) // 2]),
                          ("run_empty", b""), ("run_text", b"not a model")):
        (user / name).mkdir()
        (user / name / "best.keras").write_bytes(content)
        (user / name / "config.json").write_text("{}")
    (user / "run_badconfig").mkdir()
    (user / "run_badconfig" / "best.keras").write_bytes(keras_bytes)
    (user / "run_badconfig" / "config.json").write_text("{not json")
    (user / "model.keras").write_bytes(keras_bytes)
    (user / "truncated.keras").write_bytes(keras_bytes[:1000])
    (user / "model.txt").write_text("hello")
    (user / "not_a_run").mkdir()
    (user / "not_a_run" / "notes.txt").write_text("x")
    import tem_keras

    tem_keras.export(run, user / "export", formats=("saved_model", "keras"), verbose=False)
    partial = user / "export_partial"
    partial.mkdir()
    (partial / "model.keras").write_bytes(keras_bytes)
    (partial / "README.md").write_text("card")
    corrupt = user / "export_corrupt"
    shutil.copytree(user / "export", corrupt)
    (corrupt / "tem_keras.json").write_text("{")
    missing = user / "export_missing"
    shutil.copytree(user / "export", missing)
    (missing / "model.keras").unlink()

    # files
    files = user / "files"
    files.mkdir()
    for ext in IMAGE_EXTENSIONS:
        (files / f"empty{ext}").write_bytes(b"")
        (files / f"random{ext}").write_bytes(np.random.default_rng(1).bytes(2048))
    write_image(files / "good.tif", image)
    for name in ("good.tif",):
        data = (files / name).read_bytes()
        (files / f"truncated_{name}").write_bytes(data[: len(data) // 3])
    np.save(files / "good.npy", image)
    data = (files / "good.npy").read_bytes()
    (files / "truncated.npy").write_bytes(data[: len(data) // 2])
    import imageio.v3 as iio

    iio.imwrite(files / "good.png", (image * 255).astype(np.uint8))
    data = (files / "good.png").read_bytes()
    (files / "truncated.png").write_bytes(data[: len(data) // 2])
    for key, source in REAL.items():
        if source.is_file():
            with open(source, "rb") as f:
                (files / f"truncated_real.{key}").write_bytes(f.read(3000))
    nan = image.copy()
    nan[3, 4] = np.nan
    np.save(files / "nan.npy", nan)
    write_image(files / "nan.tif", nan)
    inf = image.copy()
    inf[0, 0] = np.inf
    np.save(files / "inf.npy", inf)
    np.save(files / "constant.npy", np.full((64, 64), 7.0, np.float32))
    np.save(files / "zero_rows.npy", np.zeros((0, 64), np.float32))
    np.save(files / "zero_cols.npy", np.zeros((64, 0), np.float32))
    np.save(files / "zero_frames.npy", np.zeros((0, 64, 64), np.float32))
    np.save(files / "spectrum.npy", np.arange(100.0))
    np.save(files / "four_d.npy", np.zeros((2, 2, 16, 16)))
    np.save(files / "two_channels.npy", np.zeros((32, 40, 2)))  # [H, W, 2]: not a colour image
    np.save(files / "complex.npy", np.fft.fft2(image))
    np.save(files / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(files / "stack.npy", np.stack([image, image]))
    (files / "notes.txt").write_text("not an image")
    (files / "noextension").write_bytes(b"\x00" * 10)
    (files / "folder.tif").mkdir()
    tifffile.imwrite(files / "rgb_float.tif", np.zeros((4, 5), np.float32))  # tiny but valid
    import h5py

    with h5py.File(files / "no_image.h5", "w") as h5:
        h5["x"] = np.zeros(5)
    (user / "empty_folder").mkdir()
    (user / "text_folder").mkdir()
    (user / "text_folder" / "a.txt").write_text("x")

    # data sets
    mask = (image > 0.7).astype(np.uint8)
    w["ds_ok"] = _write_dataset(user / "ds_ok", {"a": image}, {"a": mask})
    w["ds_class7"] = _write_dataset(user / "ds_class7", {"a": image}, {"a": mask * 7})
    w["ds_mismatch"] = _write_dataset(user / "ds_mismatch", {"a": image}, {"a": mask[:32]})
    w["ds_unlabelled"] = _write_dataset(user / "ds_unlabelled", {"a": image}, {})
    return w


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        else:
            out[str(p)] = "dir"
    return out


# --------------------------------------------------------------------------------------------
# The cases: (id, call(world), expected exception types, text the message must contain)
# --------------------------------------------------------------------------------------------

def _api(name):
    import tem_keras

    return getattr(tem_keras, name)


def _read(rel, **kw):
    return lambda w: _api("read_image")(w["user"] / rel, **kw)


def _stack(source_of_world, index=None):
    def call(w):
        stack = _api("read_stack")(source_of_world(w))
        return stack if index is None else stack[index]
    return call


def _predict(model="run", x=None, **kw):
    def call(w):
        data = w["image"] if x is None else x(w)
        return _api("predict")(w["user"] / model if isinstance(model, str) else model, data, **kw)
    return call


def _predict_stack(model="run", x=None, **kw):
    def call(w):
        data = w["image"] if x is None else x(w)
        return list(_api("predict_stack")(w["user"] / model, data, **kw))
    return call


def _evaluate(ds="ds_ok", model="run", **kw):
    return lambda w: _api("evaluate")(w["user"] / model, w["user"] / ds, **kw)


def _measure(mask, **kw):
    return lambda w: _api("measure_particles")(mask, **kw)


def _cli(*argv):
    """``tem_keras.cli.main`` in-process; a non-zero exit becomes a _CliError with its stderr."""
    def call(w):
        from tem_keras.cli import main

        args = [a.format(user=w["user"], out=w["out"]) for a in argv]
        try:
            code = main(args)
        except SystemExit as stop:  # argparse usage errors
            code = stop.code
        raise _CliError(code)
    return call


class _CliError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


M = np.zeros((32, 32), np.uint8)
M[10:20, 10:20] = 1
TE, VE, TY = TEMInputError, ValueError, TypeError
CASES = []


def case(id_, call, types, names):
    CASES.append(pytest.param(call, types, names if isinstance(names, tuple) else (names,), id=id_))


# files through read_image: empty and random bytes in every format
for ext in IMAGE_EXTENSIONS:
    case(f"read_image-empty{ext}", _read(f"files/empty{ext}"), TE, f"empty{ext}")
    case(f"read_image-random{ext}", _read(f"files/random{ext}"), TE, f"random{ext}")
# truncated and damaged files
case("read_image-truncated.tif", _read("files/truncated_good.tif"), TE, "truncated_good.tif")
case("read_image-truncated.npy", _read("files/truncated.npy"), TE, "truncated.npy")
case("read_image-truncated.png", _read("files/truncated.png"), TE, "truncated.png")
for key, source in REAL.items():
    CASES.append(pytest.param(_read(f"files/truncated_real.{key}"), TE,
                              (f"truncated_real.{key}", "could not be read"),
                              id=f"read_image-truncated-real.{key}",
                              marks=pytest.mark.skipif(not source.is_file(),
                                                       reason=f"{source} is not present")))
# pixel values and shapes
for name, text in (("nan.npy", "NaN"), ("nan.tif", "NaN"), ("inf.npy", "infinite"),
                   ("zero_rows.npy", "empty"), ("zero_cols.npy", "empty"),
                   ("spectrum.npy", "spectrum"), ("zero_frames.npy", None),
                   ("two_channels.npy", "channels"), ("complex.npy", "complex"),
                   ("strings.npy", None), ("no_image.h5", None)):
    case(f"read_image-{name}", _read(f"files/{name}"), TE, (name,) if text is None else (name, text))
# paths and arguments
case("read_image-missing", _read("files/absent.tif"), TE, ("absent.tif", "no such file"))
case("read_image-folder", _read("files/folder.tif"), TE, "folder.tif")
case("read_image-unsupported", _read("files/notes.txt"), TE, ("notes.txt", ".txt"))
case("read_image-no-extension", _read("files/noextension"), TE, "noextension")
case("read_image-frame-out-of-range", _read("files/stack.npy", frame=5), TE, "frame 5")
case("read_image-frame-not-int", _read("files/stack.npy", frame="1"), TY, "frame")
case("read_image-frame-float", _read("files/stack.npy", frame=0.5), TY, "frame")
case("read_image-dataset-on-npy", _read("files/good.npy", dataset="x"), TE, "HDF5")
case("read_image-dataset-not-str", _read("files/no_image.h5", dataset=3), TY, "dataset")
case("read_image-missing-dataset", _read("files/no_image.h5", dataset="nope"), TE, "nope")
case("read_image-path-none", lambda w: _api("read_image")(None), TY, "path")
case("read_image-path-int", lambda w: _api("read_image")(3), TY, "path")
# read_stack
case("read_stack-empty-list", _stack(lambda w: []), TE, "empty list")
case("read_stack-empty-folder", _stack(lambda w: w["user"] / "empty_folder"), TE, "empty_folder")
case("read_stack-no-images", _stack(lambda w: w["user"] / "text_folder"), TE, "text_folder")
case("read_stack-pattern", _stack(lambda w: str(w["user"] / "files" / "*.xyz")), TE, "*.xyz")
case("read_stack-list-missing", _stack(lambda w: [w["user"] / "files" / "absent.npy"], 0), TE,
     "absent.npy")
case("read_stack-list-of-stack", _stack(lambda w: [w["user"] / "files" / "stack.npy"], 0), TE,
     ("stack.npy", "stack of 2"))
case("read_stack-list-of-int", _stack(lambda w: [1, 2]), TY, "path")
case("read_stack-zero-frames-index", _stack(lambda w: w["user"] / "files" / "zero_frames.npy", 0),
     TE, "zero_frames.npy")
case("read_stack-empty.tif", _stack(lambda w: w["user"] / "files" / "empty.tif"), TE, "empty.tif")
case("read_stack-index-True", _stack(lambda w: w["user"] / "files" / "stack.npy", True), TY,
     "frame index")
case("read_stack-index-float", _stack(lambda w: w["user"] / "files" / "stack.npy", 1.0), TY,
     "frame index")
case("read_stack-random.emd", _stack(lambda w: w["user"] / "files" / "random.emd"), TE,
     "random.emd")

# predict: arguments
for value in (0, -64, 7, 15):
    case(f"predict-tile_size={value}", _predict(tile_size=value), VE, ("tile_size", str(value)))
for value in ("512", 16.5):
    case(f"predict-tile_size={value!r}", _predict(tile_size=value), TY, "tile_size")
for value in (0, -1):
    case(f"predict-batch_size={value}", _predict(batch_size=value), VE, ("batch_size", str(value)))
for value in (2.5, "4", None):
    case(f"predict-batch_size={value!r}", _predict(batch_size=value), TY, "batch_size")
for value in (-1, 0, float("nan"), float("inf")):
    case(f"predict-pixel_size_nm={value}", _predict(pixel_size_nm=value), VE, "pixel_size_nm")
case("predict-pixel_size_nm='x'", _predict(pixel_size_nm="x"), TY, "pixel_size_nm")
case("predict-overlap=-1", _predict(overlap=-1), VE, "overlap")
case("predict-overlap='big'", _predict(overlap="big"), TY, "overlap")
case("predict-mixed_precision", _predict(mixed_precision="fp8"), VE, ("mixed_precision", "fp8"))
case("predict-max_memory_gb=0", _predict(max_memory_gb=0), VE, "max_memory_gb")
case("predict-max_pixels=0", _predict(max_pixels=0), VE, "max_pixels")
case("predict-return_probabilities", _predict(return_probabilities="yes"), TY,
     "return_probabilities")
case("predict-threshold=1.5", _predict(threshold=1.5), VE, "threshold")
case("predict-threshold=-0.1", _predict(threshold=-0.1), VE, "threshold")
case("predict-threshold='median'", _predict(threshold="median"), VE, "threshold")
case("predict-frames='3/2'", _predict(frames="3/2"), VE, "3/2")
case("predict-frames=[99]", _predict(frames=[99]), VE, "99")
# predict: images
case("predict-zero-rows", _predict(x=lambda w: np.zeros((0, 64), np.float32)), TE, "empty")
case("predict-zero-frames", _predict(x=lambda w: np.zeros((0, 64, 64), np.float32)), TE, "empty")
case("predict-zero-cols", _predict(x=lambda w: np.zeros((64, 0), np.float32)), TE, "empty")
case("predict-4d", _predict(x=lambda w: np.zeros((1, 2, 64, 64), np.float32)), TE, "shape")
case("predict-strings", _predict(x=lambda w: np.array([["a"]])), TE, "dtype")
case("predict-nan", _predict(x=lambda w: np.where(w["image"] > 0.5, np.nan, w["image"])), TE,
     "NaN")
case("predict-empty-list", _predict(x=lambda w: []), TE, "empty list")
case("predict-none", _predict(x=lambda w: None), TY, "NoneType")
case("predict-int", _predict(x=lambda w: 3), TY, "int")
case("predict-missing-file", _predict(x=lambda w: w["user"] / "files" / "absent.tif"), TE,
     "absent.tif")
case("predict-unsupported-file", _predict(x=lambda w: w["user"] / "files" / "notes.txt"), TE,
     "notes.txt")
case("predict-empty-folder", _predict(x=lambda w: w["user"] / "empty_folder"), TE, "empty_folder")
case("predict-truncated-file", _predict(x=lambda w: w["user"] / "files" / "truncated.npy"), TE,
     "truncated.npy")
case("predict-nan-file", _predict(x=lambda w: w["user"] / "files" / "nan.tif"), TE, "nan.tif")
# predict: models
case("predict-model-missing", _predict(model="absent_run"), TE, "absent_run")
case("predict-model-not-a-run", _predict(model="not_a_run"), TE, "not_a_run")
case("predict-model-txt", _predict(model="model.txt"), TE, "model.txt")
case("predict-model-int", _predict(model=3), TY, "int")
case("predict-run-truncated-best", _predict(model="run_truncated"), TE, "best.keras")
case("predict-run-empty-best", _predict(model="run_empty"), TE, ("best.keras", "empty"))
case("predict-run-text-best", _predict(model="run_text"), TE, "best.keras")
case("predict-run-bad-config", _predict(model="run_badconfig"), TE, "config.json")
case("predict-truncated-keras", _predict(model="truncated.keras"), TE, "truncated.keras")
case("predict-partial-export", _predict(model="export_partial"), TE, ("export_partial", "partial"))
case("predict-corrupt-export", _predict(model="export_corrupt"), TE, "tem_keras.json")
case("predict-export-missing-file", _predict(model="export_missing"), TE, "model.keras")
# predict_stack
case("predict_stack-tile_size=0", _predict_stack(tile_size=0), VE, "tile_size")
case("predict_stack-batch_size=0", _predict_stack(batch_size=0), VE, "batch_size")
case("predict_stack-zero-size", _predict_stack(x=lambda w: np.zeros((0, 8), np.float32)), TE,
     "empty")
case("predict_stack-frames", _predict_stack(frames="1/0"), VE, "1/0")
case("predict_stack-frames-empty-list", _predict_stack(x=lambda w: np.stack([w["image"]] * 2),
                                                      frames=[]), TE, ("frames", "empty"))
case("predict_stack-frames-empty-slice", _predict_stack(x=lambda w: np.stack([w["image"]] * 2),
                                                       frames=slice(1, 1)), TE, ("frames 1:1", "no frame"))
case("predict_stack-frames-colon-text", _predict_stack(x=lambda w: np.stack([w["image"]] * 2),
                                                      frames="0:3"), TE, ("frames '0:3'", "slice"))
case("predict_stack-run-truncated", _predict_stack(model="run_truncated"), TE, "best.keras")

# evaluate
case("evaluate-class-7", _evaluate("ds_class7"), TE, ("class 7", "a.png"))
case("evaluate-mismatched-mask", _evaluate("ds_mismatch"), TE, "a.png")
case("evaluate-unlabelled", _evaluate("ds_unlabelled"), TE, "ds_unlabelled")
case("evaluate-missing-folder", _evaluate("absent_ds"), TE, "absent_ds")
case("evaluate-empty-folder", _evaluate("empty_folder"), TE, "empty_folder")
case("evaluate-metric", _evaluate(metric="auc"), VE, ("metric", "auc"))
case("evaluate-split-name", _evaluate(split="holdout"), VE, ("split", "holdout"))
case("evaluate-split-without-run", _evaluate(model="model.keras", split="test"), TE, "split")
case("evaluate-batch_size=0", _evaluate(batch_size=0), VE, "batch_size")
case("evaluate-tile_size=7", _evaluate(tile_size=7), VE, "tile_size")
case("evaluate-run-empty-best", _evaluate(model="run_empty"), TE, "best.keras")

# measure_particles and count_particles
case("measure-empty-mask", _measure(np.zeros((0, 0), np.uint8)), TE, "empty")
case("measure-min_area='x'", _measure(M, min_area="x"), TY, "min_area")
case("measure-min_area=-1", _measure(M, min_area=-1), VE, "min_area")
case("measure-min_area=2.5", _measure(M, min_area=2.5), TY, "min_area")
case("measure-3d-labels", _measure(np.zeros((2, 8, 8), np.uint8)), TE, "shape")
case("measure-strings", _measure(np.array([["a", "b"]])), TE, "dtype")
case("measure-nan-probabilities", _measure(np.full((8, 8), np.nan)), TE, "NaN")
case("measure-probabilities-range", _measure(np.full((8, 8), 3.0)), TE, "[0, 1]")
case("measure-threshold=2", _measure(M, threshold=2), VE, "threshold")
case("measure-pixel_size=-1", _measure(M, pixel_size_nm=-1), TE, "pixel_size_nm")
case("measure-pixel_size='x'", _measure(M, pixel_size_nm="x"), TE, "pixel_size_nm")
case("measure-pixel_size=True", _measure(M, pixel_size_nm=True), TE, ("pixel_size_nm", "True"))
case("measure-image-shape", _measure(M, image=np.zeros((8, 8))), TE, "shape")
case("measure-class_index=-1", _measure(M, class_index=-1), VE, "class_index")
case("measure-split_touching='no'", _measure(M, split_touching="no"), TY, "split_touching")
case("count-empty-mask", lambda w: _api("count_particles")(np.zeros((0, 3), bool)), TE, "empty")
case("count-min_area='x'", lambda w: _api("count_particles")(M, min_area="x"), TY, "min_area")

# discover
case("discover-missing", lambda w: _api("discover")(w["user"] / "absent_ds"), TE, "absent_ds")
case("discover-file", lambda w: _api("discover")(w["user"] / "files" / "good.npy"), TE, "good.npy")
case("discover-pairing", lambda w: _api("discover")(w["user"] / "ds_ok", pairing="nope"), VE,
     ("pairing", "nope"))

# export and load
case("export-truncated-run", lambda w: _api("export")(w["user"] / "run_truncated", w["out"] / "e1"),
     TE, "best.keras")
case("export-empty-run", lambda w: _api("export")(w["user"] / "run_empty", w["out"] / "e2"), TE,
     "best.keras")
case("export-into-run", lambda w: _api("export")(w["user"] / "run", w["user"] / "run"), TE, "run")
case("export-non-empty", lambda w: _api("export")(w["user"] / "run", w["user"] / "files"), TE,
     ("files", "not empty"))
case("export-format", lambda w: _api("export")(w["user"] / "run", w["out"] / "e3", formats="pdf"),
     VE, "pdf")
case("export-threshold", lambda w: _api("export")(w["user"] / "run", w["out"] / "e4", threshold=2),
     VE, "threshold")
case("export-pixel-size", lambda w: _api("export")(w["user"] / "run", w["out"] / "e5",
                                                   pixel_size_nm=-3), VE, "pixel_size_nm")
case("export-missing-run", lambda w: _api("export")(w["user"] / "absent_run", w["out"] / "e6"), TE,
     "absent_run")
case("load-missing", lambda w: _api("load")(w["user"] / "absent"), TE, "absent")
case("load-neither", lambda w: _api("load")(w["user"] / "not_a_run"), TE, "not_a_run")
case("load-partial-export", lambda w: _api("load")(w["user"] / "export_partial"), TE, "partial")
case("load-corrupt-export", lambda w: _api("load")(w["user"] / "export_corrupt"), TE,
     "tem_keras.json")
case("load-export-missing-file", lambda w: _api("load")(w["user"] / "export_missing"), TE,
     "model.keras")
case("load-truncated-keras", lambda w: _api("load")(w["user"] / "truncated.keras"), TE,
     "truncated.keras")
case("load-txt", lambda w: _api("load")(w["user"] / "model.txt"), TE, "model.txt")
case("load-run-truncated", lambda w: _api("load")(w["user"] / "run_truncated"), TE, "best.keras")
case("load-run-empty", lambda w: _api("load")(w["user"] / "run_empty"), TE, "best.keras")
# the exported SavedModel
for name, images in (("nan", lambda w: np.full((32, 32), np.nan)),
                     ("constant", lambda w: np.full((32, 32), 3.0)),
                     ("empty", lambda w: np.zeros((0, 32, 32, 1))),
                     ("two-channels", lambda w: np.zeros((1, 32, 32, 2)))):
    case(f"serve-{name}", lambda w, images=images: _api("load")(w["user"] / "export").serve(
        images(w)), TE, "image")
case("export-predict-constant", lambda w: _api("predict")(_api("load")(w["user"] / "export"),
    np.full((64, 64), 2.0, np.float32)), TE, "constant")

# fit: arguments are checked before any file is read or written
def _fit(ds="ds_ok", **kw):
    return lambda w: _api("fit")(w["user"] / ds, run_dir=w["user"] / "never_written", verbose=0, **kw)


for id_, kw, types, names in (
        ("epochs-0", dict(epochs=0), VE, ("epochs", "0")),
        ("epochs-negative", dict(epochs=-1), VE, ("epochs", "-1")),
        ("epochs-float", dict(epochs=2.5), VE, ("epochs", "2.5")),
        ("patch-size-0", dict(patch_size=0), VE, ("patch_size", "0")),
        ("patch-size-negative", dict(patch_size=-5), VE, ("patch_size", "-5")),
        ("batch-size-0", dict(batch_size=0), VE, ("batch_size", "0")),
        ("learning-rate-negative", dict(learning_rate=-1), VE, ("learning_rate", "-1")),
        ("split-over-one", dict(split=(0.5, 0.5, 0.5)), VE, ("split", "0.5")),
        ("split-two-values", dict(split=(0.8, 0.2)), VE, ("split",)),
        ("patience-negative", dict(patience=-1), VE, ("patience", "-1")),
        ("time-limit-text", dict(time_limit="soon"), VE, ("time_limit", "soon")),
        ("time-limit-zero", dict(time_limit=0), VE, ("time_limit", "0")),
        ("recipe-unknown", dict(recipe="magic"), VE, ("recipe", "magic")),
        ("folds-one", dict(folds=1), VE, ("folds", "1")),
        ("foreground-fraction", dict(foreground_fraction=2.0), VE, ("foreground_fraction", "2.0")),
        ("precision-unknown", dict(mixed_precision="half"), VE, ("mixed_precision", "half")),
        ("model-type", dict(model=3.5), TY, ("model", "float")),
        ("labels-unknown", dict(labels="some"), VE, ("labels", "some")),
        ("augment-text", dict(augment="no"), TY, ("augment", "'no'"))):
    case(f"fit-{id_}", _fit(**kw), types, names)
case("fit-missing-folder", _fit("no_such_dataset"), TE, ("no_such_dataset",))
case("cli-fit-bad-epochs", _cli("fit", "{user}/ds_ok", "--epochs", "0"), _CliError, "2")
case("cli-fit-bad-time-limit", _cli("fit", "{user}/ds_ok", "--time-limit", "soon"), _CliError, "2")
case("cli-fit-options-without-model", _cli("fit", "{user}/ds_ok", "--base-filters", "8"), _CliError, "2")

# the command line (in-process)
case("cli-fit-unknown-model", _cli("fit", "{user}/ds_ok", "--model", "nope"), _CliError, "2")
case("cli-fit-unknown-option", _cli("fit", "{user}/ds_ok", "--base-filterz", "8"), _CliError, "2")
case("cli-predict-missing-input", _cli("predict", "{user}/run", "{user}/files/absent.tif", "-o",
                                       "{out}/p1", "--quiet"), _CliError, "2")
case("cli-predict-tile-size-0", _cli("predict", "{user}/run", "{user}/files/good.npy", "-o",
                                     "{out}/p2", "--tile-size", "0", "--quiet"), _CliError, "2")
case("cli-predict-batch-size-0", _cli("predict", "{user}/run", "{user}/files/good.npy", "-o",
                                      "{out}/p3", "--batch-size", "0", "--quiet"), _CliError, "2")
case("cli-predict-pixel-size", _cli("predict", "{user}/run", "{user}/files/good.npy", "-o",
                                    "{out}/p4", "--pixel-size-nm", "-1", "--quiet"), _CliError, "2")
case("cli-predict-run-truncated", _cli("predict", "{user}/run_truncated", "{user}/files/good.npy",
                                       "-o", "{out}/p5", "--quiet"), _CliError, "2")
case("cli-predict-threshold", _cli("predict", "{user}/run", "{user}/files/good.npy", "-o",
                                   "{out}/p6", "--threshold", "2"), _CliError, "2")
case("cli-predict-shard", _cli("predict", "{user}/run", "{user}/files/good.npy", "-o", "{out}/p7",
                               "--shard", "3/2"), _CliError, "2")
case("cli-info-missing", _cli("info", "{user}/files/absent.dm3"), _CliError, "2")
case("cli-info-spectrum", _cli("info", "{user}/files/spectrum.npy"), _CliError, "2")
case("cli-check-empty-folder", _cli("check", "{user}/empty_folder"), _CliError, "2")
case("cli-check-class-7", _cli("check", "{user}/ds_class7"), _CliError, "2")
case("cli-measure-missing", _cli("measure", "{user}/files/absent.png", "-o", "{out}/m.csv"),
     _CliError, "2")
case("cli-evaluate-class-7", _cli("evaluate", "{user}/run", "{user}/ds_class7", "--quiet"),
     _CliError, "2")
case("cli-export-truncated", _cli("export", "{user}/run_truncated", "{out}/x1", "--quiet"),
     _CliError, "2")
case("cli-unknown-command", _cli("segment", "x"), _CliError, "2")


def _last_frame_file(error: BaseException) -> str:
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


def test_the_table_has_at_least_100_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize("call, types, names", CASES)
def test_bad_input(world, call, types, names, capsys):
    before = _snapshot(world["user"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(types) as info:
            call(world)
    error = info.value
    if isinstance(error, _CliError):
        captured = capsys.readouterr()
        assert error.code == 2, captured.err
        assert "Traceback" not in captured.err + captured.out
        last = captured.err.strip().splitlines()[-1] if captured.err.strip() else ""
        assert (last.startswith("tem-keras") and "error:" in last) or "problem:" in captured.out
    else:
        assert isinstance(error, TEMInputError) or type(error) in (ValueError, TypeError)
        if not isinstance(error, TEMInputError):
            assert f"{Path('tem_keras')}" in _last_frame_file(error), (
                f"{type(error).__name__} raised outside tem_keras: {_last_frame_file(error)}")
        message = str(error)
        for name in names:
            assert name in message, f"{name!r} not in {message!r}"
        assert "\n" not in message
    assert _snapshot(world["user"]) == before, "a file the user had was changed"


# --------------------------------------------------------------------------------------------
# Right results where the input is unusual but fine
# --------------------------------------------------------------------------------------------

def test_run_folder_with_an_empty_history_still_predicts(world, tmp_path):
    run = tmp_path / "interrupted"
    shutil.copytree(world["user"] / "run", run)
    (run / "history.csv").write_text("")
    import tem_keras

    result = tem_keras.predict(run, world["image"])
    assert result.mask.shape == (64, 64)
    assert tem_keras.load(run).history is None


@pytest.mark.slow
def test_count_particles_counts_every_component_measure_is_for_sizes():
    import tem_keras

    mask = np.zeros((40, 40), np.uint8)
    mask[0:5, 0:5] = 1      # touches the border
    mask[10:12, 10:12] = 1  # 4 px, under min_area
    mask[20:30, 20:30] = 1
    assert tem_keras.count_particles(mask) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(tem_keras.measure_particles(mask)) == 1


def test_onednn_hint_once_per_process(monkeypatch):
    from tem_keras import hardware

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(hardware, "_ONEDNN_HINTED", {})
    monkeypatch.setattr(hardware, "onednn_enabled", lambda: False)
    monkeypatch.setattr(hardware, "onednn_pays", lambda weight_bytes: True)
    assert hardware.onednn_hint(1000) is not None
    assert hardware.onednn_hint(1000) is None


def test_keras_verbosity_is_one_line_per_epoch_in_a_log(monkeypatch):
    import io

    from tem_keras._env import keras_verbosity

    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert keras_verbosity(1) == 2 and keras_verbosity(0) == 0 and keras_verbosity(2) == 2


def test_documented_data_paths_work_after_import_tem_keras(tmp_path):
    import tem_keras

    assert callable(tem_keras.data.discover)
    out = tem_keras.data.synthetic.make_dataset(tmp_path / "s", n_images=1, size=32)
    assert len(tem_keras.data.discover(out).labelled) == 1


def test_two_predict_processes_do_not_replace_each_others_particles(world, tmp_path, capsys):
    from tem_keras.cli import main
    from tem_keras.io.outputs import claim_output, release_output

    out = tmp_path / "out"
    out.mkdir()
    other = out / ".particles.csv.lock"  # pid 1 is always alive: another process writing
    other.write_text("1")
    code = main(["predict", str(world["user"] / "run"), str(world["user"] / "files" / "good.npy"),
                 "-o", str(out), "--particles", "--quiet"])
    assert code == 2 and "another tem-keras process" in capsys.readouterr().err
    assert not (out / "particles.csv").exists()
    other.unlink()
    assert main(["predict", str(world["user"] / "run"), str(world["user"] / "files" / "good.npy"),
                 "-o", str(out), "--particles", "--quiet", "--pixel-size-nm", "0.5"]) == 0
    rows = (out / "particles.csv").read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        claim_output(out / "particles.csv", overwrite=False)
    assert (out / "particles.csv").read_text() == rows
    assert not list(out.glob(".*.partial")) and not list(out.glob(".*.lock"))
    (out / ".particles.csv.lock").write_text("999999999")  # left by a killed process: taken over
    partial = claim_output(out / "particles.csv", overwrite=True)
    assert (out / ".particles.csv.lock").read_text() == str(os.getpid())
    release_output(out / "particles.csv")
    assert not partial.exists() and not (out / ".particles.csv.lock").exists()


def test_info_reports_the_frames_of_a_tifffile_stack(tmp_path, capsys):
    import tifffile

    from tem_keras.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 64, 80), np.uint16))
    assert main(["info", str(tmp_path / "s.tif")]) == 0
    assert "3 frame(s) of 64×80 px" in capsys.readouterr().out


@pytest.mark.slow
def test_the_command_line_prints_no_tensorflow_log_lines(world, tmp_path):
    """One subprocess: TensorFlow starts in a fresh process, as for a user."""
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-m", "tem_keras.cli", "predict", str(world["user"] / "run"),
                           str(world["user"] / "files" / "good.npy"), "-o", str(tmp_path / "o"),
                           "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines()
             if re.match(r"[IWEF]\d{4} ", line) or "absl" in line or "cuInit" in line]
    assert not noise, noise
