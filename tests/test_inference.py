"""Inference: tiling equals whole-image prediction, padding, inputs, shards, thresholds, evaluation, CLI.

Models are tiny (a UNet of depth 2 with 4 base filters: down-sampling 4, receptive field 24 px) with
random weights, or a 1×1 convolution whose output is known exactly.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tem_keras.cli import main  # noqa: E402
from tem_keras.data.preprocess import Preprocessing  # noqa: E402
from tem_keras.errors import TEMInputError  # noqa: E402
from tem_keras.inference import (  # noqa: E402
    Prediction,
    Predictor,
    evaluate,
    labels_from_probabilities,
    predict,
    predict_image,
    predict_stack,
    shard_range,
    tile_layout,
)
from tem_keras.io import read_stack, write_image, write_mask  # noqa: E402
from tem_keras.models import build_model, downsampling_factor, receptive_field  # noqa: E402

NO_OUTLIERS = Preprocessing(remove_outliers=False)


def smooth_image(shape, seed=0):
    """Blobs on noise, so that a random UNet gives a spatially varying output."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=shape), 3) * 10 + rng.normal(size=shape) * 0.3
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(1)
    return build_model("unet", depth=2, base_filters=4)


def known_model():
    """Particle probability = sigmoid(2 x) of the (standardised) input x: logits (-x, x)."""
    inputs = keras.Input((None, None, 1))
    logits = keras.layers.Conv2D(2, 1, use_bias=False, name="logits")(inputs)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    model = keras.Model(inputs, outputs, name="known")
    model.get_layer("logits").set_weights([np.array([-1.0, 1.0], np.float32).reshape(1, 1, 1, 2)])
    return model


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("builder", [dict(name="unet", depth=2, base_filters=4),
                                     dict(name="residual_unet", n_blocks=2, base_filters=4,
                                          pool_sizes=(2, 2))])
def test_tiled_equals_whole_image(builder):
    keras.utils.set_random_seed(2)
    model = build_model(builder)
    d, rf = downsampling_factor(model), receptive_field(model)
    image = smooth_image((200, 328))
    tile = 64 if rf < 40 else 96
    layout = tile_layout((200, 328), d, rf, tile_size=tile)
    assert len(layout.rows) > 2 and len(layout.cols) > 2
    assert layout.overlap >= rf  # exact blending needs the whole receptive field in both tiles
    whole = predict(model, image, return_probabilities=True, preprocessing=NO_OUTLIERS)
    tiled = predict(model, image, tile_size=tile, batch_size=8, return_probabilities=True,
                    preprocessing=NO_OUTLIERS)
    assert whole.probabilities.shape == tiled.probabilities.shape == (200, 328, 2)
    assert whole.probabilities[..., 1].std() > 1e-3  # the comparison is not trivial
    # The documented guarantee: equal away from the outer border (band of rf/2 + d px) ...
    band = rf // 2 + d
    diff = np.abs(whole.probabilities - tiled.probabilities)
    assert diff[band:-band, band:-band].max() <= 1e-4
    # ... and in practice everywhere: tiles start at the image border and end at the padded size.
    assert diff.max() <= 1e-4


