"""tem_keras.explain: Grad-CAM, kernels, activations, effective receptive field, line profile, CLI.

Known answers: Grad-CAM of a model whose particle score depends on bright structures only (fixed
weights) lies on the bright disc, not on the dark one; a single-filter CNN trained on synthetic
bright-field particles learns a blob kernel that ``match_kernels`` identifies; the effective
receptive field of a plain convolution stack has exactly the analytic support, that of a residual
UNet holds 95 % of its mass in a square smaller than the analytic field (Luo et al. 2016; Sytwu et
al. 2022).
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import tem_keras.models as tm  # noqa: E402
from tem_keras import explain  # noqa: E402
from tem_keras.data.synthetic import make_image  # noqa: E402

RR, CC = np.mgrid[:64, :64]
BRIGHT = (RR - 20) ** 2 + (CC - 16) ** 2 <= 6**2
DARK = (RR - 44) ** 2 + (CC - 46) ** 2 <= 6**2
# a disc plus the 5x5 detector and 4x4 pooling reach around it
NEAR_BRIGHT = (RR - 20) ** 2 + (CC - 16) ** 2 <= 14**2
NEAR_DARK = (RR - 44) ** 2 + (CC - 46) ** 2 <= 14**2


def _bright_only_model():
    """Particle score = 4·(bright-structure detector) − 2·(dark-structure detector) − 0.5, by construction.

    ``detect`` is a 5×5 box filter with channel 0 = +mean and channel 1 = −mean, so after the ReLU
    channel 0 responds to bright discs only and channel 1 to dark discs only; the particle logit
    rises with channel 0 and falls with channel 1. Grad-CAM must weight channel 0 positively and
    channel 1 negatively, so its map sits on the bright disc and not on the dark one.
    """
    inputs = keras.Input((None, None, 1), name="image")
    detect = keras.layers.Conv2D(2, 5, padding="same", name="detect")
    x = keras.layers.ReLU(name="features")(detect(inputs))
    x = keras.layers.AveragePooling2D(4, name="pooled")(x)
    x = keras.layers.UpSampling2D(4, interpolation="bilinear", name="up")(x)
    head = keras.layers.Conv2D(2, 1, name="head_logits")
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(head(x))
    model = keras.Model(inputs, outputs, name="bright_only")
    k = np.zeros((5, 5, 1, 2), np.float32)
    k[..., 0, 0], k[..., 0, 1] = 1 / 25, -1 / 25
    detect.set_weights([k, np.zeros(2, np.float32)])
    hk = np.zeros((1, 1, 2, 2), np.float32)
    hk[0, 0, 0, 1], hk[0, 0, 1, 1] = 4.0, -2.0
    head.set_weights([hk, np.array([0.0, -0.5], np.float32)])
    return model


def _two_disc_image():
    image = np.random.default_rng(0).normal(0, 0.1, (64, 64)).astype(np.float32)
    image[BRIGHT] += 1.0
    image[DARK] -= 1.0
    return image


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("layer", [None, "pooled"])
def test_grad_cam_known_answer_mass_on_the_region_that_drives_the_score(method, layer):
    model = _bright_only_model()
    image = _two_disc_image()
    cam = explain.grad_cam(model, image, layer=layer, method=method, preprocessing=False)
    assert cam.shape == image.shape and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    inside = cam[NEAR_BRIGHT].sum() / cam.sum()
    # measured 0.84 (layer "features", the default) and 0.86 ("pooled", 16x16 up-sampled); the
    # region is 15 % of the image; weighting channels by |gradient| would give ~0.45
    assert inside >= 0.8
    assert cam[NEAR_DARK].sum() / cam.sum() < 0.05


def test_grad_cam_targets_and_figure():
    model = _bright_only_model()
    image = _two_disc_image()
    assert explain.default_cam_layer(model).name == "features"
    box = explain.grad_cam(model, image, target=(8, 4, 32, 28), preprocessing=False)
    mask = np.zeros((64, 64), bool)
    mask[8:32, 4:28] = True
    same = explain.grad_cam(model, image, target=mask, preprocessing=False)
    np.testing.assert_allclose(box, same, atol=1e-6)
    cam, fig = explain.grad_cam(model, image, target="all", preprocessing=False, return_figure=True,
                                class_name="Pt")
    assert cam[NEAR_BRIGHT].sum() / cam.sum() >= 0.8
    assert fig.axes[1].get_title() == "what drives 'Pt': Grad-CAM at features"  # the class by name
    assert fig.axes[2].get_title() == "the map alone"
    overlay = np.asarray(fig.axes[1].images[1].get_array())  # RGBA over the image
    drawn = overlay[..., 3] > 0
    assert drawn.any() and overlay[..., 0][drawn].min() > 0.5  # red to yellow: shows on dark particles
    np.testing.assert_allclose(overlay[..., 3], 0.8 * np.sqrt(cam / cam.max()), atol=1e-6)
    with pytest.raises(ValueError, match="no layer"):
        explain.grad_cam(model, image, layer="nope", preprocessing=False)
    with pytest.raises(ValueError, match="target"):
        explain.grad_cam(model, image, target="everything", preprocessing=False)


def _roc_auc(truth, score) -> float:
    """Probability that a random particle pixel scores above a random background pixel."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, bool).ravel()
    ranks = rankdata(np.asarray(score).ravel())
    n1, n0 = truth.sum(), truth.size - truth.sum()
    return float((ranks[truth].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_grad_cam_of_a_trained_residual_unet_is_high_on_the_particles():
    """The default answers "what drives the particle class": on a synthetic bright-field image, the
    shipped pre-trained residual UNet's Grad-CAM (particle log-odds, finest decoder stage below
    full resolution) is high on the particles (measured ROC AUC 0.995-0.996 on three images, the
    map about 12× higher inside than outside). At the bottleneck, 8× coarser, it hardly tells
    them apart (AUC 0.58-0.64)."""
    from tem_keras.models.tem_weights import load_tem_weights

    model = tm.build_model({"name": "residual_unet", "n_blocks": 3, "base_filters": 16, "pool_sizes": (2, 2, 2)})
    load_tem_weights(model, "residual_unet_3b16")
    sample = make_image(256, pixel_size_nm=0.5, seed=11)
    particles = sample.mask > 0
    assert explain.default_cam_layer(model).name == "dec1_relu2"
    cam, fig = explain.grad_cam(model, sample.image, return_figure=True)
    auc = _roc_auc(particles, cam)
    assert auc > 0.95
    assert cam[particles].mean() > 8 * cam[~particles].mean()
    assert fig.axes[1].get_title().startswith("what drives 'particle': Grad-CAM at dec1_relu2")
    assert _roc_auc(particles, explain.grad_cam(model, sample.image, layer="bottleneck_relu2")) < min(0.75, auc - 0.25)


def _randomize_scores(model):
    """FCN-8s's score layers start at zero (no gradient reaches VGG16): give them random weights."""
    rng = np.random.default_rng(0)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


ZOO = {
    "unet": (lambda: tm.unet(depth=2, base_filters=4), 60),
    "unet_bn_leaky": (lambda: tm.unet(depth=2, base_filters=4, batch_norm=True, activation="leaky_relu"), 64),
    "encoder_decoder": (lambda: tm.encoder_decoder(filters=(4, 8), kernel_sizes=(5, 3)), 60),
    "residual_unet": (lambda: tm.residual_unet(n_blocks=2, base_filters=2, pool_sizes=(2, 2)), 60),
    "fcn8s": (lambda: _randomize_scores(tm.fcn8s(weights=None)), 64),
    "shallow_cnn_single": (lambda: tm.shallow_cnn(filters=1, kernel_size=9), 60),
    "shallow_cnn_wide": (lambda: tm.shallow_cnn(filters=8, kernel_size=7), 60),
    "sm_unet_resnet18": (lambda: tm.sm_model("Unet", "resnet18", weights=None), 64),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith(("sm_", "fcn8s")) else n
                                  for n in ZOO])
def test_grad_cam_runs_on_every_zoo_architecture(name):
    keras.utils.set_random_seed(1)
    build, size = ZOO[name]
    model = build()
    image = make_image(size, "bright-field", seed=3).image  # 60 px: padded to the down-sampling inside
    layer = explain.default_cam_layer(model)
    for method in ("gradcam", "gradcam++"):
        cam = explain.grad_cam(model, image, target="all", method=method)
        assert cam.shape == (size, size)
        assert np.all(np.isfinite(cam)) and cam.min() >= 0
        if method == "gradcam":  # Grad-CAM++ keeps positive gradients only: may be all zero untrained
            assert cam.max() > 0, (name, layer.name)
    if name == "fcn8s":
        assert layer.name == "block5_conv3"
        cam = explain.grad_cam(model, image, layer="block4_conv3", target="all")
        assert cam.shape == (size, size) and np.all(np.isfinite(cam))


def test_filter_bank_and_match_kernels_recover_planted_filters():
    bank = explain.filter_bank(9)
    for name in ("gaussian_s2", "log_s1.5", "sobel_x", "gabor_odd_a45_s1.5_l6", "gabor_h+v+gaussian_s2.5"):
        assert name in bank
        assert np.linalg.norm(bank[name]) == pytest.approx(1.0)
    model = tm.shallow_cnn(filters=3, kernel_size=9)
    conv = model.get_layer("filters")
    kernel = np.stack([bank["log_s1.5"], -bank["sobel_y"], bank["gabor_h+v+gaussian_s2.5"]], -1)
    kernel = kernel + np.random.default_rng(0).normal(0, 0.01, kernel.shape)
    conv.set_weights([kernel[:, :, None, :].astype(np.float32), np.zeros(3, np.float32)])
    table = explain.match_kernels(model).sort_values("filter")
    assert list(table["best"]) == ["log_s1.5", "sobel_y", "gabor_h+v+gaussian_s2.5"]
    assert list(table["family"]) == ["log", "sobel", "gabor+gaussian"]
    assert table["correlation"].iloc[1] < -0.95 and table["abs_correlation"].min() > 0.95
    np.testing.assert_allclose(explain.get_kernels(model)[:, 0], np.moveaxis(kernel, -1, 0), atol=1e-6)
    np.testing.assert_allclose(explain.mean_kernel(model), kernel.mean(-1), atol=1e-6)
    # read-out weighting: the 1x1 convolution's particle-minus-mean coefficients
    head = model.get_layer("combine_logits")
    w = np.zeros((1, 1, 3, 2), np.float32)
    w[0, 0, :, 1] = (2.0, 0.0, 0.0)
    head.set_weights([w, np.zeros(2, np.float32)])
    weighted = explain.mean_kernel(model, weighting="readout")
    assert explain.kernels.correlation(weighted, bank["log_s1.5"]) > 0.99
    fig = explain.plot_kernels(model)
    assert len([ax for ax in fig.axes if ax.images]) == 3


@pytest.mark.slow
def test_single_filter_cnn_learns_a_blob_kernel_that_match_kernels_identifies():
    """Horwath et al. 2020: the single 9×9 filter trained on particles is a smoothing/blob filter."""
    from tem_keras.data.preprocess import standardize

    samples = [make_image(64, "bright-field", seed=i) for i in range(32)]
    x = np.stack([standardize(s.image) for s in samples])[..., None].astype(np.float32)
    y = np.stack([s.mask > 0 for s in samples]).astype(np.int32)
    keras.utils.set_random_seed(0)
    model = tm.shallow_cnn(filters=1, kernel_size=9)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=150, verbose=0)  # 300 steps
    accuracy = float((model.predict(x, verbose=0).argmax(-1) == y).mean())
    assert accuracy > 0.9
    table, fig = explain.match_kernels(model, return_figure=True)
    best = table.iloc[0]
    # measured (seed 0): gaussian_s1.5, rho = +0.972, runner-up gabor_h+v+gaussian_s2.5 (0.967);
    # seeds 1, 2: gaussian_s1.5 0.972, gabor_h+v+gaussian_s2.5 0.921. A random 9x9 kernel's best
    # |rho| against the 43-filter bank: median 0.26, 99th percentile 0.40.
    assert best["family"] in ("gaussian", "log", "gabor+gaussian")
    assert best["abs_correlation"] > 0.85
    assert fig.axes


