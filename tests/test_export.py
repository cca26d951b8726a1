"""Export folders: SavedModel with preprocessing inside, .keras, ONNX, bioimage.io, model card, load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tem_keras.errors import TEMInputError

pytest.importorskip("tensorflow")

try:
    import onnxruntime  # noqa: F401
    import tf2onnx  # noqa: F401

    HAVE_ONNX = True
except Exception:  # noqa: BLE001
    HAVE_ONNX = False


@pytest.fixture(scope="module")
def run(tiny_run):
    """The session's tiny trained run (tests/conftest.py)."""
    return tiny_run


@pytest.fixture(scope="module")
def exported(tiny_export):
    """The session's export of it, in every format available here."""
    return tiny_export


def _image(h, w, seed=1):
    from tem_keras.data.synthetic import make_image

    image = make_image(max(h, w), seed=seed).image[:h, :w].astype(np.float32)
    image[5, 7] += 50 * image.std()  # an X-ray hit for the outlier removal
    return np.ascontiguousarray(image)


def _in_memory(run, image):
    """Probabilities of the in-memory model with the NumPy preprocessing and padding."""
    from tem_keras.inference import pad_to_multiple
    from tem_keras.models import downsampling_factor

    padded, (h, w) = pad_to_multiple(run.preprocessing(image), downsampling_factor(run.model))
    return np.asarray(run.model(padded[None, ..., None], training=False))[0, :h, :w]


# ---------------------------------------------------------------------------------------------
# The in-graph labels are the NumPy labels (the preprocessing: tests/test_preprocess_tf.py)
# ---------------------------------------------------------------------------------------------

def test_graph_labels_equal_labels_from_probabilities():
    import tensorflow as tf

    from tem_keras.inference import labels_from_probabilities
    from tem_keras.inference.masks import labels_from_probabilities_tf

    rng = np.random.default_rng(0)
    for c in (2, 4):
        p = rng.dirichlet(np.ones(c), size=(9, 11)).astype(np.float32)
        for threshold in (None, 0.3, 0.7):
            expected, _ = labels_from_probabilities(p, threshold)
            assert np.array_equal(labels_from_probabilities_tf(tf.constant(p), threshold).numpy(), expected)


# ---------------------------------------------------------------------------------------------
# The export folder, and its use without tem_keras
# ---------------------------------------------------------------------------------------------

def test_export_folder_contents(exported, run):
    from tem_keras.export import predict_script

    for name in ("saved_model/saved_model.pb", "model.keras", "tem_keras.json", "README.md",
                 "bioimageio/rdf.yaml"):
        assert (exported / name).exists(), name
    meta = json.loads((exported / "tem_keras.json").read_text())
    assert meta["classes"] == {"0": "background", "1": "particle"}
    assert meta["pixel_size_nm"] == run.config["pixel_size_nm"]
    assert meta["preprocessing"] == run.config["preprocessing"]
    assert meta["threshold"] == 0.5 and meta["downsampling"] == 4
    assert meta["receptive_field_px"] > 0 and meta["metrics"] == run.metrics
    assert meta["versions"]["tensorflow"]
    assert meta["checks"]["saved_model_max_abs_difference"] <= 1e-5
    card = (exported / "README.md").read_text()
    for words in ("Receptive field", "nm", "Training data", "Threshold", "Limitations", "tem-keras predict",
                  "tf.saved_model.load", "people you trust"):
        assert words in card, words
    # tf2onnx and onnxruntime come with the base install: every export has the light runtime
    assert HAVE_ONNX and meta["skipped"] == {}
    assert (exported / "model.onnx").is_file() and meta["checks"]["onnx_max_abs_difference"] <= 1e-4
    assert (exported / "predict.py").read_bytes() == Path(predict_script.__file__).read_bytes()


