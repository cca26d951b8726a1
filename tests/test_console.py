"""What the ``tem-keras`` command prints besides its results: warnings as plain notes, said once,
and the oneDNN choice only with ``--verbose``."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from tem_keras.cli import choose_cpu_kernels, main
from tem_keras.io import write_image, write_mask


def _dataset_with_antialiased_mask(root):
    """One image whose 0/255 mask has a grey ring (tem_keras.data.datasets refuses it)."""
    yy, xx = np.mgrid[:48, :48]
    disk = (yy - 24) ** 2 + (xx - 24) ** 2
    mask = np.where(disk < 100, 255, 0).astype(np.uint8)
    mask[(disk >= 100) & (disk < 121)] = 100
    write_image(root / "images" / "a.tif", np.random.default_rng(0).random((48, 48), np.float32))
    write_mask(root / "masks" / "a.png", mask)
    return root


def test_a_warning_is_one_plain_note_line_said_once_per_process(capsys):
    from tem_keras.cli.console import warnings_as_notes

    message = "a.png: something to note\n  on two lines"
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings_as_notes()
            warnings.warn(message, UserWarning)
    assert capsys.readouterr().err.splitlines() == ["tem-keras: note: a.png: something to note on two lines"]
    # outside, Python shows warnings as before
    with pytest.warns(UserWarning, match="something to note"):
        warnings.warn(message, UserWarning)


def test_check_reports_a_mask_with_grey_edges_as_not_ready(tmp_path, capsys):
    data = _dataset_with_antialiased_mask(tmp_path / "data")
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(data)])
    assert exit_info.value.code == 2
    out = capsys.readouterr().out
    assert re.search(r"problem: \S*a\.png: mask holds the values 0, 100, 255: grey levels", out), out
    assert "0 of 1 pairs are ready" in out


@pytest.mark.parametrize("verbose", [False, True])
def test_the_onednn_choice_is_said_only_with_verbose(monkeypatch, capsys, verbose):
    from tem_keras import hardware

    monkeypatch.setattr(hardware, "onednn_choice_open", lambda: True)
    monkeypatch.setattr(hardware, "prefer_onednn", lambda size: True)
    choose_cpu_kernels(argparse.Namespace(command="demo"), verbose)
    said = "oneDNN kernels on" in capsys.readouterr().err
    assert said == verbose


def test_the_demo_hides_only_fits_warning_about_its_few_validation_images(tmp_path):
    """The filter of the demo matches the warning ``fit`` gives for its 2 validation images."""
    from tem_keras.data.datasets import discover
    from tem_keras.data.synthetic import make_dataset
    from tem_keras.cli.demo import SMALL_VALIDATION_WARNING
    from tem_keras.training.config import TrainingConfig
    from tem_keras.training.inputs import split_images

    data = make_dataset(tmp_path / "data", n_images=24, size=32, progress=False)  # the demo's count
    with pytest.warns(UserWarning, match=SMALL_VALIDATION_WARNING):
        split = split_images(discover(data), TrainingConfig(), data)
    assert len(split["val"]) == 2


def _earlier_output(folder, kind, *names):
    """A folder as an earlier ``kind`` output leaves it: a manifest listing ``names``, written."""
    from tem_keras.io.outputs import OutputFolder

    OutputFolder(folder, kind).prepare(overwrite=False, entries=names)
    for name in names:
        (folder / name).write_text("{}")
    return folder


def test_paths_and_refused_overwrites_are_answered_before_tensorflow_starts(tmp_path):
    """demo, predict, fit, evaluate and export check their arguments, inputs and outputs without
    TensorFlow (a fresh process: it is never imported); `models` prints its cached table."""
    from tem_keras.data.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", n_images=3, size=32, progress=False)
    run = _earlier_output(tmp_path / "run", "run", "config.json", "best.keras", "metrics.json")
    demo = _earlier_output(tmp_path / "demo", "demo", "report")
    exported = _earlier_output(tmp_path / "export", "export", "tem_keras.json")
    cases = {
        "predict_missing_input": ["predict", str(run), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o")],
        "predict_missing_model": ["predict", str(tmp_path / "nothing"), str(data / "images"), "-o", str(tmp_path / "o")],
        "demo_again": ["demo", str(demo)],
        "fit_no_data": ["fit", str(tmp_path / "no_data")],
        "fit_finished_run": ["fit", str(data), "--run-dir", str(run)],
        "evaluate_no_data": ["evaluate", str(run), str(tmp_path / "no_data")],
        "export_again": ["export", str(run), str(exported)],
        "models": ["models"],
    }
    script = textwrap.dedent("""
        import json, sys
        from tem_keras.cli import main
        for name, argv in json.loads(sys.argv[1]).items():
            print(f"--- {name}", file=sys.stderr)
            print("CODE", name, main(argv))
        print("TENSORFLOW", "tensorflow" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True,
                          text=True, timeout=120)
    codes = dict(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("CODE "))
    assert codes == {name: "0" if name == "models" else "2" for name in cases}, done.stderr
    assert "TENSORFLOW False" in done.stdout, done.stderr
    assert "| 516,386 | 96 | 8 |" in done.stdout  # fit's planned 3-block residual UNet
    said = dict(part.split("\n", 1) for part in done.stderr.split("--- ")[1:])
    assert said["predict_missing_input"].strip().endswith("missing.tif: no such file")
    assert "no such model file" in said["predict_missing_model"]
    assert "no such dataset folder" in said["fit_no_data"] and "no such dataset folder" in said["evaluate_no_data"]
    for name in ("demo_again", "fit_finished_run", "export_again"):
        assert "pass --overwrite to replace it" in said[name], said[name]
        assert "overwrite=True" not in said[name]


def test_a_library_message_says_overwrite_as_the_command_line_does():
    from tem_keras.cli.console import command_line_spelling

    for text in ("pass --overwrite (overwrite=True) to replace it", "pass overwrite=True (--overwrite) to replace it",
                 "pass overwrite=True to replace it"):
        assert command_line_spelling(text) == "pass --overwrite to replace it"


def test_check_prepare_touches_nothing(tmp_path):
    from tem_keras.io.outputs import OutputExistsError, OutputFolder

    demo = _earlier_output(tmp_path / "demo", "demo", "report")
    before = sorted(p.name for p in demo.iterdir())
    with pytest.raises(OutputExistsError, match="already exists"):
        OutputFolder(demo, "demo").check_prepare(overwrite=False)
    assert OutputFolder(demo, "demo").check_prepare(overwrite=True) is True  # would be replaced
    assert not OutputFolder(tmp_path / "new", "demo").check_prepare(overwrite=False)
    assert sorted(p.name for p in demo.iterdir()) == before and not (tmp_path / "new").exists()
