"""Tests of tem_keras.analysis.baselines on drawn images with known particles and on a real micrograph."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import filters, morphology
from skimage.draw import disk

from tem_keras.analysis import baselines
from tem_keras.errors import TEMInputError

AU_EMD = "formats/temul_toolkit_experimental/example_Au_nanoparticle.emd"


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _dark_disks(shape=(256, 256), seed=0, noise=0.15):
    """Dark disks (0.3) on a brighter (0.7) noisy background; none touches the border."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, bool)
    placed = []
    while len(placed) < 8:
        r = rng.uniform(9, 18)
        c = rng.uniform(r + 6, np.array(shape) - r - 6)
        if all(np.hypot(*(c - pc)) > r + pr + 4 for pc, pr in placed):
            placed.append((c, r))
            truth[disk(tuple(c), r, shape=shape)] = True
    image = np.where(truth, 0.3, 0.7) + rng.normal(0, noise, shape)
    return image.astype(np.float32), truth


def _reference_pseudo_labels(image, sigma=2.0, disk_radius=3, particles="dark",
                             return_contrast=False):
    """The pseudo-label steps written plainly with scikit-image (float64 throughout)."""
    g = filters.gaussian(np.asarray(image, np.float64), sigma=sigma)
    f = (g - g.min()) / (g.max() - g.min())
    if particles == "dark":
        f = 1.0 - f
    seed = f.copy()
    seed[1:-1, 1:-1] = f.min()
    dilated = morphology.reconstruction(seed, f, method="dilation")
    seed = f.copy()
    seed[1:-1, 1:-1] = f.max()
    eroded = morphology.reconstruction(seed, f, method="erosion")
    contrast = (f - dilated) - (eroded - f) + filters.sobel(f)
    contrast = morphology.opening(contrast, morphology.disk(disk_radius))
    labels = contrast > filters.threshold_otsu(contrast)
    return (labels, contrast) if return_contrast else labels


@pytest.fixture(scope="module")
def au_crop(shared_data):
    path = shared_data / AU_EMD
    if not path.exists():
        pytest.skip(f"{path} is not present")
    from rsciio.emd import file_reader

    data = file_reader(str(path))[0]["data"].astype(np.float32)
    return data[580:1220, 1180:1820]        # 640x640 around the isolated particle, 7.5 pm/px


# --------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dilation", "erosion"])
def test_reconstruct_from_border_equals_skimage(method):
    rng = np.random.default_rng(4)
    image = filters.gaussian(rng.random((61, 83)), 1.5)
    seed = image.copy()
    seed[1:-1, 1:-1] = image.min() if method == "dilation" else image.max()
    expected = morphology.reconstruction(seed, image, method=method)
    ours = baselines.reconstruct_from_border(image, method, levels=65536)
    step = (image.max() - image.min()) / 65535
    np.testing.assert_allclose(ours, expected, atol=step)
    # on an image that is already quantised the result is identical
    q = np.round(image / image.max() * 255)
    seed = q.copy()
    seed[1:-1, 1:-1] = q.min() if method == "dilation" else q.max()
    exact = morphology.reconstruction(seed, q, method=method)
    levels = baselines.reconstruct_from_border(q - q.min(), method, levels=256) + q.min()
    if q.max() - q.min() == 255:
        np.testing.assert_array_equal(levels, exact)
    # domes are removed / basins filled, and the result is bounded by the image
    if method == "dilation":
        assert np.all(ours <= image + step)
    else:
        assert np.all(ours >= image - step)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_border_reconstructions_identical_to_skimage(dtype):
    """The compiled hybrid algorithm gives skimage's result exactly, on every shape and texture:
    single rows and columns, noise (many small domes), smooth images (large domes, long
    propagation) and plateaus (ties)."""
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2), (3, 50), (50, 3)] + \
        [tuple(rng.integers(4, 70, 2)) for _ in range(30)]
    for i, shape in enumerate(shapes):
        image = rng.random(shape)
        if i % 3 == 1:
            image = filters.gaussian(image, rng.uniform(1, 4))
        elif i % 3 == 2:
            image = np.round(filters.gaussian(image, 2) * 6) / 6      # plateaus
        image = np.round((image - image.min()) / max(np.ptp(image), 1e-12) * top).astype(dtype)
        dilated, eroded = baselines._border_reconstructions(image, ("dilation", "erosion"))
        for method, ours in (("dilation", dilated), ("erosion", eroded)):
            seed = image.copy()
            if min(shape) > 2:
                seed[1:-1, 1:-1] = image.min() if method == "dilation" else image.max()
            expected = morphology.reconstruction(seed, image, method=method)
            assert ours.dtype == dtype and ours.shape == shape
            np.testing.assert_array_equal(ours, expected, err_msg=f"{method} {shape}")


