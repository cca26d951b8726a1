"""The light runtime (:mod:`tem_keras.export.predict_script`, ``predict.py`` of export folders, the ONNX engine of
``predict``): onnxruntime and NumPy only, the masks of the TensorFlow path, no TensorFlow import.

The processes that must not import TensorFlow run with a finder in ``sys.meta_path`` that refuses
``tensorflow`` and ``keras`` (and ``tem_keras`` for ``predict.py``) and records every attempt; each
such process checks that nothing was attempted. The reference masks come from the TensorFlow
engine of the same export in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from tem_keras.errors import TEMInputError

pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

#: put first in a subprocess: refuses (and records) imports of the packages named in BLOCKED
BLOCKER = textwrap.dedent("""
    import sys
    ATTEMPTS = []

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                ATTEMPTS.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
""")


def _run_blocked(blocked, body: str, tmp_path: Path, timeout=120) -> str:
    """Run ``body`` in a fresh interpreter with ``blocked`` packages refused; returns its output."""
    code = f"BLOCKED = {tuple(blocked)!r}\n" + BLOCKER + textwrap.dedent(body) + textwrap.dedent("""
        assert not ATTEMPTS, f"imports attempted: {ATTEMPTS}"
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("no blocked import")
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path)
    assert done.returncode == 0 and "no blocked import" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _image(h, w, seed):
    from tem_keras.data.synthetic import make_image

    image = make_image(max(h, w), seed=seed).image[:h, :w].astype(np.float32)
    image[3, 5] += 40 * image.std()  # an X-ray hit for the outlier removal
    return np.ascontiguousarray(image)


@pytest.fixture(scope="module")
def bundle(tiny_export):
    """The export opened with its Keras model (for the TensorFlow engine), loaded once."""
    from tem_keras.artifacts import load

    return load(tiny_export)


