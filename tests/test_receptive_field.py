"""Receptive field (analytic and empirical), down-sampling and model description."""

from __future__ import annotations

import pytest

import tem_keras.models as tm

keras = pytest.importorskip("keras")

# Sytwu et al. 2022: 2-block residual UNet, RF = 8 + 8 k0 + 5 k0 k1
KNOWN = {(2, 2): 44, (2, 4): 64, (4, 2): 80, (2, 8): 104, (4, 4): 120, (8, 2): 152, (4, 8): 200,
         (8, 4): 232, (8, 8): 392}


@pytest.mark.parametrize("pools,expected", sorted(KNOWN.items()))
def test_residual_unet_receptive_field_known_answers(pools, expected):
    k0, k1 = pools
    assert expected == 8 + 8 * k0 + 5 * k0 * k1
    model = tm.residual_unet(n_blocks=2, base_filters=2, pool_sizes=pools)
    assert tm.receptive_field(model) == expected
    assert tm.downsampling_factor(model) == k0 * k1


@pytest.mark.parametrize("pools,nm", [((2, 2), 0.95), ((4, 4), 2.6), ((8, 8), 8.4)])
def test_receptive_field_in_nm_as_in_the_paper(pools, nm):
    info = tm.describe(tm.residual_unet(n_blocks=2, base_filters=2, pool_sizes=pools), pixel_size_nm=0.02152)
    digits = 2 if nm < 1 else 1
    assert round(info["receptive_field_nm"], digits) == nm


def test_dilation_and_tem_keras_top_level():
    import tem_keras

    plain = tm.residual_unet(n_blocks=2, base_filters=2, pool_sizes=(2, 2))
    dilated = tm.residual_unet(n_blocks=2, base_filters=2, pool_sizes=(2, 2), dilation_rates=2)
    # convolutions: 2 per block x 2 steps x jumps (1, 2, 4, 2, 1) = 40; pools: (2-1)*1 + (2-1)*2 = 3
    assert tem_keras.receptive_field(plain) == 1 + 3 + 40
    # dilation 2 doubles the widening of every 3x3 convolution, parameters unchanged
    assert tem_keras.receptive_field(dilated) == 1 + 3 + 2 * 40
    assert plain.count_params() == dilated.count_params()


def _conv_stack():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    x = keras.layers.Conv2D(2, 5, dilation_rate=2, padding="same")(x)
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)
    x = keras.layers.Conv2D(2, 3, padding="same")(x)
    x = keras.layers.Conv2D(2, 1, padding="same", activation="softmax")(x)
    return keras.Model(inputs, x)


def test_empirical_equals_analytic_for_plain_conv_stack():
    model = _conv_stack()
    analytic = tm.receptive_field(model)
    assert analytic == 1 + 2 + 2 * 4 + 2 + 2 * 2  # 17
    assert tm.empirical_receptive_field(model, size=64) == analytic
    assert tm.downsampling_factor(model) == 2


@pytest.mark.parametrize("build,exact", [
    (lambda: tm.shallow_cnn(filters=1, kernel_size=9), True),
    (lambda: tm.residual_unet(n_blocks=2, base_filters=2, pool_sizes=(2, 2)), True),
    (lambda: tm.unet(depth=2, base_filters=2, upsampling="nearest", convs_per_level=2), True),
    (lambda: tm.unet(depth=2, base_filters=2, upsampling="nearest"), False),
])
def test_empirical_vs_analytic_for_models(build, exact):
    keras.utils.set_random_seed(0)
    model = build()
    analytic = tm.receptive_field(model)
    empirical = tm.empirical_receptive_field(model, n_samples=4)
    if exact:
        assert empirical == analytic
    else:
        # the paper's formula keeps the largest single path; where paths of different alignment
        # join (pooling + skip), their union can be wider by less than one down-sampling step
        assert abs(empirical - analytic) < tm.downsampling_factor(model)


def test_describe_and_table():
    info = tm.describe(tm.shallow_cnn(filters=1, kernel_size=9))
    assert info["parameters"] == 9 * 9 + 1 + 2 * 1 + 2
    assert info["receptive_field_px"] == 9 and info["downsampling"] == 1
    assert info["receptive_field_nm"] is None
    # 9x9x1 conv + 1x1 (1 -> 2): 2 FLOPs per multiply-add, per megapixel
    assert info["gflops_per_megapixel"] == pytest.approx(2 * (81 + 2) * 1e6 / 1e9)
    table = tm.model_table(["shallow_cnn_single", {"name": "residual_unet", "pool_sizes": (4, 4)}],
                           pixel_size_nm=0.02152)
    assert list(table["receptive_field_px"]) == [9, 120]
    text = tm.format_model_table(table)
    assert "| `shallow_cnn_single` | 86 | 9 | 0.19 | 1 |" in text
    assert "residual_unet(pool_sizes=(4, 4))" in text
