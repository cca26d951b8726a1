"""Known answers of the automatic labeller (tem_keras.autolabel) on images of known contrast and size.

Synthetic micrographs (``make_image``, 0.5 nm/px) and drawn disks: the polarity of bright-field
and HAADF images, the particle diameter at 6 and 40 px, 5-px particles kept whole, a third
phase found, and Horwath et al.'s pipeline by name giving what it gave before this labeller.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest

from tem_keras.autolabel import (auto_labels, estimate_particle_diameter, label_image,
                                 particle_diameter, particle_polarity)
from tem_keras.autolabel.morphology import fill_holes, remove_specks
from tem_keras.analysis.baselines import otsu_segment, pseudo_labels


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def _synthetic(size, mode, diameter_px, seed=0, **kw):
    from tem_keras.data.synthetic import make_image

    with warnings.catch_warnings():       # "not all particles placed" at high coverage
        warnings.simplefilter("ignore")
        return make_image(size, mode, seed=seed, pixel_size_nm=0.5,
                          particle_diameter_nm=(diameter_px / 2, 0.02 * diameter_px), **kw)


def _disks(size=96, diameter=10.0, n=12, dark=True, noise=0.08, seed=0):
    """Disks of one diameter at random places, dark (0.4) or bright (1.6) on 1.0, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), bool)
    for _ in range(n):
        cy, cx = rng.uniform(diameter, size - diameter, 2)
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2
    image = np.where(truth, 0.4 if dark else 1.6, 1.0) + noise * rng.standard_normal((size, size))
    return image.astype(np.float32), truth


@pytest.mark.parametrize("mode, expected", [("bright-field", "dark"), ("haadf", "bright")])
def test_polarity_of_bright_field_and_haadf(mode, expected):
    for seed in range(3):
        s = _synthetic(256, mode, 16, seed=seed)
        polarity, score = particle_polarity(s.image)
        assert polarity == expected, (mode, seed, score)
        assert abs(score) > 0.3
        assert auto_labels(s.image, references=False)[1].polarity == expected


def test_polarity_of_inverted_image_flips():
    image, _ = _disks(dark=True)
    assert particle_polarity(image)[0] == "dark"
    assert particle_polarity(-image)[0] == "bright"
    assert particle_polarity(2.0 - image)[0] == "bright"


@pytest.mark.parametrize("diameter, size", [(6, 256), (40, 384)])
def test_scale_estimate_within_a_quarter_of_the_particle_diameter(diameter, size):
    s = _synthetic(size, "bright-field", diameter, coverage=0.12)
    true = np.median([p["diameter_px"] for p in s.particles])
    assert true == pytest.approx(diameter, rel=0.1)
    estimate = estimate_particle_diameter(s.image, "dark")
    assert estimate == pytest.approx(true, rel=0.25)
    assert auto_labels(s.image, references=False)[1].scale_px == pytest.approx(true, rel=0.25)


def test_particle_diameter_of_drawn_disks_and_of_touching_ones():
    for d in (10, 20, 40):
        n = 3 * d
        yy, xx = np.mgrid[:n, :n]
        one = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 <= (d / 2) ** 2
        equivalent = np.sqrt(4 * one.sum() / np.pi)
        assert particle_diameter(one) == pytest.approx(equivalent, abs=1.5)
        pair = one | np.roll(one, d - 2, axis=1)        # two touching disks: still one diameter
        assert particle_diameter(pair) == pytest.approx(equivalent, abs=1.5)
    assert np.isnan(particle_diameter(np.zeros((20, 20), bool)))


def test_five_pixel_particles_survive():
    s = _synthetic(192, "bright-field", 5, coverage=0.1, contrast=0.6, dose=300)
    mask, record = auto_labels(s.image)
    assert record.scale_px < 9
    found = [np.any(mask[s.instances == p["label"]]) for p in s.particles]
    assert np.mean(found) > 0.9, f"{np.mean(found):.2f} of the 5-px particles found"
    assert _dice(mask, s.mask) > 0.75
    # the clean-up steps sized for 5-px particles keep every drawn 5-px disk whole
    _, disks = _disks(size=64, diameter=5, n=10, noise=0.0)
    area = np.pi / 4 * 25
    assert np.array_equal(fill_holes(remove_specks(disks, max(3, int(0.1 * area))), area), disks)


def test_specks_removed_and_holes_filled():
    mask = np.zeros((40, 40), bool)
    mask[5:20, 5:20] = True
    mask[10, 10] = False                  # a one-pixel hole
    mask[30, 30] = True                   # a one-pixel speck
    ring = np.zeros((40, 40), bool)
    ring[25:38, 2:15] = True
    ring[27:36, 4:13] = False             # a hole of 81 px
    cleaned = fill_holes(remove_specks(mask | ring, 3), 50)
    assert cleaned[10, 10] and not cleaned[30, 30]
    assert not cleaned[30, 8]             # the large hole stays open


