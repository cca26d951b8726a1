"""Noisy-student self-training: confident pixels, the round plan, and rounds run and recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tem_keras.data.datasets import IGNORE_LABEL
from tem_keras.data.synthetic import make_dataset
from tem_keras.training.selftrain import (confident_labels, label_agreement, plan_rounds,
                                          student_augmentation)

TINY = {"name": "unet", "depth": 2, "base_filters": 4}
FAST = dict(patch_size=64, batch_size=2, mixed_precision="float32", pretrained=None, verbose=0)


def test_confident_pixels_of_a_known_probability_map():
    p = np.array([[0.00, 0.10, 0.19, 0.21],
                  [0.45, 0.50, 0.55, 0.79],
                  [0.81, 0.90, 1.00, 0.35]], np.float32)
    expected = np.array([[0, 0, 0, 255],
                         [255, 255, 255, 255],
                         [1, 1, 1, 255]], np.uint8)
    np.testing.assert_array_equal(confident_labels(p, 0.5, 0.3), expected)
    # another threshold and margin move the band: confident from 0.3 down and 0.5 up
    np.testing.assert_array_equal(confident_labels(p, 0.4, 0.1),
                                  [[0, 0, 0, 0], [255, 1, 1, 1], [1, 1, 1, 255]])


def test_agreement_counts_only_pixels_both_label():
    new = np.array([1, 1, 0, 0, 255, 1], np.uint8)
    old = np.array([1, 0, 0, 255, 1, 255], np.uint8)
    a = label_agreement(new, old)
    # both label pixels 0-2: new particles {0, 1}, old {0}: dice 2*1/(2+1)
    assert a["dice"] == pytest.approx(2 / 3)
    assert a["confident"] == pytest.approx(5 / 6) and a["particles"] == pytest.approx(3 / 5)


def test_round_plan_shares_the_budget():
    assert plan_rounds(epochs=4).epochs == [2, 1, 1]
    assert plan_rounds(epochs=3).epochs == [2, 1]
    assert plan_rounds(epochs=1).rounds == 0
    assert plan_rounds(2, epochs=5).epochs == [3, 1, 1]
    timed = plan_rounds(training_s=200, step_s=1.0, round_extra_s=10)  # 50 s a student, 22 s needed
    assert timed.rounds == 2 and timed.shares == [0.5, 0.25, 0.25]
    assert plan_rounds(training_s=60, step_s=1.0, round_extra_s=10).rounds == 1  # 30 s, 22 s needed
    assert plan_rounds(training_s=40, step_s=1.0, round_extra_s=10).rounds == 0
    with pytest.raises(ValueError, match="self_training"):
        plan_rounds(-1)
    aug = student_augmentation(None)
    assert aug.dihedral and aug.p == 0.3 and aug.rotate_degrees == 0


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Six images without masks (and their true masks elsewhere)."""
    root = tmp_path_factory.mktemp("frames")
    source = make_dataset(root / "source", n_images=6, size=64, mode="bright-field", seed=11)
    (root / "frames" / "images").mkdir(parents=True)
    for image in (source / "images").iterdir():
        (root / "frames" / "images" / image.name).write_bytes(image.read_bytes())
    return root / "frames"