def _tensorflow(bundle, images, **kwargs):
    """Masks and probabilities of the TensorFlow engine."""
    from tem_keras.inference import predict

    results = predict(bundle, list(images), engine="tensorflow", return_probabilities=True, **kwargs)
    return [r.mask for r in results], [r.probabilities for r in results]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 2-D .npy (sides not multiples of 4), a 3-frame TIFF stack and an 8-bit PNG."""
    import tifffile
    from PIL import Image

    folder = tmp_path_factory.mktemp("runtime_images")
    plain = _image(90, 131, seed=1)
    np.save(folder / "plain.npy", plain)
    stack = np.stack([_image(72, 80, seed=s) for s in (2, 3, 4)])
    tifffile.imwrite(folder / "stack.tif", stack)
    grey = _image(64, 64, seed=5)
    grey = np.round(255 * (grey - grey.min()) / (grey.max() - grey.min())).astype(np.uint8)
    Image.fromarray(grey).save(folder / "bitmap.png")
    frames = {"plain": plain, **{f"stack_f{i:05d}": f for i, f in enumerate(stack)},
              "bitmap": grey.astype(np.float32)}
    return folder, frames


def test_export_folder_holds_the_runtime_verbatim(tiny_export):
    from tem_keras.export import predict_script

    assert (tiny_export / "predict.py").read_text() == Path(predict_script.__file__).read_text()
    meta = json.loads((tiny_export / "tem_keras.json").read_text())
    assert meta["files"]["runtime"] == "predict.py" and meta["files"]["onnx"] == "model.onnx"
    assert meta["activation_bytes_per_pixel"] > 0
    card = (tiny_export / "README.md").read_text()
    assert "python predict.py" in card and "pip install onnxruntime numpy tifffile pillow" in card


def test_predict_py_without_tensorflow_gives_the_tensorflow_masks(tiny_export, bundle, images, tmp_path):
    """predict.py in a process where tensorflow, keras and tem_keras cannot be imported."""
    folder, frames = images
    out = tmp_path / "out"
    output = _run_blocked(("tensorflow", "keras", "tem_keras"), f"""
        import runpy
        def run(*args):
            sys.argv = ["predict.py", *args]
            try:
                runpy.run_path({str(tiny_export / 'predict.py')!r}, run_name="__main__")
            except SystemExit as done:
                return done.code
        assert run({str(folder)!r}, "-o", {str(out)!r}, "--probabilities") == 0
        assert run({str(folder / 'plain.npy')!r}, "-o", {str(out)!r}) == 2          # exists: kept
        assert run({str(folder / 'absent.tif')!r}, "-o", {str(out)!r}) == 2         # no such file
        import numpy as np
        np.save("flat.npy", np.ones((20, 30), np.float32))
        assert run("flat.npy", "-o", {str(out)!r}) == 2                               # constant
    """, tmp_path)
    assert "wrote 5 mask(s)" in output and "absent.tif: no such file or folder" in output
    from PIL import Image

    masks, probabilities = _tensorflow(bundle, frames.values())
    for (name, image), mask, p in zip(frames.items(), masks, probabilities):
        got = np.asarray(Image.open(out / f"{name}_mask.png"))
        assert got.shape == image.shape and got.dtype == np.uint8
        assert np.array_equal(got, mask), (name, int(np.sum(got != mask)))
        import tifffile

        assert np.max(np.abs(tifffile.imread(out / f"{name}_probabilities.tif") - p[..., 1])) <= 1e-4
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == sorted(f"{n}_mask.png" for n in frames)


def test_predict_py_errors_name_the_file(tiny_export, tmp_path):
    np.save(tmp_path / "flat.npy", np.ones((20, 30), np.float32))
    done = subprocess.run([sys.executable, str(tiny_export / "predict.py"), "flat.npy", "absent.png",
                           "-o", "out"], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "flat.npy: image is constant" in done.stderr, done.stderr


def test_predict_py_predicts_a_file_given_twice_once(tiny_export, tmp_path):
    from tem_keras.export.predict_script import input_files

    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "a.npy", _image(32, 40, seed=1))
    np.save(tmp_path / "d" / "b.npy", _image(32, 40, seed=2))
    assert input_files([tmp_path / "d" / "a.npy", tmp_path / "d", tmp_path / "d" / ".." / "d" / "b.npy"]) == [
        tmp_path / "d" / "a.npy", tmp_path / "d" / "b.npy"]
    done = subprocess.run([sys.executable, str(tiny_export / "predict.py"), "d/a.npy", "d", "d/a.npy",
                           "-o", "out", "--quiet"], check=False, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0 and "wrote 2 mask(s)" in done.stdout, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".tem_keras_output", "a_mask.png", "b_mask.png"]


def test_predict_py_overwrite_replaces_its_own_masks_never_the_users(tiny_export, tmp_path):
    """The script keeps tem_keras's manifest: --overwrite replaces what it wrote, and a mask the
    user drew under the same name stays byte for byte, with a one-line error naming it."""
    np.save(tmp_path / "a.npy", _image(32, 40, seed=1))
    np.save(tmp_path / "b.npy", _image(32, 40, seed=2))
    script = [sys.executable, str(tiny_export / "predict.py"), "a.npy", "b.npy", "-o", "out", "--quiet"]

    def run(*extra):
        return subprocess.run(script + list(extra), check=False, capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)

    assert run().returncode == 0
    ours = (tmp_path / "out" / "a_mask.png").read_bytes()
    assert run().returncode == 2  # exists, no --overwrite
    assert run("--overwrite").returncode == 0 and (tmp_path / "out" / "a_mask.png").read_bytes() == ours
    (tmp_path / "out" / "b_mask.png").write_bytes(b"drawn by hand")
    (tmp_path / "out" / ".tem_keras_output").write_text("a_mask.png\n")  # the user's b_mask.png is not listed
    done = run("--overwrite")
    assert done.returncode == 2 and "b_mask.png: was not written by predict.py" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out" / "b_mask.png").read_bytes() == b"drawn by hand"


def test_cli_predict_on_an_export_does_not_start_tensorflow(tiny_export, bundle, images, tmp_path):
    """tem-keras predict EXPORT ... and tem_keras.predict("EXPORT", ...) with tensorflow and keras
    refused: masks, particles.csv."""
    folder, frames = images
    out = tmp_path / "cli"
    _run_blocked(("tensorflow", "keras"), f"""
        import numpy as np
        import tem_keras
        from tem_keras.cli import main
        assert main(["predict", {str(tiny_export)!r}, {str(folder / 'stack.tif')!r},
                     {str(folder / 'plain.npy')!r}, "-o", {str(out)!r}, "--particles",
                     "--quiet"]) == 0
        result = tem_keras.predict({str(tiny_export)!r}, {str(folder / 'bitmap.png')!r})
        np.save("bitmap_mask.npy", result.mask)
        from tem_keras.inference.onnx_engine import MAX_ONNX_FRAMES, onnx_folder
        assert str(onnx_folder({str(tiny_export)!r})) == {str(tiny_export)!r}
        assert onnx_folder({str(tiny_export)!r}, n_frames=MAX_ONNX_FRAMES + 1) is None  # a long stack
        assert onnx_folder({str(tiny_export)!r}, tta=True) is None
    """, tmp_path)
    from PIL import Image

    names = list(frames)
    masks, _ = _tensorflow(bundle, [frames[n] for n in names])
    for name, mask in zip(names, masks):
        got = np.load(tmp_path / "bitmap_mask.npy") if name == "bitmap" else \
            np.asarray(Image.open(out / f"{name}_mask.png"))
        assert np.array_equal(got, mask), name
    assert (out / "particles.csv").is_file()


def test_onnx_engine_in_process_equals_tensorflow(bundle, images):
    from tem_keras.inference import predict

    _, frames = images
    arrays = [frames["plain"], frames["stack_f00001"]]
    masks, probabilities = _tensorflow(bundle, arrays)
    results = predict(bundle, arrays, engine="onnx", return_probabilities=True)
    for result, mask, p in zip(results, masks, probabilities):
        assert result.threshold == 0.5 and np.array_equal(result.mask, mask)
        assert np.max(np.abs(result.probabilities - p)) <= 1e-4
    otsu = predict(bundle, arrays[0], engine="onnx", threshold="otsu")
    reference = predict(bundle, arrays[0], engine="tensorflow", threshold="otsu")
    assert otsu.threshold == pytest.approx(reference.threshold, abs=1e-3)


def test_onnx_engine_hands_images_to_tile_to_tensorflow(tiny_export, bundle):
    """Under ``auto`` an image that predict tiles is predicted by TensorFlow: the same numbers."""
    from tem_keras.inference import input_sources, predict, select_frames
    from tem_keras.inference.onnx_engine import OnnxEngine

    image = _image(300, 520, seed=6)
    engine = OnnxEngine(tiny_export, fallback=bundle)
    budget = 1e-4  # GB of activations: 300×520 is cut into tiles of 256 px
    assert not engine.whole(image.shape, max_memory_gb=budget) and engine.whole(image.shape)
    stream = engine.stream_probabilities(select_frames(input_sources(image)[0], None), max_memory_gb=budget)
    (_, _, _, _, tiled), = list(stream)
    reference = predict(bundle, image, engine="tensorflow", max_memory_gb=budget, return_probabilities=True)
    assert np.array_equal(tiled, reference.probabilities)


def test_whole_image_rule_is_predicts(tiny_export, bundle):
    """OnnxEngine.whole answers as the Predictor's tile layout does, for budgets and max_pixels."""
    from tem_keras.inference import Predictor, pad_to_multiple, tile_layout
    from tem_keras.inference.onnx_engine import OnnxEngine

    engine = OnnxEngine(tiny_export, fallback=bundle)
    predictor = Predictor.of(bundle.model)
    assert predictor.activation_bytes("float32") == engine.activation_bytes
    for shape in [(90, 131), (1024, 1024), (3000, 2000)]:
        for budget, max_pixels in [(None, None), (1e-4, None), (0.01, None), (None, 5000)]:
            options = predictor.tile_options(predictor.pixels_per_call("float32", budget), tile_size=None,
                                             overlap="auto", max_pixels=max_pixels)
            padded = pad_to_multiple(np.zeros(shape, np.float32), predictor.downsampling)[0].shape
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tiles too small for an exact overlap: counted only
                layout = tile_layout(padded, predictor.downsampling, predictor.receptive_field, **options)
            assert engine.whole(shape, max_pixels=max_pixels, max_memory_gb=budget) == (len(layout) == 1), \
                (shape, budget, max_pixels)


