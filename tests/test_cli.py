"""The ``tem-keras`` command end to end, in-process through :func:`tem_keras.cli.main`.

A user's path through the commands: ``synth`` a data set, ``info`` on a file, ``check`` the pairs,
``fit`` a tiny model, ``predict`` with particle measurements, ``evaluate``, ``measure``,
``export`` and ``models``; each checked by its return code and the files it writes. Prediction,
evaluation and export use the session's tiny trained run (tests/conftest.py); the ``fit`` test
trains its own one-epoch run. One test runs the installed ``tem-keras`` console script.

Other command-line tests live beside the feature they test (test_inference.py, test_export.py,
test_explain.py, test_bad_inputs.py, test_demo.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tem_keras.cli import main

TINY_FIT = ["--model", "unet", "--depth", "2", "--base-filters", "2", "--epochs", "1",
            "--steps-per-epoch", "2", "--patch-size", "32", "--batch-size", "2",
            "--mixed-precision", "float32", "--no-augment", "--quiet"]


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """``tem-keras synth``: four 48² micrographs at 0.5 nm/px (read-only for the tests)."""
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["synth", str(out), "--n-images", "4", "--size", "48", "--pixel-size-nm", "0.5",
                 "--seed", "3"]) == 0
    return out


def test_synth_writes_a_dataset_and_refuses_to_overwrite(synthesized, capsys):
    images = sorted(p.name for p in (synthesized / "images").iterdir())
    masks = sorted(p.name for p in (synthesized / "masks").iterdir())
    assert images == [f"synthetic_{i:03d}.tif" for i in range(4)]
    assert masks == [f"synthetic_{i:03d}.png" for i in range(4)]
    info = json.loads((synthesized / "dataset.json").read_text())
    assert info["pixel_size_nm"] == pytest.approx(0.5)
    before = (synthesized / "images" / "synthetic_000.tif").read_bytes()
    capsys.readouterr()
    assert main(["synth", str(synthesized), "--n-images", "2", "--size", "32"]) == 2
    assert str(synthesized) in capsys.readouterr().err
    assert (synthesized / "images" / "synthetic_000.tif").read_bytes() == before


def test_info_reports_size_and_pixel_size(synthesized, capsys):
    path = synthesized / "images" / "synthetic_001.tif"
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"{path}: 1 frame(s) of 48×48 px, 0.5 nm/px" in printed
    assert main(["info", str(synthesized / "images" / "nothing.tif")]) == 2
    assert "nothing.tif" in capsys.readouterr().err


def test_check_counts_ready_pairs_and_fails_on_a_bad_mask(synthesized, tmp_path, capsys):
    capsys.readouterr()
    assert main(["check", str(synthesized)]) == 0
    printed = capsys.readouterr().out
    assert "4 of 4 pairs are ready for training" in printed
    # a mask of the wrong size is a problem: listed, and the exit status is 2
    from tem_keras.io import write_mask

    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(synthesized, broken)
    (broken / "masks" / "synthetic_002.png").unlink()
    write_mask(broken / "masks" / "synthetic_002.png", np.zeros((20, 30), np.uint8))
    (broken / "images" / "extra.tif").write_bytes((broken / "images" / "synthetic_000.tif").read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(broken)])
    assert exit_info.value.code == 2
    printed = capsys.readouterr().out
    assert "3 of 4 pairs are ready for training" in printed
    assert "problem:" in printed and "synthetic_002" in printed
    assert "image without mask:" in printed and "extra.tif" in printed


@pytest.mark.slow
def test_fit_writes_a_run_folder(synthesized, tmp_path, capsys):
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(["fit", str(synthesized), *TINY_FIT, "--split", "0.5", "0.25", "0.25",
                 "--run-dir", str(run_dir)]) == 0
    assert f"run folder: {run_dir}" in capsys.readouterr().out
    for name in ("config.json", "split.json", "history.csv", "best.keras", "last.keras",
                 "thresholds.json", "metrics.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["name"] == "unet" and config["model"]["base_filters"] == 2
    assert config["pixel_size_nm"] == pytest.approx(0.5)
    assert len(pd.read_csv(run_dir / "history.csv")) == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "dice" in metrics["per_image"] and metrics["n_images"] == 1
    split = json.loads((run_dir / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    # a finished run is not replaced without --overwrite
    history = (run_dir / "history.csv").read_bytes()
    assert main(["fit", str(synthesized), *TINY_FIT, "--run-dir", str(run_dir)]) == 2
    assert "finished run" in capsys.readouterr().err
    assert (run_dir / "history.csv").read_bytes() == history


def test_fit_refuses_unknown_model_options(synthesized, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(synthesized), "--model", "unet", "--no-such-option", "3",
              "--run-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_predict_with_particles(tiny_run, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "pred"
    images = sorted((tiny_dataset / "images").iterdir())
    capsys.readouterr()
    assert main(["predict", str(tiny_run.path), str(tiny_dataset / "images"), "-o", str(out),
                 "--particles", "--overlay", "--min-area", "3", "--quiet"]) == 0
    assert f"wrote {len(images)} mask(s) to {out}" in capsys.readouterr().out
    for image in images:
        assert (out / f"{image.stem}_mask.png").is_file()
        assert (out / f"{image.stem}_overlay.png").is_file()
    table = pd.read_csv(out / "particles.csv")
    from tem_keras.analysis.particles import MEASUREMENT_COLUMNS, SOURCE_COLUMNS

    # one column order for particle tables; single images have an empty frame
    assert list(table.columns) == [*SOURCE_COLUMNS, *MEASUREMENT_COLUMNS, "mean_intensity"]
    assert len(table) and table["frame"].isna().all()
    assert ",," in (out / "particles.csv").read_text().splitlines()[1]
    assert set(table["image"]) <= {p.stem for p in images}
    # the masks are those of the Python API, with the run's threshold
    from tem_keras import predict
    from tem_keras.io import read_image

    expected = predict(tiny_run, images[0])
    np.testing.assert_array_equal(read_image(out / f"{images[0].stem}_mask.png").data > 0, expected.mask > 0)
    # nothing is overwritten without being asked
    assert main(["predict", str(tiny_run.path), str(images[0]), "-o", str(out), "--particles", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_writes_tables_and_saves_the_threshold(tiny_run, tiny_dataset, copy_of, tmp_path, capsys):
    run_dir = copy_of(tiny_run.path, "run")  # --save-threshold writes into the run folder
    out = tmp_path / "eval"
    capsys.readouterr()
    before = (run_dir / "thresholds.json").read_bytes()
    for tuned_on_test in (["--split", "test"], []):  # the test images, alone or among all images
        assert main(["evaluate", str(run_dir), str(tiny_dataset), *tuned_on_test, "-o", str(out),
                     "--save-threshold", "--quiet"]) == 2
        assert "test image" in capsys.readouterr().err and not out.exists()
    assert (run_dir / "thresholds.json").read_bytes() == before
    assert main(["evaluate", str(run_dir), str(tiny_dataset), "--split", "test", "-o", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "pixels of all images pooled" in printed and "best threshold for f1" in printed
    per_image = pd.read_csv(out / "per_image.csv")
    assert sorted(per_image["image"]) == sorted(tiny_run.split["test"])
    assert per_image[["dice", "precision", "recall"]].apply(lambda c: c.between(0, 1)).all().all()
    overall = json.loads((out / "overall.json").read_text())
    assert overall["n_images"] == len(tiny_run.split["test"])
    # the per-image headline first: mean ± std (ddof=0) of the per-image dice
    dice = per_image["dice"]
    assert overall["per_image"]["dice"] == pytest.approx({"mean": dice.mean(), "std": dice.std(ddof=0)})
    assert printed.splitlines()[0] == (f"dice {dice.mean():.3f} ± {dice.std(ddof=0):.3f} per image over "
                                       f"{len(dice)} image(s), threshold {overall['threshold']:.2f}")
    assert (out / "threshold_curve.png").stat().st_size > 1000
    # tables are not overwritten without being asked
    assert main(["evaluate", str(run_dir), str(tiny_dataset), "-o", str(out), "--quiet"]) == 2
    # a threshold tuned on the validation images is saved for predict
    assert main(["evaluate", str(run_dir), str(tiny_dataset), "--split", "val", "--save-threshold",
                 "--quiet"]) == 0
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert saved["metric"] == "f1" and saved["split"] == "val" and 0 <= saved["threshold"] <= 1


def test_measure_masks_in_nm(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "sizes.csv"
    capsys.readouterr()
    assert main(["measure", str(tiny_dataset / "masks"), "--pixel-size-nm", "0.5", "-o", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) > 0 and f"{len(table)} particles in 6 mask(s)" in capsys.readouterr().out
    assert table["equivalent_diameter_nm"].notna().all()
    np.testing.assert_allclose(table["area_nm2"], table["area_px"] * 0.25, rtol=1e-6)
    assert set(table["mask"]) <= {p.name for p in (tiny_dataset / "masks").iterdir()}
    assert main(["measure", str(tiny_dataset / "masks"), "-o", str(out)]) == 2  # exists
    assert main(["measure", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.csv")]) == 2


def test_export_then_predict_from_the_export(tiny_run, tiny_dataset, tmp_path, capsys):
    """``.keras`` only here (test_export.py exports every format): the threshold travels with it."""
    import tem_keras
    from tem_keras.io import read_image

    out = tmp_path / "export"
    assert main(["export", str(tiny_run.path), str(out), "--formats", "keras", "--threshold", "0.4",
                 "--quiet"]) == 0
    for name in ("model.keras", "tem_keras.json", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "saved_model").exists()
    meta = json.loads((out / "tem_keras.json").read_text())
    assert meta["threshold"] == pytest.approx(0.4)
    assert meta["preprocessing"] == tiny_run.config["preprocessing"]
    assert tem_keras.load(out).threshold == pytest.approx(0.4)
    masks = tmp_path / "masks"
    image = sorted((tiny_dataset / "images").iterdir())[0]
    assert main(["predict", str(out), str(image), "-o", str(masks), "--quiet"]) == 0
    expected = tem_keras.predict(tiny_run, image, threshold=0.4).mask
    np.testing.assert_array_equal(read_image(masks / f"{image.stem}_mask.png").data > 0, expected > 0)
    capsys.readouterr()
    assert main(["export", str(tiny_run.path), str(out), "--quiet"]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err


def test_models_lists_the_zoo(capsys):
    """From the numbers cached for this version (tests/test_models.py checks them against the
    builders)."""
    from tem_keras.models.description import TABLE_MODELS

    assert main(["models", "--pixel-size-nm", "0.5"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| `")]
    assert len(rows) == len(TABLE_MODELS)
    assert "RF (nm)" in printed
    for name in ("unet_horwath_512", "residual_unet_sytwu", "fcn8s(", "shallow_cnn_wide", "sm("):
        assert any(f"`{name}" in row for row in rows), name
    sytwu = next(row for row in rows if "`residual_unet_sytwu`" in row)
    assert "| 120 | 60.00 |" in sytwu  # Sytwu et al.: 120 px receptive field, 0.5 nm/px


def test_models_into_a_closed_pipe_ends_quietly():
    """``tem-keras models | head -1``: the reader closed the pipe; no error, no traceback, and
    the models table still answers without TensorFlow."""
    code = "import sys; from tem_keras.cli import main; sys.exit(main(['models']))"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child writes: its print meets a closed pipe
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, stderr
    assert stderr == ""


def test_console_script_runs(synthesized):
    """The installed ``tem-keras`` entry point (``pip install -e .``) runs this tem_keras."""
    script = Path(sys.executable).parent / ("tem-keras.exe" if os.name == "nt" else "tem-keras")
    if not script.is_file():
        pytest.skip("the tem-keras console script is not installed beside this interpreter")
    import tem_keras

    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"tem_keras {tem_keras.__version__}", done.stderr
    path = synthesized / "images" / "synthetic_000.tif"
    done = subprocess.run([str(script), "info", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "48×48 px, 0.5 nm/px" in done.stdout
    done = subprocess.run([str(script), "info", str(path.with_name("missing.tif"))], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "missing.tif" in done.stderr and "Traceback" not in done.stderr
