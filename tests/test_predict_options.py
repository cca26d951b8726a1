"""Prediction options as one object: checked once at the door, passed along by every entry point,
and the model opened once per call."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tem_keras
from tem_keras import artifacts
from tem_keras.data.preprocess import Preprocessing
from tem_keras.errors import TEMInputError
from tem_keras.inference import PredictOptions, evaluate, predict, predict_stack
from tem_keras.inference import options as options_module


def test_options_are_checked_and_normalised_when_made():
    options = PredictOptions(threshold="0.25", preprocessing={"remove_outliers": False})
    assert options.threshold == 0.25 and isinstance(options.threshold, float)
    assert options.preprocessing == Preprocessing(remove_outliers=False)
    assert PredictOptions(threshold=np.float32(0.5)).threshold == 0.5
    assert PredictOptions(tta=np.bool_(True)).tta is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.threshold = 0.5
    for bad, error, words in [
        (dict(threshold=True), TypeError, "a bool is not a number"),
        (dict(threshold=[0.5]), TypeError, "threshold must be a number"),
        (dict(threshold=1.5), ValueError, r"threshold must be in \[0, 1\]"),
        (dict(threshold="half"), ValueError, "threshold must be a number"),
        (dict(tta="yes"), TypeError, "tta must be True or False, got 'yes'"),
        (dict(batch_size=True), TypeError, "batch_size must be an integer"),
        (dict(tile_size=7), ValueError, "tile_size must be an integer >= 16"),
        (dict(overlap=-1), ValueError, "overlap must be 'auto' or an integer >= 0"),
        (dict(mixed_precision="float8"), ValueError, "mixed_precision must be one of"),
        (dict(max_memory_gb=0), ValueError, "max_memory_gb must be"),
        (dict(engine="jax"), ValueError, "engine must be one of 'auto', 'onnx', 'tensorflow'"),
        (dict(preprocessing="standard"), TypeError, "preprocessing must be a tem_keras Preprocessing"),
        (dict(pixel_size_nm=-0.1), ValueError, "pixel_size_nm must be"),
    ]:
        with pytest.raises(error, match=words):
            PredictOptions(**bad)


def test_build_keeps_the_object_and_applies_keywords():
    base = PredictOptions(threshold=0.3, tile_size=64)
    assert PredictOptions.build(base) is base           # passed along, not made again
    changed = PredictOptions.build(base, batch_size=2)
    assert (changed.threshold, changed.tile_size, changed.batch_size) == (0.3, 64, 2)
    assert base.batch_size == 4                          # frozen: the original is unchanged
    assert PredictOptions.build(None, threshold="otsu") == PredictOptions(threshold="otsu")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['tile'\]"):
        PredictOptions.build(None, tile=64)
    with pytest.raises(TypeError, match="options must be a PredictOptions"):
        PredictOptions.build({"threshold": 0.3})
    assert PredictOptions.from_dict(changed.to_dict()) == changed


def test_frame_selections_are_refused_before_the_model_is_opened(tmp_path, monkeypatch):
    loads = _count_loads(monkeypatch)
    stack = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    missing = tmp_path / "no_such_run"   # never opened: the frames fail first
    for frames, words in [([0, 0], "frames lists frame 0 twice"),
                          ([0.5], r"frames must be whole frame indices, got 0.5 \(float\)"),
                          ([True], "frames must be whole frame indices, got True"),
                          (2, "frames must be None, 'i/n', a slice or a list"),
                          (slice(1, 5), r"frames 1:5 reaches beyond the input, which has 3 frame\(s\)"),
                          (range(-4, 0), "reaches beyond the input"),
                          ([3], r"frames \[3\] do not exist"),
                          ("3/3", "a shard is written 'i/n'")]:
        with pytest.raises(TEMInputError, match=words):
            predict(missing, stack, frames=frames)
    assert loads == []


def test_keywords_and_options_give_the_same_masks(tmp_path):
    from tem_keras.data.synthetic import make_stack
    from tem_keras.models import unet

    import keras

    keras.utils.set_random_seed(0)
    model = unet(depth=2, base_filters=4)
    frames, _, _ = make_stack(3, 64, seed=2)
    options = PredictOptions(threshold=0.45, tile_size=48, overlap=24, batch_size=3)
    by_options = predict(model, frames, options=options)
    by_keywords = predict(model, frames, threshold=0.45, tile_size=48, overlap=24, batch_size=3)
    for a, b in zip(by_options, by_keywords):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.threshold == b.threshold == 0.45
    # a keyword beside options replaces that field only
    otsu = predict(model, frames, options=options, threshold="otsu", frames=[2])
    assert otsu[0].index == 2 and otsu[0].threshold != 0.45
    with pytest.raises(TypeError, match=r"options of a Zarr store"):
        list(predict_stack(model, frames, chunk_frames=2))


def _count_loads(monkeypatch) -> list:
    """Calls of :func:`tem_keras.artifacts.load` (the real one runs), by argument."""
    calls, real = [], artifacts.load

    def counting(model_or_path):
        calls.append(model_or_path)
        return real(model_or_path)

    monkeypatch.setattr(artifacts, "load", counting)
    return calls


def _count_checks(monkeypatch) -> list:
    """Calls of the check of the prediction options (the real one runs)."""
    calls, real = [], options_module.check_predict_arguments

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(options_module, "check_predict_arguments", counting)
    return calls


def test_evaluate_and_predict_check_once_and_load_once(tiny_run, tiny_dataset, monkeypatch):
    loads, checks = _count_loads(monkeypatch), _count_checks(monkeypatch)
    per_image, overall = evaluate(tiny_run.path, tiny_dataset, split="test", threshold=0.5)
    assert len(loads) == 1 and len(checks) == 1
    assert list(per_image["image"]) == tiny_run.split["test"] and overall["threshold"] == 0.5

    loads.clear(), checks.clear()
    image = tiny_dataset / "images" / sorted(p.name for p in (tiny_dataset / "images").iterdir())[0]
    result = predict(tiny_run.path, image)
    assert len(loads) == 1 and len(checks) == 1
    assert result.threshold == tiny_run.threshold   # the run's own, filled in after the load

    loads.clear(), checks.clear()
    bundle = tem_keras.load(tiny_run.path)   # a bundle is handed on, never opened again
    loads.clear()
    predict(bundle, image, options=PredictOptions(threshold=0.2))
    assert loads == [] and len(checks) == 1


@pytest.mark.slow
def test_store_job_takes_options_and_records_the_same_job(tiny_run, tmp_path):
    pytest.importorskip("zarr")
    from tem_keras.distributed.cluster import job_options
    from tem_keras.data.synthetic import make_stack

    # the job a store records keeps its keys, so that stores written before resume
    assert job_options(PredictOptions(), False, False, 10) == {
        "threshold": None, "preprocessing": None, "tile_size": None, "overlap": "auto",
        "batch_size": 4, "mixed_precision": "float32", "max_pixels": None, "max_memory_gb": None,
        "tta": False, "probabilities": False, "particles": False, "min_area": 10}
    frames, _, _ = make_stack(4, 64, seed=1)
    options = PredictOptions(threshold=0.35, batch_size=2, pixel_size_nm=0.5)
    report = predict_stack(tiny_run.path, frames, options=options, out=tmp_path / "v.zarr",
                           chunk_frames=2)
    reference = list(predict_stack(tiny_run.path, frames, options=options))
    np.testing.assert_array_equal(report.masks[:], np.stack([p.mask for p in reference]))
    info = report.store.info
    assert info["job"]["threshold"] == info["provenance"]["threshold"] == 0.35
    assert info["job"]["batch_size"] == 2 and info["pixel_size_nm"] == 0.5
    np.testing.assert_array_equal(report.store.thresholds, np.float32(0.35))
    with pytest.raises(ValueError, match="engine='onnx' runs in this process"):
        predict_stack(tiny_run.path, frames, options=options.replace(engine="onnx"),
                      out=tmp_path / "w.zarr")


def test_watch_checks_once_and_loads_once(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    import shutil

    folder, out = tmp_path / "microscope", tmp_path / "live"
    folder.mkdir()
    for image in sorted((tiny_dataset / "images").iterdir())[:2]:
        shutil.copy(image, folder / image.name)
    loads, checks = _count_loads(monkeypatch), _count_checks(monkeypatch)
    report = tem_keras.watch(tiny_run.path, folder, out, options=PredictOptions(threshold=0.5),
                             once=True, interval=0.05, settle=0.05, summary_every=0, verbose=False)
    assert (report.files, report.stopped) == (2, "once")
    assert len(loads) == 1 and len(checks) == 1   # two files, one model, one check
    with pytest.raises(TypeError, match="tta must be True or False"):
        tem_keras.watch(tiny_run.path, folder, tmp_path / "other", tta="yes")