def test_engine_choice_and_errors(tiny_export, tiny_run):
    from tem_keras.inference import predict
    from tem_keras.inference.onnx_engine import onnx_folder

    assert onnx_folder(tiny_export, "auto") is None  # TensorFlow runs in this process: keep it
    assert onnx_folder(tiny_export, "onnx") == tiny_export
    assert onnx_folder(tiny_export, "tensorflow") is None
    with pytest.raises(ValueError, match="tta"):
        onnx_folder(tiny_export, "onnx", tta=True)
    with pytest.raises(ValueError, match="engine must be one of"):
        onnx_folder(tiny_export, "jax")
    with pytest.raises(TEMInputError, match="not a tem_keras export folder"):
        predict(tiny_run.path, np.ones((8, 8)), engine="onnx")
    with pytest.raises(TEMInputError, match="constant"):
        predict(tiny_export, np.full((30, 40), 7.0, np.float32), engine="onnx")


def _colliding(folder: Path) -> list[str]:
    """``a.tif`` + ``a.png`` and ``d1/x.npy`` + ``d2/x.npy``: one stem each."""
    import tifffile
    from PIL import Image

    (folder / "d1").mkdir(parents=True)
    (folder / "d2").mkdir()
    image = _image(32, 40, seed=4)
    tifffile.imwrite(folder / "a.tif", image)
    Image.fromarray(np.clip((image - image.min()) / np.ptp(image) * 255, 0, 255).astype(np.uint8)).save(
        folder / "a.png")
    np.save(folder / "d1" / "x.npy", image[::-1])
    np.save(folder / "d2" / "x.npy", image[:, ::-1])
    return ["a.tif", "a.png", "d1/x.npy", "d2/x.npy"]