@pytest.mark.slow
def test_rounds_run_are_recorded_and_relabel_with_confident_pixels(frames, tmp_path, capsys):
    from tem_keras.training import fit

    run = fit(frames, dict(TINY), labels="auto", particles="dark", self_training="auto", epochs=4, steps_per_epoch=2,
              run_dir=tmp_path / "run", **{**FAST, "verbose": 1})
    record = json.loads((run.path / "selftrain.json").read_text())
    assert record["plan"]["rounds"] == 2 and record["plan"]["epochs"] == [2, 1, 1]
    assert [r["round"] for r in record["rounds"]] == [0, 1, 2]
    assert [r["epochs"] for r in record["rounds"]] == [2, 1, 1]
    first, *students = record["rounds"]
    assert first["agreement_dice"] is None and 0 < first["confident"] < 1  # the edges are ignored
    for r in students:
        assert 0 <= r["agreement_dice"] <= 1 and 0 <= r["confident"] <= 1
    assert record["kept_round"] == 2 and "last round" in record["kept_by"]  # no hand mask to judge
    assert sorted(p.name for p in (run.path / "rounds").iterdir()) == [f"round{i}.keras" for i in range(3)]
    history = pd.read_csv(run.path / "history.csv")
    assert history["round"].tolist() == [0, 0, 1, 2]
    # each student starts its own warm-up + cosine schedule (a carried-over step count would end
    # it at 0 before the first step)
    assert (history["learning_rate"] > 0).all()
    peak = run.config["training"]["learning_rate"]
    assert history.loc[history["round"] > 0, "learning_rate"].max() <= 0.3 * peak * (1 + 1e-6)
    assert run.config["self_training"]["rounds"] == 2
    out = capsys.readouterr().out
    assert "self-training: round 0 on the pseudo-labels, then 2 noisy-student round(s)" in out
    assert sum(line.startswith("round ") for line in out.splitlines()) == 3
    # the kept model is round 2's; its weights reproduce round 2's predictions
    import keras

    x = np.random.default_rng(0).normal(size=(1, 64, 64, 1)).astype(np.float32)
    kept = keras.saving.load_model(run.path / "rounds" / "round2.keras", compile=False)
    np.testing.assert_allclose(np.asarray(run.model(x)), np.asarray(kept(x)), atol=1e-5)


@pytest.mark.slow
def test_relabelling_records_the_teachers_confident_pixels(frames, tmp_path):
    """Round 1's record is the agreement of round 0's confident pixels with the edge-ignored
    pseudo-labels, recomputed here from the saved teacher and labels."""
    import keras

    from tem_keras.data.datasets import read_mask
    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.io import read_image
    from tem_keras.models.receptive_fields import downsampling_factor
    from tem_keras.training import fit
    from tem_keras.training.heldout import predict_whole
    from tem_keras.training.labels import ignore_edges

    run = fit(frames, dict(TINY), labels="auto", particles="dark", epochs=2, steps_per_epoch=2,
              self_training=1, run_dir=tmp_path / "run", **FAST)
    stems = run.split["train"]
    edge = run.config["data"]["ignored_edge_px"]
    previous = [ignore_edges(read_mask(run.path / "pseudo_labels" / f"{s}.png"), edge) for s in stems]
    teacher = keras.saving.load_model(run.path / "rounds" / "round0.keras", compile=False)
    factor = downsampling_factor(teacher)
    images = [Preprocessing()(read_image(frames / "images" / f"{s}.tif").data) for s in stems]
    new = [confident_labels(predict_whole(teacher, image, factor)[..., 1]) for image in images]
    sizes = np.array([m.size for m in new], float)
    rows = [label_agreement(n, p) for n, p in zip(new, previous)]
    record = json.loads((run.path / "selftrain.json").read_text())["rounds"][1]
    assert record["confident"] == pytest.approx(np.average([r["confident"] for r in rows], weights=sizes), abs=2e-3)
    assert record["agreement_dice"] == pytest.approx(np.average([r["dice"] for r in rows], weights=sizes), abs=2e-3)
    assert set(np.unique(np.concatenate([m.ravel() for m in new]))) <= {0, 1, IGNORE_LABEL}


def test_self_training_needs_pseudo_labels(tmp_path):
    from tem_keras.training import fit

    with pytest.raises(ValueError, match="labels='auto'"):
        fit(tmp_path, dict(TINY), self_training=2, run_dir=tmp_path / "run", **FAST)
    with pytest.raises(ValueError, match="self_training must be"):
        fit(tmp_path, dict(TINY), labels="auto", self_training="many", run_dir=tmp_path / "run", **FAST)