def test_tiles_are_batched_in_one_traced_function(unet):
    image = smooth_image((200, 328))
    predictor = Predictor.of(unet)  # what predict runs: the inference copy, traced once
    assert Predictor.of(unet) is predictor
    assert predictor.network() is predictor.network()
    fn = predictor.function()
    calls = []

    def spy(x):
        calls.append(x.shape)
        return fn(x)

    predictor.function = lambda precision="float32": spy
    try:
        predict(unet, image, tile_size=64, batch_size=16, preprocessing=NO_OUTLIERS)
    finally:
        del predictor.function
    n_tiles = len(tile_layout((200, 328), 4, receptive_field(unet), tile_size=64))
    assert len(calls) == -(-n_tiles // 16)
    assert calls[0] == (16, 64, 64, 1)
    # one trace serves every tile and batch shape
    predict(unet, smooth_image((96, 80)), preprocessing=NO_OUTLIERS)
    with pytest.warns(RuntimeWarning, match="overlap >= 24 and tile_size >= 56"):
        predict(unet, smooth_image((200, 328)), tile_size=32, batch_size=3, preprocessing=NO_OUTLIERS)
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("shape", [(101, 77), (3, 5), (64, 130)])
def test_padding_to_the_downsampling_multiple(unet, shape):
    image = smooth_image(shape)
    result = predict(unet, image, return_probabilities=True)
    assert isinstance(result, Prediction)
    assert result.mask.shape == shape and result.mask.dtype == np.uint8
    assert result.probabilities.shape == (*shape, 2)
    np.testing.assert_allclose(result.probabilities.sum(-1), 1.0, atol=1e-5)
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # 32 px tiles are too small for rf 24
        warnings.simplefilter("always")
        tiled = predict(unet, image, tile_size=32, return_probabilities=True)
    assert tiled.probabilities.shape == (*shape, 2)
    assert any("tile borders may show" in str(w.message) for w in caught) == (max(shape) > 32)


def test_tile_weights_sum_to_one():
    layout = tile_layout((1008, 528), 16, 108, tile_size=256)  # padded sizes
    total = np.zeros(layout.shape)
    for r, c, wr, wc in layout:
        total[r:r + layout.tile[0], c:c + layout.tile[1]] += wr[:, None] * wc[None, :]
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert all(r % 16 == 0 for r in layout.rows) and all(c % 16 == 0 for c in layout.cols)
    # weights are zero within the margin of inner tile edges, smooth elsewhere
    assert layout.margin == 54 and np.all(layout.row_weights[1][:54] == 0)


def test_mixed_precision_is_close(unet):
    image = smooth_image((64, 96))
    full = predict(unet, image, return_probabilities=True, preprocessing=NO_OUTLIERS)
    half = predict(unet, image, return_probabilities=True, preprocessing=NO_OUTLIERS,
                   mixed_precision="bfloat16")
    assert half.probabilities.dtype == np.float32
    assert np.abs(full.probabilities - half.probabilities).max() < 0.05


# --------------------------------------------------------------------------------------------
# Inputs, stacks and shards
# --------------------------------------------------------------------------------------------

def test_memory_budget_cuts_batches_and_tiles_large_images(unet):
    from tem_keras.inference import WORKSPACE_FACTOR
    from tem_keras.models.description import activation_bytes_per_pixel

    predictor = Predictor.of(unet)
    net = predictor.network()
    fn = predictor.function()
    calls = []

    def spy(x):
        calls.append(x.shape)
        return fn(x)

    per_tile_gb = WORKSPACE_FACTOR * activation_bytes_per_pixel(net) * 64 * 64 / 1024**3
    image = smooth_image((200, 328))
    predictor.function = lambda precision="float32": spy
    try:
        reference = predict(unet, image, tile_size=64, batch_size=16, preprocessing=NO_OUTLIERS)
        n_tiles = len(calls)
        calls.clear()
        # room for 2.5 tiles per call: batches of 2 instead of 16, same result
        capped = predict(unet, image, tile_size=64, batch_size=16, preprocessing=NO_OUTLIERS,
                         max_memory_gb=2.5 * per_tile_gb)
        assert max(c[0] for c in calls) == 2 and sum(c[0] for c in calls) > n_tiles
        np.testing.assert_array_equal(capped.mask, reference.mask)
        calls.clear()
        # an image too large for the budget is tiled, in tiles that fit it, instead of predicted whole
        big = smooth_image((600, 560))
        whole = predict(unet, big, preprocessing=NO_OUTLIERS, return_probabilities=True)
        assert calls[-1] == (1, 600, 560, 1)
        calls.clear()
        tiled = predict(unet, big, preprocessing=NO_OUTLIERS, max_memory_gb=per_tile_gb * 30,
                        return_probabilities=True)  # 30 × 64² px: 350 px tiles
        assert len(calls) > 1 and all(c[1] * c[2] <= 30 * 64 * 64 for c in calls)
        np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-4)
    finally:
        del predictor.function
    with pytest.raises(ValueError, match="max_memory_gb"):
        predict(unet, image, max_memory_gb=0)