def test_colliding_stems_give_one_mask_each_in_predict_py_and_tem_keras_predict(tiny_export, tmp_path):
    """'wrote 4 masks' is four files, named alike by predict.py and tem-keras predict, with the
    same pixels."""
    from PIL import Image

    from tem_keras.cli import main

    inputs = _colliding(tmp_path / "in")
    done = subprocess.run([sys.executable, str(tiny_export / "predict.py"), *inputs, "-o", "../script",
                           "--quiet"], check=False, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path / "in")
    assert done.returncode == 0 and "wrote 4 mask(s)" in done.stdout, done.stderr
    assert main(["predict", str(tiny_export), *(str(tmp_path / "in" / n) for n in inputs), "-o",
                 str(tmp_path / "cli"), "--quiet"]) == 0
    expected = ["a_png_mask.png", "a_tif_mask.png", "d1_x_npy_mask.png", "d2_x_npy_mask.png"]
    assert sorted(p.name for p in (tmp_path / "script").iterdir() if not p.name.startswith(".")) == expected
    assert sorted(p.name for p in (tmp_path / "cli").iterdir() if not p.name.startswith(".")) == expected
    for name in expected:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "script" / name)),
                              np.asarray(Image.open(tmp_path / "cli" / name))), name


@pytest.mark.parametrize("out, problem", [("a_file", "a_file: file exists"),
                                          ("a_file/masks", "a_file/masks: not a directory"),
                                          ("taken", "taken/x_mask.png: is a directory")])
def test_predict_py_reports_an_unwritable_output_in_one_line(tiny_export, tmp_path, out, problem):
    np.save(tmp_path / "x.npy", _image(32, 40, seed=5))
    (tmp_path / "a_file").write_text("the user's")
    (tmp_path / "taken" / "x_mask.png").mkdir(parents=True)
    done = subprocess.run([sys.executable, str(tiny_export / "predict.py"), "x.npy", "-o", out,
                           "--quiet", "--overwrite"], check=False, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [f"predict.py: error: {problem}; choose another output"]
    assert (tmp_path / "a_file").read_text() == "the user's"
    assert not list((tmp_path / "taken" / "x_mask.png").iterdir())
