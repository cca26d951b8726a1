"""The README's main job, ``tem-keras demo``, end to end on a small configuration."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tem_keras.cli import main


@pytest.mark.slow
def test_demo_writes_report_and_finds_particles(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out)]) == 0  # the defaults, as the README runs it
    printed = capsys.readouterr().out
    report = out / "report"
    assert f"report: {report.resolve()}" in printed
    summary = json.loads((report / "summary.json").read_text())
    assert summary["test_images"] == len(list(report.glob("overlay_*.png"))) >= 2
    assert summary["dice_mean"] > 0.8
    # the measured sizes agree with the exact masks of the generator
    assert summary["mean_diameter_nm_found"] == pytest.approx(summary["mean_diameter_nm_true"], rel=0.15)
    particles = pd.read_csv(report / "particles.csv")
    assert len(particles) == summary["particles_found"] > 0
    assert {"equivalent_diameter_nm", "area_nm2", "image"} <= set(particles.columns)
    for name in ("size_distribution.png", "scores_per_image.csv", "training_history.png", "model_card.md"):
        assert (report / name).is_file()
    assert (out / "run" / "best.keras").is_file()
    assert (out / "export" / "saved_model" / "saved_model.pb").is_file()
    assert summary["export_dir"] == str(out / "export")
    # a second demo into the same folder is refused rather than overwriting it
    assert main(["demo", str(out), "--epochs", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