def test_paths_folders_lists_and_stacks(unet, tmp_path):
    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"img{i + 1}.tif", smooth_image((48, 64), seed=i), pixel_size_nm=0.5)
    stack = np.stack([smooth_image((32, 40), seed=10 + i) for i in range(5)])
    np.save(tmp_path / "movie.npy", stack)

    one = predict(unet, folder / "img1.tif")
    assert isinstance(one, Prediction) and one.pixel_size_nm == pytest.approx(0.5)
    assert one.source.endswith("img1.tif") and one.frame is None and one.name == "img1"

    many = predict(unet, folder)
    assert [p.name for p in many] == ["img1", "img2", "img3"]
    np.testing.assert_array_equal(many[0].mask, one.mask)

    listed = predict(unet, [folder / "img2.tif", tmp_path / "movie.npy"])
    assert [p.name for p in listed] == ["img2"] + [f"movie_f{i:05d}" for i in range(5)]
    assert [p.index for p in listed] == list(range(6))

    from_array = predict(unet, stack, return_probabilities=True)
    assert [p.name for p in from_array[:2]] == ["frame00000", "frame00001"]
    from_stack = predict(unet, read_stack(tmp_path / "movie.npy"), return_probabilities=True)
    assert len(from_array) == len(from_stack) == 5
    for a, b in zip(from_array, from_stack):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)

    # frames of one stack are batched together (5 frames, batch 2 -> 3 calls), same results
    batched = list(predict_stack(unet, stack, batch_size=2, return_probabilities=True))
    for a, b in zip(from_array, batched):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_progress_bar_counts_a_frame_when_the_caller_is_done_with_it(unet):
    """The bar of predict_stack covers what the caller does with each frame (tem-keras predict
    --particles measures its particles): a frame counts when the next one is asked for."""
    from tqdm import tqdm

    stack = np.stack([smooth_image((32, 40), seed=20 + i) for i in range(3)])
    frames = predict_stack(unet, stack, progress=True)
    counted = []
    for _ in frames:
        bar = next(b for b in tqdm._instances if b.desc == "predict")  # the one open bar
        counted.append(bar.n)
    assert counted == [0, 1, 2]  # not yet counted while the caller works on it
    assert bar.n == 3
    assert not any(b.desc == "predict" for b in tqdm._instances)  # closed at the end


@pytest.mark.parametrize("n", [0, 1, 7, 100])
@pytest.mark.parametrize("shards", [1, 3, 8])
def test_shards_partition_the_frames(n, shards):
    parts = [list(shard_range(n, f"{i}/{shards}")) for i in range(shards)]
    assert sum(parts, []) == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_prediction_and_bad_shards(unet):
    stack = np.stack([smooth_image((32, 32), seed=i) for i in range(7)])
    full = predict(unet, stack)
    pieces = [predict(unet, stack, frames=f"{i}/3") for i in range(3)]
    assert [p.index for piece in pieces for p in piece] == list(range(7))
    for a, b in zip(full, [p for piece in pieces for p in piece]):
        np.testing.assert_array_equal(a.mask, b.mask)
    assert [p.index for p in predict(unet, stack, frames=slice(5, None))] == [5, 6]
    with pytest.raises(ValueError, match="0 <= i < n"):
        shard_range(7, "3/3")