def test_reconstruction_removes_interior_domes_only():
    image = np.zeros((40, 40), np.float32)
    image[10:20, 10:20] = 5.0           # interior dome
    image[0:8, 30:40] = 3.0             # plateau on the border: kept
    rec = baselines.reconstruct_from_border(image, "dilation")
    assert np.all(rec[10:20, 10:20] == 0)
    np.testing.assert_allclose(rec[0:8, 30:40], 3.0, atol=5 / 255)
    filled = baselines.reconstruct_from_border(-image, "erosion")
    np.testing.assert_allclose(filled[10:20, 10:20], 0.0, atol=5 / 255)


# --------------------------------------------------------------------------------------------
# Otsu and pseudo-labels on drawn particles
# --------------------------------------------------------------------------------------------

def test_otsu_segment_finds_dark_disks():
    image, truth = _dark_disks()
    assert _dice(baselines.otsu_segment(image, particles="dark"), truth) > 0.9
    assert _dice(baselines.otsu_segment(image, particles="auto"), truth) > 0.9
    # wrong polarity selects the background
    assert _dice(baselines.otsu_segment(image, particles="bright"), truth) < 0.2
    # bright particles (HAADF-like)
    assert _dice(baselines.otsu_segment(1 - image, particles="bright"), truth) > 0.9


def test_pseudo_labels_find_dark_disks_and_match_reference():
    image, truth = _dark_disks(shape=(320, 288), seed=1, noise=0.2)
    labels = baselines.pseudo_labels(image, particles="dark")
    assert labels.dtype == bool and labels.shape == image.shape
    assert _dice(labels, truth) > 0.9
    assert _dice(baselines.pseudo_labels(1 - image, particles="bright"), truth) > 0.9
    assert _dice(baselines.pseudo_labels(image, particles="auto"), truth) > 0.9
    reference, reference_contrast = _reference_pseudo_labels(image, return_contrast=True)
    assert _dice(labels, reference) >= 0.99
    mask, contrast, level = baselines.pseudo_labels(image, return_contrast=True)
    np.testing.assert_array_equal(mask, contrast > level)
    _assert_same_contrast(image, "dark", contrast, reference_contrast)


def _assert_same_contrast(image, particles, contrast_256, reference_contrast):
    """The thresholded images agree to the quantisation: f, D and E are each within half a grey
    level, so (f - D) - (E - f) is within 2 levels (opening does not increase the error)."""
    np.testing.assert_allclose(contrast_256, reference_contrast, rtol=0, atol=2 / 255 + 1e-4)
    _, contrast_16, _ = baselines.pseudo_labels(image, particles=particles, levels=65536,
                                                return_contrast=True)
    np.testing.assert_allclose(contrast_16, reference_contrast, rtol=0, atol=2 / 65535 + 1e-4)


def test_input_validation():
    with pytest.raises(TEMInputError, match="2-D"):
        baselines.otsu_segment(np.zeros((4, 5, 6)))
    bad = np.ones((20, 20), np.float32)
    bad[3, 3] = np.nan
    for func in (baselines.otsu_segment, baselines.pseudo_labels, baselines.fourier_filter):
        with pytest.raises(TEMInputError, match="NaN"):
            func(bad)
    with pytest.raises(TEMInputError, match="particles"):
        baselines.pseudo_labels(np.ones((20, 20)), particles="grey")
    with pytest.raises(TEMInputError, match="band"):
        baselines.fourier_filter(np.random.default_rng(0).random((64, 64)), band=(0.3, 0.1))


# --------------------------------------------------------------------------------------------
# Fourier (Bragg) filter
# --------------------------------------------------------------------------------------------

