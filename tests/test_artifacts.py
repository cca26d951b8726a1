"""Model bundles and the one loader (:mod:`tem_keras.artifacts`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from tem_keras.artifacts import (  # noqa: E402
    ModelBundle,
    Run,
    load,
    read_threshold,
    write_threshold,
)
from tem_keras.data.preprocess import Preprocessing  # noqa: E402
from tem_keras.errors import TEMInputError  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    from tem_keras.models import build_model

    return build_model("unet", depth=2, base_filters=2)


def test_thresholds_round_trip(tmp_path):
    assert read_threshold(tmp_path) is None
    path = write_threshold(tmp_path, 0.42, metric="f1", split="val")
    assert path.name == "thresholds.json" and read_threshold(tmp_path) == pytest.approx(0.42)
    assert json.loads(path.read_text()) == {"threshold": 0.42, "metric": "f1", "split": "val"}
    path.write_text(json.dumps({"threshold": "otsu"}))  # not silently ignored (issue 24)
    with pytest.raises(TEMInputError, match='thresholds.json: "threshold" must be a number in \\[0, 1\\]'):
        read_threshold(tmp_path)
    path.write_text("{not json")
    with pytest.raises(TEMInputError, match="thresholds"):
        read_threshold(tmp_path)


def test_load_gives_bundles(tiny, tmp_path):
    bundle = load(tiny)
    assert isinstance(bundle, ModelBundle) and bundle.model is tiny
    assert bundle.preprocessing is None and bundle.threshold is None and bundle.run is None
    assert load(bundle) is bundle
    run = Run(tmp_path / "run", tiny, {"preprocessing": Preprocessing(remove_outliers=False).to_dict(),
                                       "classes": {"0": "background", "1": "particle"},
                                       "pixel_size_nm": 0.5})
    (tmp_path / "run").mkdir()
    assert isinstance(run, ModelBundle) and load(run) is run and run.run is run
    assert run.preprocessing == Preprocessing(remove_outliers=False)
    assert run.classes["1"] == "particle" and run.pixel_size_nm == 0.5 and run.threshold is None
    write_threshold(run.path, 0.3)
    assert run.threshold == pytest.approx(0.3)
    with pytest.raises(TypeError, match="keras.Model"):
        load(42)


def test_load_files_and_folders(tiny, tmp_path):
    tiny.save(tmp_path / "tiny.keras")
    from_file = load(tmp_path / "tiny.keras")
    assert isinstance(from_file, ModelBundle) and from_file.preprocessing is None
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(from_file.model(x)), np.asarray(tiny(x)), atol=1e-6)
    folder = tmp_path / "only_keras"
    folder.mkdir()
    tiny.save(folder / "model.keras")
    assert isinstance(load(folder), ModelBundle)
    (folder / "README.md").write_text("card")
    with pytest.raises(TEMInputError, match="partial export"):
        load(folder)
    with pytest.raises(TEMInputError, match="no such model"):
        load(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TEMInputError, match=".keras file"):
        load(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TEMInputError, match="neither"):
        load(tmp_path / "empty")