def _plain_stack(n_layers=6):
    inputs = keras.Input((None, None, 1))
    x = inputs
    for i in range(n_layers):
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    x = keras.layers.Conv2D(2, 1, name="head_logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(x))


def test_effective_receptive_field_of_plain_stack_has_the_analytic_support():
    keras.utils.set_random_seed(0)
    model = _plain_stack(6)
    erf, fig = explain.effective_receptive_field(model, return_figure=True)
    assert erf.analytic_px == 13  # 6 x (3 - 1) + 1
    assert erf.gradient.shape[0] >= 2 * 13 + 16  # far from the border: no padding effects
    assert erf.support_px == erf.analytic_px
    assert erf.size_px <= erf.support_px
    # the measured support is exactly the square of the analytic field around the centre pixel
    cy, cx = erf.centre
    nonzero = np.argwhere(erf.gradient > 0)
    assert nonzero.min(0).tolist() == [cy - 6, cx - 6] and nonzero.max(0).tolist() == [cy + 6, cx + 6]
    assert fig.axes


def test_effective_receptive_field_of_residual_unet_is_smaller_than_analytic():
    """Sytwu et al. 2022 / Luo et al. 2016: the effective field is a fraction of the theoretical one."""
    keras.utils.set_random_seed(0)
    model = tm.residual_unet(n_blocks=2, base_filters=4, pool_sizes=(4, 4))
    erf = explain.effective_receptive_field(model, n_samples=4)
    half = explain.effective_receptive_field(model, n_samples=4, fraction=0.5)
    assert erf.analytic_px == 120
    # measured: support 116 px, 95 % of the gradient mass within 99 px, 50 % within 49 px
    assert erf.support_px <= erf.analytic_px
    assert erf.size_px < erf.analytic_px
    assert half.size_px < erf.analytic_px / 2


def test_activation_maps_and_class_scores_before_softmax():
    keras.utils.set_random_seed(0)
    model = tm.unet(depth=2, base_filters=4)
    image = make_image(60, "bright-field", seed=1).image
    maps, fig = explain.activation_maps(model, image, return_figure=True)
    assert list(maps)[-1] == "class_scores" and len(maps) > 3
    scores = maps["class_scores"]
    assert scores.shape == (60, 60, 2)
    probabilities = np.asarray(model(explain._common.model_input_image(model, image)[0]))[0, :60, :60]
    softmax = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(-1, keepdims=True), probabilities, atol=1e-5)
    assert maps["bottleneck_act1"].shape[:2] == (15, 15)  # 64/4 = 16 rows, 15 of them cover the image
    assert fig.axes
    only = explain.activation_maps(model, image, layers="enc0_act1")
    assert list(only) == ["enc0_act1", "class_scores"] and only["enc0_act1"].shape == (60, 60, 4)
    np.testing.assert_allclose(explain.class_scores(model, image), scores, atol=1e-6)
    fcn = tm.fcn8s(weights=None)  # the pre-softmax tensor of FCN-8s is the aligned up-sampled score
    assert explain._common.logits_tensor(fcn)._keras_history[0].name == "upscore8_align"