@pytest.mark.slow
def test_fresh_process_without_tem_keras_reproduces_the_model(exported, run, tmp_path):
    shapes = [(80, 112), (75, 101)]  # not the 64 px training patches; the second not a multiple of 4
    for k, (h, w) in enumerate(shapes):
        np.save(tmp_path / f"image{k}.npy", _image(h, w, seed=k))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        model = tf.saved_model.load({str(exported / 'saved_model')!r})
        for k in range({len(shapes)}):
            x = np.load({str(tmp_path)!r} + f"/image{{k}}.npy")[None, :, :, None]
            np.save({str(tmp_path)!r} + f"/saved{{k}}.npy", model.serve(x).numpy()[0])
            np.save({str(tmp_path)!r} + f"/mask{{k}}.npy", model.serve_mask(x).numpy()[0])
            out = model.signatures["serving_default"](images=tf.constant(x))["probabilities"]
            np.save({str(tmp_path)!r} + f"/signature{{k}}.npy", out.numpy()[0])
            if {HAVE_ONNX!r}:
                import onnxruntime as ort
                s = ort.InferenceSession({str(exported / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
                np.save({str(tmp_path)!r} + f"/onnx{{k}}.npy", s.run(None, {{s.get_inputs()[0].name: x}})[0][0])
        assert "tem_keras" not in sys.modules, "tem_keras was imported"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
    for k, (h, w) in enumerate(shapes):
        expected = _in_memory(run, _image(h, w, seed=k))
        saved = np.load(tmp_path / f"saved{k}.npy")
        assert saved.shape == (h, w, 2)
        assert np.max(np.abs(saved - expected)) <= 1e-5
        assert np.array_equal(np.load(tmp_path / f"signature{k}.npy"), saved)
        assert np.array_equal(np.load(tmp_path / f"mask{k}.npy"), (saved[..., 1] >= 0.5).astype(np.uint8))
        if HAVE_ONNX:
            assert np.max(np.abs(np.load(tmp_path / f"onnx{k}.npy") - expected)) <= 1e-4


def test_load_returns_what_predict_accepts(exported, run):
    from tem_keras.export import ExportedModel, load
    from tem_keras.inference import predict
    from tem_keras.training import Run

    model = load(exported)
    assert isinstance(model, ExportedModel)
    assert model.preprocessing == run.preprocessing and model.threshold == 0.5
    image = _image(75, 101)
    result = predict(model, image, return_probabilities=True)
    assert result.mask.shape == (75, 101)
    np.testing.assert_allclose(result.probabilities, _in_memory(run, image), atol=1e-5)
    np.testing.assert_allclose(model.serve(image)[0], result.probabilities, atol=1e-5)
    assert isinstance(load(run.path), Run)


@pytest.mark.slow
def test_saved_model_only_export_loads(run, tmp_path):
    from tem_keras.export import export, load

    out = export(run, tmp_path / "sm", formats=("saved_model",), verbose=False)
    assert not (out / "model.keras").exists()
    model = load(out)
    image = _image(40, 52)
    np.testing.assert_allclose(model.serve(image)[0], _in_memory(run, image), atol=1e-5)
    assert model.model(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 8, 8, 2)
    from tem_keras.inference import predict

    # predict() cannot read the down-sampling of the wrapped SavedModel and pads further than
    # needed: equal away from the bottom and right borders (half a receptive field)
    probabilities = predict(model, image, return_probabilities=True).probabilities
    np.testing.assert_allclose(probabilities[:-16, :-16], _in_memory(run, image)[:-16, :-16], atol=1e-5)


def test_bioimageio_package(exported):
    package = exported / "bioimageio"
    for name in ("rdf.yaml", "saved_model.zip", "test_input.npy", "test_output.npy", "cover.png", "README.md"):
        assert (package / name).is_file(), name
    meta = json.loads((exported / "tem_keras.json").read_text())
    validation = meta["checks"]["bioimageio_validation"]
    # bioimageio.spec comes with the base install: the package is validated, not only written
    assert validation.startswith(("valid-format", "passed")), validation


def test_bioimageio_package_runs(exported):
    pytest.importorskip("bioimageio.core")
    from tem_keras.export import validate_bioimageio

    # runs the zipped SavedModel: test tensors reproduced, other sizes and batch sizes
    assert validate_bioimageio(exported / "bioimageio" / "rdf.yaml", test_model=True).startswith("passed")


# ---------------------------------------------------------------------------------------------
# Refusals and clear errors
# ---------------------------------------------------------------------------------------------

def test_export_refuses_a_non_empty_folder(run, tmp_path):
    from tem_keras.export import export

    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TEMInputError, match="not empty"):
        export(run, out, formats=("keras",), verbose=False)
    assert (out / "notes.txt").read_text() == "mine"
    import tem_keras
    import tem_keras.export

    with pytest.raises(TEMInputError, match="did not write"):  # nor with overwrite: not an export
        tem_keras.export(run, out, formats=("keras",), overwrite=True, verbose=False)
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt"]


def test_onnx_skipped_with_both_install_commands_when_tf2onnx_cannot_be_imported(run, tmp_path, monkeypatch):
    """A broken install (tf2onnx missing): the export goes on and says how to install it, in a
    clone and from the package index."""
    from tem_keras.export import export

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # ``import tf2onnx`` now fails
    out = export(run, tmp_path / "x", formats=("keras", "onnx"), verbose=False)
    assert not (out / "model.onnx").exists() and not (out / "predict.py").exists()
    message = json.loads((out / "tem_keras.json").read_text())["skipped"]["onnx"]
    assert message.startswith("tf2onnx not available;")
    assert 'pip install -e ".[onnx]"' in message and 'pip install "tem_keras[onnx]"' in message


def test_model_keras_of_an_export_holds_no_optimizer_state(exported, run):
    """The run's checkpoint carries the optimizer; the export's model.keras only the weights."""
    import h5py

    def groups(path):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
            return set(h5)

    checkpoint, exported_file = Path(run.path) / "best.keras", exported / "model.keras"
    assert "optimizer" in groups(checkpoint) and "optimizer" not in groups(exported_file)
    assert exported_file.stat().st_size < checkpoint.stat().st_size


def test_the_bioimageio_savedmodel_is_the_exported_graph_with_a_dict_serve(exported, tmp_path):
    """One serving graph for both SavedModels: the zipped one's ``serve`` returns
    ``{"probabilities": ...}`` (what bioimageio.core calls), the same numbers as saved_model/."""
    import tensorflow as tf

    with zipfile.ZipFile(exported / "bioimageio" / "saved_model.zip") as archive:
        archive.extractall(tmp_path / "zipped")
    image = _image(45, 61)[None, ..., None]
    main_model = tf.saved_model.load(str(exported / "saved_model"))
    zipped = tf.saved_model.load(str(tmp_path / "zipped"))
    plain, as_dict = main_model.serve(image), zipped.serve(image)
    assert isinstance(as_dict, dict) and set(as_dict) == {"probabilities"}
    np.testing.assert_array_equal(as_dict["probabilities"].numpy(), plain.numpy())
    np.testing.assert_array_equal(zipped.serve_mask(image).numpy(), main_model.serve_mask(image).numpy())


def test_bioimageio_validation_runs_without_network(exported):
    """The validator of the base install checks the package in a process that has no network."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("no network namespaces here (unshare -n)")
    pytest.importorskip("bioimageio.spec")
    code = ("from tem_keras.export import validate_bioimageio; "
            f"print(validate_bioimageio({str(exported / 'bioimageio' / 'rdf.yaml')!r}))")
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("valid-format, bioimageio.spec"), done.stdout


def test_load_reports_corrupt_and_partial_exports(exported, tmp_path):
    from tem_keras.export import load

    def copy(name):
        target = tmp_path / name
        shutil.copytree(exported, target)
        return target

    broken = copy("no_json")
    (broken / "tem_keras.json").unlink()
    with pytest.raises(TEMInputError, match="partial export"):
        load(broken)
    broken = copy("bad_json")
    (broken / "tem_keras.json").write_text("{not json")
    with pytest.raises(TEMInputError, match="corrupt"):
        load(broken)
    broken = copy("no_keras")
    (broken / "model.keras").unlink()
    with pytest.raises(TEMInputError, match="partial export.*model.keras"):
        load(broken)
    broken = copy("no_pb")
    (broken / "saved_model" / "saved_model.pb").unlink()
    with pytest.raises(TEMInputError, match="partial export"):
        load(broken)
    broken = copy("bad_keras")
    (broken / "model.keras").write_bytes((exported / "model.keras").read_bytes()[:500])
    with pytest.raises(TEMInputError, match="model.keras: is truncated or damaged"):
        load(broken)
    with pytest.raises(TEMInputError, match="neither"):
        load(tmp_path)
    with pytest.raises(TEMInputError, match="no such"):
        load(tmp_path / "missing")


def test_keras_files_with_code_are_refused(tmp_path):
    import keras

    from tem_keras.export import load

    inputs = keras.Input((None, None, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(TEMInputError, match="Lambda"):
        load(path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_export_and_predict(run, tmp_path, capsys):
    from tem_keras.cli import main

    out = tmp_path / "cli_export"
    assert main(["export", str(run.path), str(out), "--formats", "saved_model,keras", "--quiet"]) == 0
    assert (out / "saved_model" / "saved_model.pb").is_file() and (out / "tem_keras.json").is_file()
    assert main(["export", str(run.path), str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    images = Path(run.config["data"]["dataset_dir"]) / "images"
    masks = tmp_path / "masks"
    assert main(["predict", str(out), str(images), "--out", str(masks), "--quiet"]) == 0
    assert len(list(masks.glob("*_mask.png"))) == len(list(images.iterdir()))


@pytest.mark.slow
def test_example_script_runs(exported, run, tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "predict_with_savedmodel.py"
    images = Path(run.config["data"]["dataset_dir"]) / "images"
    done = subprocess.run([sys.executable, str(example), str(exported), str(images), str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == len(list(images.iterdir()))


@pytest.mark.slow
def test_serving_graph_runs_the_rewritten_network(tmp_path):
    """The exported graph holds ``for_inference``'s copy (no batch norm, fused nearest decoders)
    and gives the trained model's probabilities on an image of odd size."""
    import keras
    import tensorflow as tf

    from tem_keras.export import export, serving_module
    from tem_keras.inference import Predictor
    from tem_keras.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model("residual_unet", n_blocks=2, base_filters=4, pool_sizes=(2, 2))
    # non-trivial batch-norm statistics, so that folding them changes the weights
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.linspace(-0.3, 0.4, n, dtype="float32"))
            layer.moving_variance.assign(np.linspace(0.5, 2.0, n, dtype="float32"))
    module = serving_module(model)
    assert module.model is Predictor.of(model).network() and module.model is not model
    kinds = {type(layer).__name__ for layer in module.model.layers}
    assert "BatchNormalization" not in kinds and "UpsampledConcatConv2D" in kinds
    assert serving_module(model, rewrite=False).model is model

    out = export(model, tmp_path / "exp", formats=("saved_model", "keras") + (("onnx",) if HAVE_ONNX else ()),
                 verbose=False)
    meta = json.loads((out / "tem_keras.json").read_text())
    assert meta["checks"]["saved_model_max_abs_difference"] <= 1e-5
    if HAVE_ONNX:
        assert meta["files"]["onnx"] == "model.onnx", meta["skipped"]
    image = _image(70, 90, seed=4)
    loaded = tf.saved_model.load(str(out / "saved_model"))
    got = loaded.serve(tf.constant(image[None, ..., None])).numpy()[0]
    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.inference import pad_to_multiple
    from tem_keras.models import downsampling_factor

    padded, (h, w) = pad_to_multiple(Preprocessing()(image), downsampling_factor(model))
    expected = np.asarray(model(padded[None, ..., None], training=False))[0, :h, :w]
    assert got.shape == expected.shape == (70, 90, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the .keras file is the model as trained (batch norms and all)
    assert any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in keras.models.load_model(out / "model.keras").layers)
