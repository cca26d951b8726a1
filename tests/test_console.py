"""What the ``tem-keras`` command prints besides its results: warnings as plain notes, said once,
and the oneDNN choice only with ``--verbose``."""

from __future__ import annotations

import argparse
import re
import warnings

import numpy as np
import pytest

from tem_keras.cli import choose_cpu_kernels, main
from tem_keras.io import write_image, write_mask


def _dataset_with_antialiased_mask(root):
    """One image whose 0/255 mask has a grey ring: reading it warns (tem_keras.data.datasets)."""
    yy, xx = np.mgrid[:48, :48]
    disk = (yy - 24) ** 2 + (xx - 24) ** 2
    mask = np.where(disk < 100, 255, 0).astype(np.uint8)
    mask[(disk >= 100) & (disk < 121)] = 100
    write_image(root / "images" / "a.tif", np.random.default_rng(0).random((48, 48), np.float32))
    write_mask(root / "masks" / "a.png", mask)
    return root


def test_a_warning_is_one_plain_note_line_said_once_per_process(tmp_path, capsys):
    data = _dataset_with_antialiased_mask(tmp_path / "data")
    assert main(["check", str(data)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert all(line.startswith("tem-keras: note: ") for line in err), err  # and the pixel size note
    said = [line for line in err if "grey levels" in line]
    assert len(said) == 1, err  # the mask is read twice (discover, load_pair): said once
    assert re.fullmatch(r"tem-keras: note: \S*a\.png: binary mask with 3 grey levels \(anti-aliased "
                        r"or lossy\); read as particle where ≥ 128", said[0]), said[0]
    assert main(["check", str(data)]) == 0
    assert "grey levels" not in capsys.readouterr().err  # not said again in this process
    # outside the command, Python shows warnings as before
    with pytest.warns(UserWarning, match="grey levels"):
        warnings.warn(f"{data}/masks/a.png: binary mask with 3 grey levels", UserWarning)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_onednn_choice_is_said_only_with_verbose(monkeypatch, capsys, verbose):
    from tem_keras import distribute

    monkeypatch.setattr(distribute, "onednn_choice_open", lambda: True)
    monkeypatch.setattr(distribute, "prefer_onednn", lambda size: True)
    choose_cpu_kernels(argparse.Namespace(command="demo"), verbose)
    said = "oneDNN kernels on" in capsys.readouterr().err
    assert said == verbose


def test_the_demo_hides_only_fits_warning_about_its_few_validation_images(tmp_path):
    """The filter of the demo matches the warning ``fit`` gives for its 2 validation images."""
    from tem_keras.data.datasets import discover
    from tem_keras.data.synthetic import make_dataset
    from tem_keras.demo import SMALL_VALIDATION_WARNING
    from tem_keras.training.config import TrainingConfig
    from tem_keras.training.inputs import split_images

    data = make_dataset(tmp_path / "data", n_images=24, size=32, progress=False)  # the demo's count
    with pytest.warns(UserWarning, match=SMALL_VALIDATION_WARNING):
        split = split_images(discover(data), TrainingConfig(), data)
    assert len(split["val"]) == 2