def test_line_profile_across_a_step():
    from tem_keras.io import Micrograph

    image = np.zeros((20, 40), np.float32)
    image[:, 20:] = 10.0
    prob = np.zeros((20, 40, 2), np.float32)
    prob[:, 20:, 1] = 1.0
    prob[..., 0] = 1 - prob[..., 1]
    profile, fig = explain.line_profile(Micrograph(image, pixel_size_nm=0.5), prob, (10, 0), (10, 39),
                                        return_figure=True)
    assert profile.unit == "nm" and len(profile.distance) == 40
    assert profile.distance[-1] == pytest.approx(19.5)
    np.testing.assert_allclose(profile.intensity, image[10])
    np.testing.assert_allclose(profile.probability, prob[10, :, 1])
    assert fig.axes
    with pytest.raises(ValueError, match="outside"):
        explain.line_profile(image, prob, (0, 0), (25, 5))
    model = tm.shallow_cnn()
    from_model = explain.line_profile(image, model, (5, 0), (5, 39), n_points=7)
    assert from_model.unit == "px" and from_model.probability.shape == (7,)
    assert np.all((from_model.probability >= 0) & (from_model.probability <= 1))


@pytest.mark.slow
def test_cli_explain_writes_pngs_and_arrays(tmp_path, capsys):
    from tem_keras.cli import main
    from tem_keras.io import write_image

    keras.utils.set_random_seed(0)
    model_path = tmp_path / "model.keras"
    tm.unet(depth=2, base_filters=4).save(model_path)
    image_path = tmp_path / "image.tif"
    write_image(image_path, make_image(64, "bright-field", seed=2).image, 0.5)
    out = tmp_path / "out"
    expected = {"gradcam": ["gradcam.npy", "gradcam.png"],
                "kernels": ["kernels.npy", "mean_kernel.npy", "kernel_matches.csv", "kernels.png"],
                "activations": ["class_scores.npy", "activations.png", "activation_bottleneck_act1.npy"],
                "erf": ["erf.npy", "erf.png"]}
    for method, files in expected.items():
        assert main(["explain", str(model_path), str(image_path), "--method", method, "-o", str(out),
                     "--target", "all"]) == 0
        for name in files:
            assert (out / name).is_file(), (method, name)
    assert np.load(out / "gradcam.npy").shape == (64, 64)
    assert np.load(out / "kernels.npy").shape == (4, 1, 3, 3)
    assert np.load(out / "class_scores.npy").shape == (64, 64, 2)
    assert "wrote" in capsys.readouterr().out
    # nothing is overwritten without being asked; bad input is a one-line error
    assert main(["explain", str(model_path), str(image_path), "--method", "gradcam", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["explain", str(model_path), "--method", "gradcam", "-o", str(tmp_path / "o2")]) == 2
    assert "needs an image" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.keras"), str(image_path), "-o", str(out)]) == 2