@pytest.mark.slow
def test_with_a_few_masks_the_hand_drawn_ones_choose_the_round(tmp_path):
    """Three masked images and five without: the rounds re-label only the five, the masked
    validation image scores every round and the best round is the run's model."""
    import keras

    from tem_keras.training import fit

    data = make_dataset(tmp_path / "data", n_images=8, size=64, mode="bright-field", seed=12)
    for p in sorted((data / "masks").iterdir())[3:]:
        p.unlink()
    run = fit(data, dict(TINY), labels="auto", particles="dark", self_training="auto", epochs=4, steps_per_epoch=2,
              run_dir=tmp_path / "run", **FAST)
    record = json.loads((run.path / "selftrain.json").read_text())
    dice = [r["val_dice"] for r in record["rounds"]]
    assert len(dice) == 3 and all(0 <= d <= 1 for d in dice)
    assert record["kept_by"].startswith("best validation dice") and record["kept_round"] == int(np.argmax(dice))
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 1)).astype(np.float32)
    kept = keras.saving.load_model(run.path / "rounds" / f"round{record['kept_round']}.keras", compile=False)
    np.testing.assert_allclose(np.asarray(run.model(x)), np.asarray(kept(x)), atol=1e-5)


def test_finished_rounds_are_those_recorded_with_their_weights(tmp_path):
    from tem_keras.training.selftrain import SelfTrainingPlan, finished_rounds

    plan = SelfTrainingPlan(2, epochs=[2, 1, 1])
    records = [{"round": i, "epochs": e} for i, e in enumerate(plan.epochs)]
    (tmp_path / "rounds").mkdir()
    for i in (0, 1):
        (tmp_path / "rounds" / f"round{i}.keras").write_bytes(b"weights")

    def stored(rounds, kept=None, stored_plan=plan):
        (tmp_path / "selftrain.json").write_text(json.dumps(
            {"plan": stored_plan.to_dict(), "rounds": rounds, "kept_round": kept, "kept_by": None}))
        return finished_rounds(tmp_path, plan)

    assert stored(records[:1]) == records[:1]
    assert stored(records[:2]) == records[:2]
    assert stored(records) == records[:2]                  # the last round always runs again
    (tmp_path / "rounds" / "round1.keras").unlink()
    assert stored(records[:2]) == records[:1]              # a record without its weights is not finished
    assert stored(records[:1], kept=0) == []               # a finished run is not resumed
    assert stored(records[:1], stored_plan=SelfTrainingPlan(1, epochs=[2, 2])) == []  # another plan
    (tmp_path / "selftrain.json").write_text('{"plan": {"rou')  # cut short by the kill
    assert finished_rounds(tmp_path, plan) == []


@pytest.mark.slow
def test_a_run_killed_in_a_student_round_resumes_after_the_last_finished_round(frames, tmp_path):
    import hashlib
    import subprocess
    import sys
    import time
    from pathlib import Path

    worker = Path(__file__).parent / "scripts" / "fit_worker.py"
    run_dir = tmp_path / "run"
    kwargs = json.dumps({"model": dict(TINY), "labels": "auto", "particles": "dark", "self_training": 1,
                         "epochs": 6, "steps_per_epoch": 2, **{**FAST, "verbose": 1}})
    proc = subprocess.Popen([sys.executable, str(worker), str(frames), str(run_dir), kwargs],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run_dir / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        lines = history.read_text().splitlines() if history.is_file() else []
        if len(lines) >= 5:  # header, round 0's 3 epochs and round 1's first
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    killed = pd.read_csv(history)
    assert 1 <= (killed["round"] == 1).sum() < 3, "the process was not stopped inside round 1"
    record = json.loads((run_dir / "selftrain.json").read_text())
    assert record["kept_round"] is None and [r["round"] for r in record["rounds"]] == [0]
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()
    teacher = hashlib.sha256((run_dir / "rounds" / "round0.keras").read_bytes()).hexdigest()

    out = subprocess.run([sys.executable, str(worker), str(frames), str(run_dir), kwargs],
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming after round 0" in out.stdout
    assert history.is_file() and pd.read_csv(history)["round"].tolist() == [0, 0, 0, 1, 1, 1]
    final = json.loads((run_dir / "selftrain.json").read_text())
    assert final["rounds"][0] == record["rounds"][0] and [r["round"] for r in final["rounds"]] == [0, 1]
    assert final["kept_round"] == 1 and (run_dir / "metrics.json").is_file()
    assert hashlib.sha256((run_dir / "rounds" / "round0.keras").read_bytes()).hexdigest() == teacher