def test_at_least_as_good_as_otsu_with_the_better_polarity():
    for mode, seed in (("bright-field", 1), ("haadf", 2)):
        s = _synthetic(256, mode, 14, seed=seed, illumination_gradient=0.3)
        mask, record = auto_labels(s.image)
        oracle = max(_dice(otsu_segment(s.image, sigma=1.0, particles=p), s.mask)
                     for p in ("dark", "bright"))
        assert _dice(mask, s.mask) >= oracle, (mode, record.summary())
        assert 0.0 <= record.confidence <= 1.0


def test_third_phase_is_found():
    """Small bright particles on a large grey support on a dark background (Pt on alumina)."""
    rng = np.random.default_rng(3)
    size = 192
    yy, xx = np.mgrid[:size, :size]
    support = (yy > 40) & (yy < 150)                               # a band across the field
    support &= (yy - 95) ** 2 + (xx - 100) ** 2 > 25 ** 2          # a pore
    particles = np.zeros((size, size), bool)
    for cy, cx in ((60, 40), (70, 150), (130, 60), (120, 160), (100, 50), (140, 110)):
        particles |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 5 ** 2
    image = 0.1 + 0.4 * support + 0.6 * particles + 0.05 * rng.standard_normal((size, size))
    mask, record = auto_labels(image.astype(np.float32))
    assert record.polarity == "bright" and record.phases == 3, record.summary()
    assert _dice(mask, particles) > 0.85
    two, _ = auto_labels(image.astype(np.float32), phases=2, references=False)
    assert _dice(two, particles) < 0.5                              # the support, not the particles


def test_named_horwath_pipeline_gives_what_it_gave_before():
    """Pixel counts and hashes recorded with ``pseudo_labels`` before the automatic labeller."""
    image, _ = _disks()
    for kwargs, (count, digest) in (({}, (1292, "f5b58359c92b215f")),
                                    ({"sigma": 1.0, "disk_radius": 1}, (1188, "e4443691cb22c9f1")),
                                    ({"particles": "auto"}, (1292, "f5b58359c92b215f"))):
        particles = kwargs.pop("particles", "dark")
        mask, record = label_image(image, "horwath", particles=particles, **kwargs)
        assert np.array_equal(mask, pseudo_labels(image, particles=particles, **kwargs))
        assert int(mask.sum()) == count
        assert hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16] == digest
        assert record.method == "horwath"


def test_record_and_bad_options():
    image, truth = _disks(size=128, diameter=12, n=15)
    mask, record = label_image(image)
    assert record.method == "auto" and record.polarity == "dark" and record.phases == 2
    assert _dice(mask, truth) > 0.9
    assert set(record.agreement) == {"otsu", "horwath"}
    as_json = json.loads(json.dumps(record.to_dict()))
    assert as_json["scale_px"] == pytest.approx(record.scale_px, abs=1e-3)
    assert "confidence" in record.summary()
    given, _ = auto_labels(image, particles="dark", scale_px=12.0, references=False)
    assert _dice(given, truth) > 0.9
    empty, record = auto_labels(np.ones((32, 32), np.float32))
    assert not empty.any() and record.confidence == 0.0
    with pytest.raises(Exception, match="disk_radius"):
        label_image(image, "auto", disk_radius=3)
    with pytest.raises(ValueError, match="method"):
        label_image(image, "watershed")


def test_label_command_prints_what_it_chose(tmp_path, capsys):
    from tem_keras.cli import main
    from tem_keras.io import write_image

    images = tmp_path / "frames"
    for i in range(2):
        write_image(images / f"f{i}.tif", _synthetic(128, "haadf", 10, seed=i).image)
    assert main(["label", str(images), "-o", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.startswith("f")]
    assert len(lines) == 2 and all("bright particles" in x and "confidence" in x for x in lines)
    assert "confidence median" in out.out
    assert main(["label", str(images), "-o", str(tmp_path / "ds2"), "--method", "auto",
                 "--sigma", "2"]) == 2


def test_pseudo_label_dataset_uses_the_automatic_labeller_and_keeps_horwath_by_name(tmp_path):
    from tem_keras.data.datasets import discover, read_mask
    from tem_keras.data.labelling import RECORDS_FILE, pseudo_label_dataset
    from tem_keras.io import write_image

    image, truth = _disks(size=96, diameter=10, n=10, dark=False)
    write_image(tmp_path / "DS" / "images" / "a.tif", image)
    dataset = discover(tmp_path / "DS", include_unlabelled=True)
    labelled = pseudo_label_dataset(dataset, tmp_path / "auto", particles="auto")
    mask = read_mask(labelled.samples[0].mask) > 0
    assert _dice(mask, truth) > 0.9
    record = json.loads((tmp_path / "auto" / RECORDS_FILE).read_text())["a"]
    assert record["method"] == "auto" and record["polarity"] == "bright"
    old = pseudo_label_dataset(dataset, tmp_path / "horwath", particles="bright", method="horwath")
    assert np.array_equal(read_mask(old.samples[0].mask) > 0,
                          pseudo_labels(image, particles="bright"))
    with pytest.raises(FileExistsError):
        pseudo_label_dataset(dataset, tmp_path / "auto", particles="auto")
