"""Inference rewrites (``tem_keras.models.optimize``) compute the same function as the model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tem_keras.models import build_model
from tem_keras.models.optimize import UpsampledConcatConv2D, WeightFingerprint, for_inference, phase_kernel


def _with_trained_statistics(model, seed=0):
    """Batch norms with non-trivial statistics, as after training (fresh ones are identities)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("size", [1, 3, 5])
def test_phase_kernel_is_convolution_after_nearest_upsampling(k, size):
    rng = np.random.default_rng(k * 10 + size)
    z = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    kernel = rng.normal(size=(size, size, 3, 4))
    up = np.repeat(np.repeat(z, k, axis=1), k, axis=2)
    expected = tf.nn.conv2d(up, kernel.astype("float32"), 1, "SAME").numpy()
    got = tf.nn.depth_to_space(tf.nn.conv2d(z, phase_kernel(kernel, k).astype("float32"), 1, "SAME"), k)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("name, kwargs", [
    ("residual_unet_sytwu", {}),
    ("residual_unet", dict(n_blocks=3, pool_sizes=(2, 4, 2))),
    ("unet", dict(depth=2, base_filters=8, upsampling="nearest")),
    ("unet_horwath_1024", {}),
    ("shallow_cnn", {}),
])
def test_rewritten_model_equals_model(name, kwargs):
    keras.utils.set_random_seed(0)
    model = _with_trained_statistics(build_model(name, **kwargs))
    fast = for_inference(model)
    rng = np.random.default_rng(1)
    # 128: the fused path; 100 × 148 (not a multiple of the down-sampling): the literal path
    for shape in [(2, 128, 128, 1), (1, 100, 148, 1)]:
        x = rng.normal(size=shape).astype("float32")
        expected = model.predict_on_batch(x)
        got = fast.predict_on_batch(x)
        np.testing.assert_allclose(got, expected, atol=5e-5)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_what_is_rewritten():
    model = _with_trained_statistics(build_model("residual_unet_sytwu"))
    fast = for_inference(model)
    kinds = lambda m: [type(layer).__name__ for layer in m.layers]  # noqa: E731
    assert kinds(model).count("BatchNormalization") == 10 and "BatchNormalization" not in kinds(fast)
    # both decoder blocks: 3×3 convolution and 1×1 projection of [up-sampled, skip]
    assert kinds(fast).count("UpsampledConcatConv2D") == 4
    assert "Concatenate" not in kinds(fast) and "UpSampling2D" not in kinds(fast)
    assert fast.get_layer("softmax").activation is keras.activations.sigmoid
    assert fast.get_layer("softmax").dtype_policy.name == "float32"


@pytest.mark.slow
def test_copy_follows_weight_changes():
    """The inference copy is kept by the model's Predictor and made again when a weight changes."""
    from tem_keras.inference import Predictor

    model = build_model("residual_unet_sytwu")
    predictor = Predictor.of(model)
    first = predictor.network()
    assert predictor.network() is first  # cached
    _with_trained_statistics(model, seed=3)
    second = predictor.network()
    assert second is not first
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(second.predict_on_batch(x), model.predict_on_batch(x), atol=5e-5)
    assert predictor.network() is second
    # one element of one kernel changed in place (not the first element)
    fingerprint = WeightFingerprint(model)
    before = fingerprint()
    assert fingerprint() == before
    kernel = next(w for w in model.weights if len(w.shape) == 4)
    delta = np.zeros(kernel.shape, "float32")
    delta.flat[-1] = 0.25
    kernel.assign(kernel.numpy() + delta)
    assert fingerprint() != before
    third = predictor.network()
    assert third is not second
    np.testing.assert_allclose(third.predict_on_batch(x), model.predict_on_batch(x), atol=5e-5)
    assert for_inference(model) is not third  # for_inference itself keeps nothing


def test_models_without_patterns_are_returned_as_they_are():
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs))
    assert for_inference(model) is model


def test_fused_layer_reloads_from_config():
    layer = UpsampledConcatConv2D(4, (3, 3), factor=2, align=True, activation="relu", name="f")
    again = UpsampledConcatConv2D.from_config(layer.get_config())
    assert (again.filters, again.kernel_size, again.factor, again.align) == (4, (3, 3), 2, True)
    assert again.activation is keras.activations.relu


def test_activation_bytes_per_pixel_by_liveness():
    from tem_keras.models.description import activation_bytes_per_pixel

    inputs = keras.Input((None, None, 1))
    a = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same")(a)
    out = keras.layers.Add()([a, b])  # a is still held when the sum is made: 4 + 4 + 4 values
    assert activation_bytes_per_pixel(keras.Model(inputs, out)) == 48
    chain = keras.layers.Conv2D(2, 1)(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    assert activation_bytes_per_pixel(keras.Model(inputs, chain)) == 24  # 4 + 2 values
    assert activation_bytes_per_pixel(keras.Model(inputs, chain), dtype_bytes=2) == 12
    # a pooled branch counts a quarter per input pixel
    pooled = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    assert activation_bytes_per_pixel(keras.Model(inputs, pooled)) == 4 * (8 + 8 / 4)


def test_auto_precision_follows_measured_bfloat16_speed(monkeypatch):
    from tem_keras import hardware
    from tem_keras.inference import resolve_precision

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("GPU present: 'auto' precision follows the GPU, not the CPU probe")
    monkeypatch.setenv("TEM_KERAS_CPU_BFLOAT16", "0")
    assert hardware.choose_precision("auto") == "float32" and resolve_precision("auto") == "float32"
    monkeypatch.setenv("TEM_KERAS_CPU_BFLOAT16", "1")
    assert hardware.choose_precision("auto") == "bfloat16" == resolve_precision("auto")
    assert hardware.choose_precision("mixed_float16") == "float16" and hardware.dtype_policy("float16") == \
        "mixed_float16" and hardware.dtype_policy("float32") == "float32"
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        hardware.choose_precision("half")
    monkeypatch.delenv("TEM_KERAS_CPU_BFLOAT16")
    speedup = hardware.bfloat16_speedup()
    assert speedup == 0.0 or 0.05 < speedup < 50  # a measured ratio (0.0: no bfloat16 instructions)
    assert hardware.bfloat16_speedup() == speedup  # measured once per process
    expected = "bfloat16" if speedup >= hardware.BFLOAT16_MIN_SPEEDUP else "float32"
    assert hardware.choose_precision("auto") == expected


def test_rewritten_model_saves_and_reloads(tmp_path):
    model = _with_trained_statistics(build_model("residual_unet_sytwu"))
    fast = for_inference(model)
    fast.save(tmp_path / "fast.keras")
    again = keras.models.load_model(tmp_path / "fast.keras")
    x = np.random.default_rng(2).normal(size=(1, 64, 96, 1)).astype("float32")
    np.testing.assert_array_equal(again.predict_on_batch(x), fast.predict_on_batch(x))


@pytest.mark.slow
def test_rewritten_model_under_bfloat16_policy():
    from tem_keras.inference import predict

    keras.utils.set_random_seed(4)  # the weights, so the bound does not depend on the test order
    model = _with_trained_statistics(build_model("residual_unet_sytwu"))
    image = np.random.default_rng(4).normal(size=(100, 148)).astype("float32")
    full = predict(model, image, return_probabilities=True).probabilities
    half = predict(model, image, return_probabilities=True, mixed_precision="bfloat16").probabilities
    assert half.dtype == np.float32
    diff = np.abs(half - full)  # bfloat16 keeps 8 bits of mantissa
    assert diff.mean() < 0.01 and diff.max() < 0.1