def _lattice_disks(shape=(256, 256), period=8.0, seed=0):
    """Disks holding cosine fringes of one period (random orientation per disk) in amorphous,
    low-pass noise of the same variance and mean outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    truth = np.zeros(shape, bool)
    image = filters.gaussian(rng.normal(0, 1, shape), 1.0)
    image = image / image.std() * 0.7
    for (r, c, rad) in [(70, 70, 38), (80, 185, 32), (185, 120, 42)]:
        inside = np.zeros(shape, bool)
        inside[disk((r, c), rad, shape=shape)] = True
        angle = rng.uniform(0, np.pi)
        fringes = np.cos(2 * np.pi / period * (np.cos(angle) * xx + np.sin(angle) * yy))
        image[inside] = fringes[inside]
        truth |= inside
    image += rng.normal(0, 0.3, shape)
    return image.astype(np.float32), truth


def test_fourier_filter_finds_lattice_regions():
    image, truth = _lattice_disks()
    mask, details = baselines.fourier_filter(image, return_filtered=True)
    low, high = details["band"]
    assert low <= 1 / 8 <= high                      # the lattice frequency is in the band
    assert high - low < 0.1
    assert _dice(mask, truth) > 0.8
    assert details["amplitude"].shape == image.shape
    # a band away from the lattice frequency finds nothing meaningful
    off = baselines.fourier_filter(image, band=(0.3, 0.35))
    assert _dice(off, truth) < 0.6
    given = baselines.fourier_filter(image, band=(0.11, 0.14))
    assert _dice(given, truth) > 0.8


def test_fourier_filter_ignores_non_periodic_edges():
    # a strong intensity ramp makes opposite edges jump; the FFT would see a bright cross
    # (without the periodic-plus-smooth decomposition the whole frame lights up: dice 0.34)
    image, truth = _lattice_disks(period=12, seed=5)
    ramp = np.linspace(0, 10, image.shape[1], dtype=np.float32)[None, :]
    mask = baselines.fourier_filter(image + ramp + ramp.T)
    assert _dice(mask, truth) > 0.8
    edges = np.concatenate([mask[:, :4].ravel(), mask[:, -4:].ravel(), mask[:4].ravel(),
                            mask[-4:].ravel()])
    assert edges.mean() < 0.1


def test_radial_power_spectrum_peak():
    image, _ = _lattice_disks(period=10.0, seed=2)
    frequency, power = baselines.radial_power_spectrum(image)
    assert frequency[0] == 0 and frequency[-1] == pytest.approx(0.5)
    search = frequency > 0.05
    peak = frequency[search][np.argmax(power[search])]
    assert peak == pytest.approx(0.1, abs=2 / 256)


# --------------------------------------------------------------------------------------------
# Real micrograph (HAADF-STEM of Au particles, bright)
# --------------------------------------------------------------------------------------------

def test_baselines_on_real_micrograph(au_crop):
    for mask in (baselines.otsu_segment(au_crop, particles="bright"),
                 baselines.pseudo_labels(au_crop, particles="bright"),
                 baselines.fourier_filter(au_crop)):
        assert mask.shape == au_crop.shape and mask.dtype == bool
        assert 0.01 < mask.mean() < 0.99
    # the isolated particle in the middle of the crop is bright and labelled
    labels = baselines.pseudo_labels(au_crop, particles="bright")
    assert labels[300:340, 300:340].mean() > 0.9
    assert baselines.otsu_segment(au_crop, particles="auto").shape == au_crop.shape


def test_pseudo_labels_match_reference_on_real_crop(au_crop):
    ours, contrast, _ = baselines.pseudo_labels(au_crop, particles="bright", return_contrast=True)
    reference, reference_contrast = _reference_pseudo_labels(au_crop, particles="bright",
                                                             return_contrast=True)
    assert _dice(ours, reference) >= 0.99
    _assert_same_contrast(au_crop, "bright", contrast, reference_contrast)


def test_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from tem_keras.analysis import baselines, metrics, particles\n"
            "baselines.pseudo_labels(np.random.rand(40, 40))\n"
            "particles.measure_particles(np.random.rand(40, 40) > 0.5)\n"
            "metrics.threshold_curve(np.random.rand(8, 8), np.random.rand(8, 8) > 0.5)\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
