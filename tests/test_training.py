"""fit, Run, sweep, losses and Keras metrics on tiny synthetic data sets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tem_keras.data.synthetic import make_dataset
from tem_keras.training import Run, fit, sweep

WORKER = Path(__file__).parent / "scripts" / "fit_worker.py"
TINY = {"name": "unet", "depth": 2, "base_filters": 8}
FAST = dict(patch_size=64, batch_size=4, augment=False, mixed_precision="float32", verbose=0)


@pytest.fixture(scope="module")
def bright_field(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("bf") / "data", n_images=10, size=64,
                        mode="bright-field", seed=1)


def _env():
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    return env


@pytest.mark.slow
def test_fit_writes_complete_run_and_learns(bright_field, tmp_path):
    run = fit(bright_field, dict(TINY), epochs=30, patience=30, learning_rate=3e-3,
              run_dir=tmp_path / "run", **FAST)
    for name in ("config.json", "split.json", "history.csv", "best.keras", "last.keras",
                 "metrics.json", "plots/history.png", "plots/examples.png"):
        assert (run.path / name).is_file(), name
    assert list((run.path / "logs").rglob("events.out.tfevents*"))
    assert not (run.path / "backup").exists()
    config = json.loads((run.path / "config.json").read_text())
    assert config["model"]["name"] == "unet" and config["training"]["seed"] == 0
    assert config["pixel_size_nm"] == pytest.approx(json.loads(
        (bright_field / "dataset.json").read_text())["pixel_size_nm"])
    split = json.loads((run.path / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [7, 1, 2]
    assert len(run.history) == 30
    metrics = run.metrics
    # all-particle prediction scores 2f/(1+f) with f the particle fraction: far below what we ask
    from tem_keras.data.datasets import read_mask

    fraction = np.mean([read_mask(p).mean() for p in (bright_field / "masks").iterdir()])
    assert metrics["at_0.5"]["dice"] > max(0.75, 2 * fraction / (1 + fraction) + 0.3)
    assert 0 < metrics["otsu_threshold"] < 1 and metrics["at_otsu"]["dice"] > 0.75
    from tem_keras.inference import predict_image

    loaded = Run.load(run.path)
    image = np.random.default_rng(0).normal(size=(48, 72)).astype(np.float32)
    np.testing.assert_allclose(predict_image(loaded, image), predict_image(run, image), atol=1e-5)
    assert predict_image(loaded, image).shape == (48, 72, 2)


@pytest.mark.slow
def test_fit_of_a_small_network_says_once_that_onednn_would_be_faster(bright_field, tmp_path, monkeypatch):
    import platform

    from tem_keras import hardware

    monkeypatch.setattr(hardware, "_ONEDNN_HINTED", {})
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(hardware, "onednn_enabled", lambda: False)  # as on an AVX2 CPU
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with pytest.warns(hardware.PerformanceHint, match="TF_ENABLE_ONEDNN_OPTS=1"):
        fit(bright_field, dict(TINY), epochs=1, run_dir=tmp_path / "run", **FAST)
    assert hardware._ONEDNN_HINTED == {"said": True}


@pytest.mark.slow
def test_same_seed_same_metrics_and_refusal_to_overwrite(bright_field, tmp_path):
    kwargs = dict(epochs=3, patience=5, **{**FAST, "augment": True})
    a = fit(bright_field, dict(TINY), run_dir=tmp_path / "a", **kwargs)
    b = fit(bright_field, dict(TINY), run_dir=tmp_path / "b", **kwargs)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-6)
    assert a.metrics == b.metrics
    c = fit(bright_field, dict(TINY), run_dir=tmp_path / "c", seed=1, **kwargs)
    assert not np.allclose(a.history["loss"], c.history["loss"])
    with pytest.raises(FileExistsError, match="finished run.*overwrite=True"):
        fit(bright_field, dict(TINY), run_dir=tmp_path / "a", **kwargs)
    again = fit(bright_field, dict(TINY), run_dir=tmp_path / "a", overwrite=True, **kwargs)
    np.testing.assert_allclose(again.history["loss"], a.history["loss"], rtol=1e-6)


@pytest.mark.slow
def test_killed_fit_resumes_from_last_epoch(bright_field, tmp_path):
    run_dir = tmp_path / "run"
    kwargs = json.dumps({"model": "unet", "depth": 2, "base_filters": 8, "epochs": 8, "patience": 50,
                         **{**FAST, "batch_size": 1, "augment": True}})
    proc = subprocess.Popen([sys.executable, str(WORKER), str(bright_field), str(run_dir), kwargs],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run_dir / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(history.read_text().splitlines()) - 1
    assert 2 <= done < 8, "the process was not interrupted mid-way"
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    out = subprocess.run([sys.executable, str(WORKER), str(bright_field), str(run_dir), kwargs],
                         env=_env(), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = __import__("pandas").read_csv(history)
    assert rows["epoch"].tolist()[-1] == 7 and rows["epoch"].is_unique
    assert len(rows) == 8
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "backup").exists()


@pytest.mark.slow
def test_mirrored_two_devices_matches_one_device(bright_field, tmp_path):
    common = {"model": "unet", "depth": 2, "base_filters": 4, "batch_norm": False, "epochs": 3,
              "patience": 5, **{**FAST, "augment": True}}
    losses = []
    for devices, batch in ((1, 4), (2, 2)):
        kwargs = json.dumps({**common, "devices": devices, "batch_size": batch})
        out = subprocess.run([sys.executable, str(WORKER), str(bright_field),
                              str(tmp_path / f"run{devices}"), kwargs, "2"],
                             env=_env(), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        losses.append(json.loads(out.stdout.split("HISTORY", 1)[1]))
        config = json.loads((tmp_path / f"run{devices}" / "config.json").read_text())
        assert config["strategy"]["replicas"] == devices
        assert config["training"]["global_batch_size"] == 4
    np.testing.assert_allclose(losses[0], losses[1], rtol=2e-3)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_on_localhost(bright_field, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    kwargs = json.dumps({"model": "unet", "depth": 2, "base_filters": 4, "batch_norm": False,
                         "epochs": 2, "patience": 5, **FAST})
    procs = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(bright_field), str(tmp_path / "run"), kwargs],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["strategy"] == {"type": "MultiWorkerMirroredStrategy", "replicas": 2}
    assert len(__import__("pandas").read_csv(tmp_path / "run" / "history.csv")) == 2
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_sweep_table_and_plot(bright_field, tmp_path):
    models = [dict(TINY, label="unet_d2"),
              {"name": "residual_unet", "n_blocks": 2, "pool_sizes": (2, 2), "label": "resunet_22"}]
    summary = sweep(bright_field, models, seeds=[0, 1], out_dir=tmp_path / "sweep", epochs=1,
                    steps_per_epoch=2, **FAST)
    assert list(summary["label"]) == ["unet_d2", "resunet_22"]
    assert summary["n_seeds"].tolist() == [2, 2]
    assert summary.loc[1, "receptive_field_px"] == 44  # Sytwu et al.: 8 + 8·2 + 5·2·2
    assert summary["dice_mean"].between(0, 1).all() and summary["dice_std"].notna().all()
    for name in ("sweep.csv", "summary.csv", "dice_vs_receptive_field.png"):
        assert (tmp_path / "sweep" / name).is_file()
    assert len(__import__("pandas").read_csv(tmp_path / "sweep" / "sweep.csv")) == 4


def test_fit_bad_inputs(tmp_path, bright_field):
    with pytest.raises(Exception, match="no such dataset folder"):
        fit(tmp_path / "nothing", **FAST)
    with pytest.raises(ValueError, match="unknown loss"):
        fit(bright_field, dict(TINY), loss="hinge", run_dir=tmp_path / "r", **FAST)


@pytest.mark.slow
def test_fit_on_unlabelled_images_with_pseudo_labels(tmp_path):
    from tem_keras.data.datasets import read_mask
    from tem_keras.analysis.metrics import dice

    source = make_dataset(tmp_path / "labelled", n_images=6, size=64, seed=2)
    unlabelled = tmp_path / "unlabelled"
    (unlabelled / "images").mkdir(parents=True)
    for image in (source / "images").iterdir():
        (unlabelled / "images" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(Exception, match="no pairs|no image files|no labelled"):
        fit(unlabelled, dict(TINY), epochs=1, run_dir=tmp_path / "refused", **FAST)
    run = fit(unlabelled, dict(TINY), labels="auto", particles="dark", epochs=2,
              run_dir=tmp_path / "run", **FAST)
    labels = sorted((run.path / "pseudo_labels").glob("*.png"))
    assert [p.stem for p in labels] == [p.stem for p in sorted((source / "masks").iterdir())]
    scores = [dice(read_mask(p), read_mask(source / "masks" / p.name)) for p in labels]
    assert np.mean(scores) > 0.7  # pseudo-labels agree with the exact masks (border particles are missed)
    assert run.config["data"]["labels"] == "auto"
    assert sorted(os.listdir(unlabelled)) == ["images"]  # the user's folder is left as it was


@pytest.mark.slow
def test_default_fit_plans_from_the_data_and_uses_its_threshold(tmp_path):
    """fit(DIR) with a time limit only: a plan in config.json, a threshold chosen on validation and
    used by predict, per-image test scores, and training stopped by the budget."""
    import tem_keras

    data = make_dataset(tmp_path / "data", n_images=10, size=(72, 88), mode="bright-field", seed=4)
    run = fit(data, time_limit=12, split=(0.5, 0.3, 0.2), run_dir=tmp_path / "run",
              mixed_precision="float32", verbose=0)
    config = json.loads((run.path / "config.json").read_text())
    plan = config["plan"]
    assert config["request"]["model"] is None and plan["model"]["name"] == "residual_unet"
    assert plan["patch_size"] == 72 and plan["epochs"] >= 1 and plan["step_seconds"] > 0
    assert config["training"]["schedule"] == "cosine" and config["training"]["learning_rate"] == 1e-3
    assert len(run.history) <= plan["epochs"] and {"val_dice", "val_loss", "learning_rate"} <= set(run.history)
    threshold = json.loads((run.path / "thresholds.json").read_text())
    assert threshold["n_images"] == 3 and 0 < threshold["threshold"] < 1
    image = tem_keras.read_image(next((data / "images").iterdir()))
    assert tem_keras.predict(run.path, image).threshold == pytest.approx(threshold["threshold"])
    metrics = run.metrics
    assert metrics["n_images"] == 2 and len(metrics["images"]) == 2
    assert metrics["per_image"]["dice"]["mean"] == pytest.approx(np.mean([r["dice"] for r in metrics["images"]]))
    # the best checkpoint holds the epoch with the best dice of the monitored validation images,
    # from the first third of the epochs on
    from tem_keras.training.heldout import HeldOut, mean_dice
    from tem_keras.data.datasets import discover
    from tem_keras.data.pipeline import load_images

    val_images, val_masks, _ = load_images(discover(data), run.split["val"])
    loaded = Run.load(run.path)
    monitored = HeldOut(run.split["val"], val_images, val_masks).subset(plan["monitored_images"], seed=0)
    got = mean_dice(monitored.predict(loaded.model, 8), monitored.masks)
    dice = run.history["val_dice"].to_numpy()
    assert np.min(np.abs(dice - got)) < 1e-4 and got >= dice[len(dice) // 3:].max() - 1e-4


@pytest.mark.slow
def test_time_limit_ends_training_early(bright_field, tmp_path):
    start = time.monotonic()
    run = fit(bright_field, dict(TINY), epochs=500, steps_per_epoch=4, time_limit=12,
              run_dir=tmp_path / "run", **FAST)
    assert time.monotonic() - start < 45
    assert 1 <= len(run.history) < 500
    assert (run.path / "best.keras").is_file() and (run.path / "metrics.json").is_file()


@pytest.mark.slow
def test_k_fold_run_predicts_with_the_mean_of_its_folds_and_an_out_of_fold_threshold(tmp_path):
    import tem_keras
    from tem_keras.data.datasets import discover
    from tem_keras.data.pipeline import load_images

    data = make_dataset(tmp_path / "data", n_images=8, size=64, seed=3)
    run = fit(data, {"name": "unet", "depth": 2, "base_filters": 4}, folds=3, epochs=1, steps_per_epoch=2,
              patch_size=64, batch_size=2, mixed_precision="float32", run_dir=tmp_path / "run", verbose=0)
    assert [p.name for p in sorted(run.path.glob("fold*"))] == ["fold0", "fold1", "fold2"]
    config = json.loads((run.path / "config.json").read_text())
    oof = [s for f in config["folds"]["splits"] for s in f["val"]]
    assert sorted(oof) == sorted(set(run.split["train"])) and not set(oof) & set(run.split["test"])
    threshold = json.loads((run.path / "thresholds.json").read_text())
    assert threshold["n_images"] == 6 and "out-of-fold" in threshold["source"]
    assert run.metrics["cross_validation"]["n_images"] == 6
    # the run's model is the mean of the three fold models
    folds = [Run.load(run.path / f"fold{i}").model for i in range(3)]
    images, _, _ = load_images(discover(data), run.split["test"][:1])
    x = images[0][None, ..., None]
    expected = np.mean([np.asarray(m(x, training=False)) for m in folds], axis=0)
    np.testing.assert_allclose(np.asarray(Run.load(run.path).model(x, training=False)), expected, atol=1e-5)
    result = tem_keras.predict(run.path, next((data / "images").iterdir()))
    assert result.threshold == pytest.approx(threshold["threshold"])


@pytest.mark.slow
def test_a_folder_of_few_masks_and_many_frames_trains_on_both(tmp_path):
    """Three hand-drawn masks and five frames without: the frames get pseudo-labels and train,
    validation and test use only the hand-drawn masks, and the plan line says so."""
    from tem_keras.training.labels import ignore_edges, split_with_pseudo_labels

    data = make_dataset(tmp_path / "data", n_images=8, size=64, seed=5)
    masks = sorted((data / "masks").iterdir())
    hand = [p.stem for p in masks[:3]]
    for p in masks[3:]:
        p.unlink()
    run = fit(data, dict(TINY), labels="auto", epochs=1, steps_per_epoch=1, run_dir=tmp_path / "run", **FAST)
    pseudo = sorted(p.stem for p in masks[3:])
    assert sorted(run.split["val"] + run.split["test"]) == sorted(set(hand) - set(run.split["train"]))
    assert set(run.split["val"]) <= set(hand) and set(run.split["test"]) <= set(hand) and run.split["val"]
    assert set(pseudo) <= set(run.split["train"])
    assert run.config["data"]["pseudo_labelled"] == pseudo and run.config["data"]["ignored_edge_px"] >= 1
    assert "3 masks (validation and test only on them) + 5 pseudo-labelled" in run.config["plan"]["labels"]
    n_hand_training = len(set(hand) & set(run.split["train"]))
    said = f"the {n_hand_training} masked training image(s) give at least 50 % of the patches"
    assert (said in run.config["plan"]["labels"]) == (n_hand_training > 0)
    assert sorted(p.stem for p in (run.path / "pseudo_labels").glob("*.png")) == pseudo
    assert split_with_pseudo_labels(["a"], ["b", "c"], (0.7, 0.1, 0.2)) == {"train": ["b", "c"], "val": ["a"],
                                                                              "test": []}
    ring = ignore_edges(np.pad(np.ones((5, 5), np.uint8), 3), 1)  # a 5 px particle keeps its 3×3 core
    assert (ring == 1).sum() == 9 and (ring == 255).sum() == 5 * 5 - 9 + 4 * 5


@pytest.mark.slow
def test_plan_file_is_written_edited_and_trained_from(tmp_path):
    """`tem-keras plan DIR` writes the fingerprint and plan; fit(plan=FILE) follows the edits,
    refuses inconsistent ones, and fit(config=TrainingConfig(...)) takes options as one object."""
    import tem_keras
    from tem_keras.cli import main
    from tem_keras.errors import TEMInputError
    from tem_keras.training import TrainingConfig

    data = make_dataset(tmp_path / "data", n_images=6, size=64, seed=6, particle_diameter_nm=(4.0, 0.5))
    out = tmp_path / "plan.json"
    assert main(["plan", str(data), "-o", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    fp = record["fingerprint"]
    assert fp["images"] == {k: len(v) for k, v in record["split"].items()} and sum(fp["images"].values()) == 6
    assert fp["image_height_px"]["median"] == 64 and fp["labels"]["hand_drawn"] == 6
    assert 6 < fp["particle_diameter_px"]["median"] < 10  # 4 nm at the generator's 0.5 nm/px
    assert record["plan"]["model"]["name"] == "residual_unet" and record["plan"]["epochs"] is None
    assert main(["plan", str(data), "-o", str(out), "--quiet"]) == 2  # not replaced without --overwrite

    record["plan"].update(model={"name": "unet", "depth": 2, "base_filters": 4}, patch_size=32, batch_size=2,
                          epochs=1, steps_per_epoch=2, pretrained=None)
    moved = record["split"]["train"].pop()
    record["split"]["val"].append(moved)
    out.write_text(json.dumps(record))
    run = fit(data, plan=out, run_dir=tmp_path / "run", augment=False, mixed_precision="float32", verbose=0)
    assert run.split["val"] == record["split"]["val"] and moved not in run.split["train"]
    plan = run.config["plan"]
    assert (plan["patch_size"], plan["batch_size"], plan["epochs"], plan["steps_per_epoch"]) == (32, 2, 1, 2)
    assert plan["model"]["name"] == "unet" and len(run.history) == 1

    for field, value, match in [("patch_size", 200, "patch_size 200"), ("batch_size", 0, "batch_size"),
                                ("model", {"name": "nonsense"}, "does not build"), ("colour", 3, "unknown plan field")]:
        bad = json.loads(out.read_text())
        bad["plan"][field] = value
        out.write_text(json.dumps(bad))
        with pytest.raises((ValueError, TEMInputError), match=match):
            fit(data, plan=out, run_dir=tmp_path / f"bad_{field}", verbose=0)
    with pytest.raises(ValueError, match="not both.*epochs"):
        fit(data, config=TrainingConfig(epochs=1), epochs=2, run_dir=tmp_path / "both")
    run = fit(data, config=TrainingConfig(model=dict(TINY), epochs=1, steps_per_epoch=1, patch_size=32,
                                          batch_size=2, augment=False, mixed_precision="float32"),
              run_dir=tmp_path / "config", verbose=0)
    assert run.config["request"]["epochs"] == 1 and run.config["data"]["augmentation"] is None
    assert tem_keras.plan is not None


def test_step_time_measurement_stops_once_it_has_used_its_share_of_the_budget():
    """On a loaded machine the measurement before a budget-planned run must not eat the budget:
    past its deadline it times one step and the images' first call only."""
    import keras

    from tem_keras.data.sampling import PatchSampler
    from tem_keras.models import build_model
    from tem_keras.training.heldout import HeldOut
    from tem_keras.training.trainer import TIMING_STEPS, measure_speed

    rng = np.random.default_rng(0)
    images = [rng.normal(size=(64, 64)).astype("float32") for _ in range(2)]
    masks = [(image > 0.5).astype("uint8") for image in images]
    net = build_model("unet", base_filters=2, depth=2)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    steps, step = [], net.train_on_batch
    net.train_on_batch = lambda x, y: steps.append(1) or step(x, y)  # the real step, counted
    held_out = HeldOut(["a", "b"], images, masks)
    for deadline, expected in ((float("inf"), 1 + TIMING_STEPS), (0.0, 1 + 1)):  # traced + timed
        steps.clear()
        step_s, image_s = measure_speed(net, PatchSampler(images, masks, 32), held_out, None, None, 0, 4, 2,
                                   deadline=deadline)
        assert len(steps) == expected and step_s > 0 and image_s > 0
        assert int(net.optimizer.iterations.numpy()) == 0  # the optimiser starts afresh after it
