"""The README's main job, ``tem-keras demo``: end to end as the README's first command runs it
after the base install (slow; ``tests/test_readme.py`` checks that command), and its report on a
tiny configuration (fast)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from tem_keras.cli import build_parser, main
from tem_keras.cli.demo import DEMO_MINUTES, DEMO_TIME_LIMIT_S, DEMO_TIME_TEXT, run_demo
from tem_keras.cli.demo_report import HEADLINE, PER_IMAGE


class _Page(HTMLParser):
    """The pictures, links and ``data-key`` cells of a page, and the text of each table row."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.keyed, self.rows = [], [], {}, []
        self._key, self._row = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._key = attrs.get("data-key"), attrs.get("data-value")
            self._row.append("")

    def handle_data(self, data):
        if self._row is not None and self._key is not None:
            self._row[-1] += data
            if self._key[0]:
                self.keyed[self._key[0]] = (self._key[1], self._row[-1])

    def handle_endtag(self, tag):
        if tag == "td":
            self._key = None
        elif tag == "tr":
            if self._row:
                self.rows.append(self._row)
            self._row = None


def check_report(report):
    """What the demo's report must hold: index.html showing every picture and linking every
    table, its numbers those of summary.json and scores_per_image.csv, both particle tables with
    the same columns."""
    summary = json.loads((report / "summary.json").read_text())
    page = _Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    pictures = sorted(p.name for p in report.glob("*.png"))
    assert sorted(set(page.images)) == pictures  # every picture shown, none missing
    assert len([p for p in pictures if p.startswith("overlay_")]) == summary["test_images"]
    for name in ("particles.csv", "particles_true.csv", "scores_per_image.csv", "summary.json"):
        assert name in page.links
    assert all((report / link).exists() for link in page.links)
    # the headline: exactly summary.json's numbers, shown in their format
    assert set(page.keyed) == {key for key, _, _ in HEADLINE}
    for key, _, fmt in HEADLINE:
        value, text = page.keyed[key]
        assert json.loads(value) == summary[key]
        assert text == format(summary[key], fmt)
    dice = f"{summary['dice_mean']:.3f} ± {summary['dice_std']:.3f}"
    assert dice in re.sub(r"<[^>]+>", "", (report / "index.html").read_text(encoding="utf-8"))
    # the per-image table: the rows of scores_per_image.csv
    scores = pd.read_csv(report / "scores_per_image.csv")
    assert list(scores.columns) == [c for c, _, _ in PER_IMAGE]
    shown = [r for r in page.rows if r and r[0] in set(scores["image"])]
    assert [r[0] for r in shown] == list(scores["image"])
    for row, (_, expected) in zip(shown, scores.iterrows()):
        assert row == [format(expected[c], f) if f else str(expected[c]) for c, _, f in PER_IMAGE]
    assert summary["dice_mean"] == pytest.approx(scores["dice"].mean(), rel=1e-12)
    assert summary["dice_std"] == pytest.approx(scores["dice"].std(ddof=0), rel=1e-9, abs=1e-12)
    # found and true particles: the same columns, the counts of the summary and of each image
    found, true = pd.read_csv(report / "particles.csv"), pd.read_csv(report / "particles_true.csv")
    assert list(found.columns) == list(true.columns)
    assert (len(found), len(true)) == (summary["particles_found"], summary["particles_true"])
    assert scores["particles_true"].tolist() == [int((true["image"] == s).sum()) for s in scores["image"]]
    assert summary["mean_diameter_nm_true"] == pytest.approx(true["equivalent_diameter_nm"].mean(), rel=1e-12)
    for table in (found, true):
        assert table["circularity"].max() <= 1
    return summary


@pytest.mark.slow
def test_demo_report_on_a_tiny_configuration(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, n_images=4, size=96, epochs=1, export_formats=("keras",), fit_options=dict(
        model={"name": "unet", "depth": 2, "base_filters": 4}, steps_per_epoch=2, batch_size=2, augment=False, mixed_precision="float32"))
    printed = capsys.readouterr().out
    assert "pre-trained weights): 1 epoch\n" in printed
    assert f"report: {(report / 'index.html').resolve()}" in printed
    summary = check_report(report)
    assert summary["particles_true"] > 0
    assert (report / "model_card.md").is_file()


def test_demo_states_one_time():
    """--help and the console say the time of DEMO_MINUTES and the budget fit gets."""
    assert DEMO_TIME_LIMIT_S < DEMO_MINUTES * 60
    assert f"{DEMO_TIME_LIMIT_S} s" in DEMO_TIME_TEXT and f"{DEMO_MINUTES} minutes" in DEMO_TIME_TEXT
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    demo = sub.choices["demo"]
    assert DEMO_TIME_TEXT in " ".join(demo.description.split())
    assert any(a.default is None and f"default {DEMO_TIME_LIMIT_S} s" in (a.help or "")
               for a in demo._actions if a.dest == "time_limit")


def test_scale_bar_is_a_round_length_in_nm():
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from tem_keras.io.figures import add_scale_bar, new_figure, scale_bar_length

    assert [scale_bar_length(w) for w in (128.0, 430.08, 3.0, 10.0, 40.0, 1000.0)] == [20, 100, 0.5, 2, 10, 200]
    fig, ax = new_figure()
    ax.imshow(np.zeros((256, 256)))
    assert add_scale_bar(ax, 0.5, 256) == 20  # 128 nm wide: a 20 nm bar, 40 px long
    bar = next(a for a in ax.artists if isinstance(a, AnchoredSizeBar))
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(40)
    assert bar.txt_label.get_text() == "20 nm"
    with pytest.raises(ValueError, match="positive"):
        scale_bar_length(0.0)


@pytest.mark.slow
def test_demo_writes_report_and_finds_particles(tmp_path, capsys):
    out = tmp_path / "demo"
    # the README's command with a shorter budget (the defaults train DEMO_TIME_LIMIT_S, the time
    # that test_demo_states_one_time checks in --help)
    assert main(["demo", str(out), "--time-limit", "25"]) == 0
    printed = capsys.readouterr().out
    report = out / "report"
    assert "pre-trained weights): training 25 s\n" in printed
    assert f"report: {(report / 'index.html').resolve()}" in printed
    summary = check_report(report)
    assert summary["test_images"] >= 2
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
    _check_the_export_for_colleagues(out)
    # a second demo into the same folder is refused rather than overwriting it
    assert main(["demo", str(out), "--epochs", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


def _check_the_export_for_colleagues(out):
    """The demo's export runs without TensorFlow (model.onnx + predict.py), its bioimage.io package
    is validated, and its model.keras holds no optimizer state (smaller than the checkpoint)."""
    import zipfile

    import h5py

    export = out / "export"
    assert (export / "model.onnx").is_file() and (export / "predict.py").is_file()
    meta = json.loads((export / "tem_keras.json").read_text())
    assert meta["skipped"] == {}
    assert meta["checks"]["bioimageio_validation"].startswith(("valid-format", "passed"))
    with zipfile.ZipFile(export / "model.keras") as archive, archive.open("model.weights.h5") as f:
        with h5py.File(f, "r") as h5:
            assert "optimizer" not in h5
    assert (export / "model.keras").stat().st_size < 0.6 * (out / "run" / "best.keras").stat().st_size