def test_bad_input_names_the_file(unet, tmp_path):
    import tifffile

    bad = np.ones((32, 32), np.float32)
    bad[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    with pytest.raises(TEMInputError, match="nan.tif.*NaN"):
        predict(unet, tmp_path / "nan.tif")
    write_image(tmp_path / "flat.tif", np.full((32, 32), 3.0, np.float32))
    with pytest.raises(TEMInputError, match="flat.tif.*constant"):
        predict(unet, [tmp_path / "flat.tif"])
    # raised in the tf.data reader thread, re-raised as is (not as a TensorFlow error)
    write_image(tmp_path / "good.tif", smooth_image((32, 32)))
    with pytest.raises(TEMInputError, match="flat.tif.*constant"):
        predict(unet, [tmp_path / "good.tif", tmp_path / "flat.tif", tmp_path / "good.tif"])
    with pytest.raises(TEMInputError, match="read_stack"):
        predict_image(unet, np.zeros((2, 32, 32), np.float32))
    with pytest.raises(TEMInputError, match="colour"):
        predict(unet, np.zeros((32, 32, 3), np.float32))
    with pytest.raises(TEMInputError, match="no such model"):
        predict(tmp_path / "missing.keras", np.zeros((8, 8)))


# --------------------------------------------------------------------------------------------
# Thresholds and evaluation
# --------------------------------------------------------------------------------------------

def test_threshold_modes_on_a_known_model():
    from tem_keras.analysis.metrics import otsu_threshold

    model = known_model()
    image = smooth_image((64, 64))
    z = NO_OUTLIERS(image)
    p = sigmoid(2 * z)
    default = predict(model, image, preprocessing=NO_OUTLIERS, return_probabilities=True)
    np.testing.assert_allclose(default.probabilities[..., 1], p, atol=1e-5)
    assert default.threshold == 0.5
    np.testing.assert_array_equal(default.mask, (z >= 0).astype(np.uint8))
    fixed = predict(model, image, preprocessing=NO_OUTLIERS, threshold=0.8)
    np.testing.assert_array_equal(fixed.mask, (p >= 0.8).astype(np.uint8))
    otsu = predict(model, image, preprocessing=NO_OUTLIERS, threshold="otsu")
    assert otsu.threshold == pytest.approx(otsu_threshold(p), abs=1e-4)
    np.testing.assert_array_equal(otsu.mask, (p >= otsu.threshold).astype(np.uint8))
    # multi-class rule: argmax by default, threshold on 1 - p(background) otherwise
    probs = np.array([[[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]]], np.float32)
    labels, used = labels_from_probabilities(probs)
    assert used is None and labels.tolist() == [[0, 2, 0]]
    labels, used = labels_from_probabilities(probs, 0.45)
    assert used == 0.45 and labels.tolist() == [[1, 2, 0]]


def _dataset(tmp_path, model, cut=0.8, n=3):
    """Images whose truth is ``z > cut`` for the standardised image z (known best threshold)."""
    root = tmp_path / "ds"
    for i in range(n):
        image = smooth_image((48, 56), seed=20 + i)
        write_image(root / "images" / f"s{i}.tif", image)
        write_mask(root / "masks" / f"s{i}.png", (NO_OUTLIERS(image) > cut).astype(np.uint8))
    return root


def test_evaluate_and_best_threshold(tmp_path):
    from tem_keras.training import Run

    model = known_model()
    root = _dataset(tmp_path, model)
    run = Run(tmp_path / "run", model, {"preprocessing": NO_OUTLIERS.to_dict()},
              split={"test": ["s1"], "train": ["s0", "s2"]})
    per_image, overall = evaluate(run, root, threshold=0.5, plot=tmp_path / "curve.png")
    assert list(per_image["image"]) == ["s0", "s1", "s2"]
    assert {"dice", "iou", "precision", "recall", "f1"} <= set(per_image.columns)
    assert overall["n_images"] == 3 and overall["scores"]["tp"] == per_image["tp"].sum()
    assert per_image["recall"].min() == 1.0 and per_image["precision"].max() < 1.0
    # the truth is p > sigmoid(1.6) = 0.832: found on the 0.01 grid up to the pixels between
    # two grid values, far better than at 0.5
    assert overall["at_best"]["f1"] > 0.99 > 0.9 > overall["scores"]["f1"]
    assert 0.82 <= overall["best_threshold"] <= 0.84
    assert (tmp_path / "curve.png").stat().st_size > 1000
    test_only, _ = evaluate(run, root, split="test")
    assert list(test_only["image"]) == ["s1"]


# --------------------------------------------------------------------------------------------
# Bounded memory at 4096²
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_4096_image_predicts_with_bounded_memory():
    """Peak RSS growth of a tiled 4096² prediction (tiny model, 512 px tiles) stays below 512 MB.

    Measured: ~195 MB (the image and its standardised copy are 64 MB each, the probability
    accumulator 128 MB); predicting the same image whole grows the RSS by ~800 MB with this
    2-filter UNet, and by many GB with paper-sized models.
    """
    script = textwrap.dedent("""
        import resource, numpy as np, keras
        from tem_keras.data.preprocess import Preprocessing
        from tem_keras.inference import predict
        from tem_keras.models import build_model
        keras.utils.set_random_seed(0)
        model = build_model("unet", depth=2, base_filters=2)
        image = np.random.default_rng(0).normal(size=(4096, 4096)).astype("float32")
        pre = Preprocessing(remove_outliers=False)
        predict(model, image[:512, :512], tile_size=512, preprocessing=pre)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = predict(model, image, tile_size=512, batch_size=4, preprocessing=pre)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert result.mask.shape == (4096, 4096)
        print("GROWTH_MB", (peak - base) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    growth = float(out.stdout.split("GROWTH_MB")[-1])
    assert growth < 512, f"peak RSS grew by {growth:.0f} MB"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def test_cli_predict_evaluate_measure_label(tmp_path, capsys):
    import pandas as pd

    from tem_keras.data.synthetic import make_dataset
    from tem_keras.io import read_image

    ds = make_dataset(tmp_path / "synth", n_images=2, size=96, pixel_size_nm=0.2)
    model = known_model()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"preprocessing": NO_OUTLIERS.to_dict()}))
    model.save(run_dir / "best.keras")

    out = tmp_path / "pred"
    assert main(["predict", str(run_dir), str(ds / "images"), "-o", str(out), "--probabilities",
                 "--overlay", "--particles", "--threshold", "otsu", "--quiet"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "synthetic_000_mask.png" in names and "synthetic_001_overlay.png" in names
    assert "synthetic_000_probabilities.tif" in names and "particles.csv" in names
    table = pd.read_csv(out / "particles.csv")
    assert {"image", "frame", "equivalent_diameter_nm"} <= set(table.columns)
    probabilities = read_image(out / "synthetic_000_probabilities.tif")
    assert probabilities.pixel_size_nm == pytest.approx(0.2)
    # nothing is overwritten without being asked
    assert main(["predict", str(run_dir), str(ds / "images"), "-o", str(out), "--quiet"]) == 2

    # a shard of a stack
    np.save(tmp_path / "movie.npy", np.stack([smooth_image((32, 32), seed=i) for i in range(5)]))
    assert main(["predict", str(run_dir / "best.keras"), str(tmp_path / "movie.npy"), "-o",
                 str(tmp_path / "shard"), "--shard", "1/2", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "shard").iterdir()) == [  # and the output manifest
        ".tem_keras_output", "movie_f00002_mask.png", "movie_f00003_mask.png", "movie_f00004_mask.png"]

    capsys.readouterr()
    assert main(["evaluate", str(run_dir), str(ds), "-o", str(tmp_path / "eval"), "--quiet",
                 "--save-threshold"]) == 0
    printed = capsys.readouterr().out
    assert "per image" in printed and "pooled" in printed and "best threshold" in printed
    assert (tmp_path / "eval" / "threshold_curve.png").is_file()
    assert len(pd.read_csv(tmp_path / "eval" / "per_image.csv")) == 2
    saved = json.loads((run_dir / "thresholds.json").read_text())["threshold"]
    assert predict(run_dir, ds / "images" / "synthetic_000.tif").threshold == saved

    assert main(["measure", str(ds / "masks"), "--pixel-size-nm", "0.2", "-o",
                 str(tmp_path / "sizes.csv")]) == 0
    sizes = pd.read_csv(tmp_path / "sizes.csv")
    assert len(sizes) > 0 and sizes["equivalent_diameter_nm"].notna().all()

    labelled = tmp_path / "labelled"
    assert main(["label", str(ds / "images"), "-o", str(labelled), "--quiet"]) == 0
    assert sorted(p.name for p in (labelled / "masks").iterdir()) == ["synthetic_000.png",
                                                                      "synthetic_001.png"]
    assert read_image(labelled / "images" / "synthetic_000.tif").pixel_size_nm == pytest.approx(0.2)

    assert main(["predict", str(run_dir), str(tmp_path / "nowhere.tif"), "-o", str(out)]) == 2


def test_onednn_hint_said_once_for_small_networks_when_tensorflow_runs_eigen(unet, monkeypatch):
    import warnings

    from tem_keras import hardware
    from tem_keras.inference import PerformanceHint

    assert hardware.onednn_enabled() in (True, False)  # TensorFlow's answer on this machine
    monkeypatch.setattr(hardware, "_ONEDNN_HINTED", {})
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(hardware, "onednn_enabled", lambda: False)  # as on an AVX2 CPU
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    image = smooth_image((64, 64))
    with pytest.warns(PerformanceHint, match="TF_ENABLE_ONEDNN_OPTS=1"):
        predict(unet, image)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceHint)
        predict(unet, image)  # said once per process
    # not for wide networks, not when the user chose, not when oneDNN is on, not off x86
    hardware._ONEDNN_HINTED.clear()
    assert hardware.onednn_hint(hardware.ONEDNN_HINT_MAX_WEIGHT_BYTES + 1) is None
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert hardware.onednn_hint(1000) is None
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    monkeypatch.setattr(hardware, "onednn_enabled", lambda: True)
    assert hardware.onednn_hint(1000) is None
    monkeypatch.setattr(hardware, "onednn_enabled", lambda: False)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert hardware.onednn_hint(1000) is None
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert "TF_ENABLE_ONEDNN_OPTS" in hardware.onednn_hint(1000)
    assert hardware.onednn_hint(1000) is None


@pytest.mark.slow
def test_saved_weight_bytes_counts_the_network_not_the_optimizer(tmp_path):
    from tem_keras.hardware import network_weight_bytes, saved_weight_bytes

    model = build_model("unet", depth=2, base_filters=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(np.zeros((1, 16, 16, 1), "float32"), np.full((1, 16, 16, 2), 0.5, "float32"))
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "best.keras")  # with Adam's two moments per weight
    assert saved_weight_bytes(tmp_path / "run" / "best.keras") == 4 * model.count_params()
    assert saved_weight_bytes(tmp_path / "run") == 4 * model.count_params()
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    assert saved_weight_bytes(tmp_path / "broken.keras") is None
    assert saved_weight_bytes(tmp_path / "nowhere") is None
    # the same count for a network not yet built, from a child process
    assert network_weight_bytes("unet", {"depth": 2, "base_filters": 4}) == 4 * model.count_params()
    assert network_weight_bytes("no_such_network") is None


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 rule")
def test_cli_predict_and_fit_turn_onednn_on_for_a_small_network_unless_the_user_chose(unet, tmp_path):
    """The switch only acts before TensorFlow starts, so each case is a fresh process."""
    unet.save(tmp_path / "small.keras")
    write_image(tmp_path / "image.tif", smooth_image((64, 64)))
    script = textwrap.dedent(f"""
        import sys
        from tem_keras.cli import main
        assert "tensorflow" not in sys.modules
        code = main(["predict", {str(tmp_path / "small.keras")!r}, {str(tmp_path / "image.tif")!r},
                     "-o", {str(tmp_path / "out")!r}, "--overwrite", "--verbose"])
        from tem_keras.hardware import onednn_enabled
        print("ONEDNN", onednn_enabled(), code)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "ONEDNN True 0" in done.stdout, done.stderr[-3000:]
    assert "oneDNN kernels on for this small network" in done.stderr  # said with --verbose only
    assert (tmp_path / "out" / "image_mask.png").is_file()
    # fit: the network's size is counted before TensorFlow starts
    from tem_keras.data.synthetic import make_dataset

    ds = make_dataset(tmp_path / "synth", n_images=6, size=64, progress=False)
    script = textwrap.dedent(f"""
        from tem_keras.cli import main
        code = main(["fit", {str(ds)!r}, "--model", "unet", "--depth", "2", "--base-filters", "4",
                     "--epochs", "1", "--patch-size", "32", "--batch-size", "2",
                     "--run-dir", {str(tmp_path / "run")!r}, "--quiet"])
        from tem_keras.hardware import onednn_enabled
        print("ONEDNN", onednn_enabled(), code)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "ONEDNN True 0" in done.stdout, done.stderr[-3000:]
    assert (tmp_path / "run" / "best.keras").is_file()
    # the user's choice stands (checked before TensorFlow starts, as the command line does)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, sys
        from tem_keras.hardware import prefer_onednn
        print(prefer_onednn(1000), os.environ["TF_ENABLE_ONEDNN_OPTS"], "tensorflow" in sys.modules)
    """)], capture_output=True, text=True, env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"}, timeout=120)
    assert done.stdout.split() == ["False", "0", "False"], done.stderr[-3000:]


def test_test_time_augmentation_is_the_mean_of_the_eight_symmetries(tmp_path):
    """tta=True equals the mean, mapped back, of the predictions of the 8 rotated/mirrored images."""
    import keras

    from tem_keras import build_model, predict
    from tem_keras.inference.augment import DIHEDRAL, dihedral, undo_dihedral

    keras.utils.set_random_seed(1)
    model = build_model({"name": "unet", "depth": 2, "base_filters": 4})
    image = np.random.default_rng(0).normal(size=(40, 56)).astype(np.float32)
    expected = np.mean([undo_dihedral(predict(model, np.ascontiguousarray(dihedral(image, k, f)),
                                              return_probabilities=True).probabilities, k, f)
                        for k, f in DIHEDRAL], axis=0)
    result = predict(model, image, tta=True, return_probabilities=True)
    assert result.probabilities.shape == (40, 56, 2)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    assert not np.allclose(result.probabilities, predict(model, image, return_probabilities=True).probabilities,
                           atol=1e-4)  # an untrained network is not symmetric: the mean differs
    for k, f in DIHEDRAL:
        np.testing.assert_array_equal(undo_dihedral(dihedral(image, k, f), k, f), image)
