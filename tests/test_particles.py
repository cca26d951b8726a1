"""Known-answer tests of tem_keras.analysis.particles on drawn disks of known size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, ellipse

from tem_keras.analysis import particles
from tem_keras.errors import TEMInputError
from tem_keras.io import Micrograph

PIXEL_NM = 0.25
# (centre row, centre col, radius px), well apart and away from the border
DISKS = [(40, 40, 8), (40, 120, 12), (120, 40, 16), (130, 140, 20)]


def _draw(shape, disks):
    mask = np.zeros(shape, bool)
    for r, c, rad in disks:
        mask[disk((r, c), rad, shape=shape)] = True
    return mask


def test_count_and_diameters_in_nm():
    mask = _draw((180, 200), DISKS)
    table = particles.measure_particles(mask, PIXEL_NM)
    assert len(table) == 4
    assert list(table.columns[:len(particles.MEASUREMENT_COLUMNS)]) == list(
        particles.MEASUREMENT_COLUMNS)
    table = table.sort_values("area_px")
    radii = np.array([d[2] for d in DISKS], float)
    # skimage.draw.disk keeps pixels strictly inside the circle, so the equivalent diameter of a
    # drawn disk of radius r is 2r minus up to 1 px: tolerance +-1 px (= 0.25 nm)
    np.testing.assert_allclose(table["equivalent_diameter_px"], 2 * radii, atol=1.0)
    np.testing.assert_allclose(table["equivalent_diameter_nm"], 2 * radii * PIXEL_NM,
                               atol=1.0 * PIXEL_NM)
    np.testing.assert_allclose(table["area_nm2"], table["area_px"] * PIXEL_NM ** 2)
    # centroids exact for symmetric disks
    np.testing.assert_allclose(table[["centroid_y_px", "centroid_x_px"]].to_numpy(),
                               [[d[0], d[1]] for d in DISKS], atol=1e-9)
    np.testing.assert_allclose(table["centroid_x_nm"], table["centroid_x_px"] * PIXEL_NM)
    # disks: round, convex, not elongated
    assert table["eccentricity"].max() < 0.05
    assert np.all(np.abs(table["circularity"] - 1) < 0.1)
    assert table["solidity"].min() > 0.95
    assert not table["touches_border"].any()


def test_ellipse_axes_and_eccentricity():
    mask = np.zeros((100, 100), bool)
    mask[ellipse(50, 50, 10, 20)] = True                    # semi-axes 10 (rows) and 20 (cols)
    row = particles.measure_particles(mask, 1.0).iloc[0]
    assert row["major_axis_px"] == pytest.approx(40, abs=1.5)
    assert row["minor_axis_px"] == pytest.approx(20, abs=1.5)
    assert row["eccentricity"] == pytest.approx(np.sqrt(1 - 0.25), abs=0.02)   # 0.866
    assert row["circularity"] < 0.9


def test_touching_disks_are_split():
    # two disks of radius 15 whose centres are 26 px apart overlap by a 4-px neck
    mask = _draw((80, 120), [(40, 45, 15), (40, 71, 15)])
    assert particles.measure_particles(mask, split_touching=False).shape[0] == 1
    table = particles.measure_particles(mask, PIXEL_NM)
    assert len(table) == 2
    np.testing.assert_allclose(np.sort(table["centroid_x_px"]), [45, 71], atol=1.5)
    np.testing.assert_allclose(table["area_px"], mask.sum() / 2, rtol=0.05)
    # a single ellipse (one distance-transform ridge) is not over-split
    one = np.zeros((80, 120), bool)
    one[ellipse(40, 60, 12, 35)] = True
    assert len(particles.measure_particles(one)) == 1


def test_border_particles_and_min_area():
    mask = _draw((100, 100), [(50, 50, 10), (0, 50, 8), (50, 97, 6), (80, 20, 2)])
    # disk of radius 2 has 9 pixels; the two border disks are cut by the edge
    table = particles.measure_particles(mask, min_area=10)
    assert len(table) == 1
    assert table["centroid_y_px"].iloc[0] == pytest.approx(50)
    kept = particles.measure_particles(mask, min_area=5, exclude_border=False)
    assert len(kept) == 4
    assert kept["touches_border"].sum() == 2
    assert len(particles.measure_particles(mask, min_area=0)) == 2


def test_inputs_probabilities_class_maps_and_pixel_size():
    mask = _draw((120, 120), [(40, 40, 10), (80, 80, 12)])
    prob = np.where(mask, 0.8, 0.1)
    assert len(particles.measure_particles(prob)) == 2
    assert len(particles.measure_particles(prob, threshold=0.9)) == 0
    per_class = np.stack([1 - prob, prob], axis=-1)
    assert len(particles.measure_particles(per_class)) == 2
    classes = np.where(mask, 2, 1)                           # 1 = support, 2 = particle
    assert len(particles.measure_particles(classes, class_index=2)) == 2
    assert len(particles.measure_particles(mask.astype(np.uint8) * 255)) == 2
    # unknown pixel size: nm columns present and NaN
    table = particles.measure_particles(mask)
    assert table["equivalent_diameter_nm"].isna().all()
    assert table["equivalent_diameter_px"].notna().all()
    # pixel size and intensity from a Micrograph
    image = Micrograph(np.where(mask, 10.0, 100.0).astype(np.float32), pixel_size_nm=0.5)
    table = particles.measure_particles(mask, image=image)
    np.testing.assert_allclose(table["equivalent_diameter_nm"],
                               table["equivalent_diameter_px"] * 0.5)
    np.testing.assert_allclose(table["mean_intensity"], 10.0)
    labelled, labels = particles.measure_particles(mask, return_labels=True)
    assert labels.max() == 2 and set(np.unique(labels)) == {0, 1, 2}
    assert labels[40, 40] == 1 and labels[80, 80] == 2


def test_input_errors():
    mask = _draw((50, 50), [(25, 25, 8)])
    bad = np.where(mask, 0.9, 0.1)
    bad[0, 0] = np.nan
    with pytest.raises(TEMInputError, match="NaN"):
        particles.measure_particles(bad)
    with pytest.raises(TEMInputError, match=r"\(40, 50\).*\(50, 50\)"):
        particles.measure_particles(mask, image=np.zeros((40, 50)))
    with pytest.raises(TEMInputError, match="pixel_size_nm"):
        particles.measure_particles(mask, -1.0)
    with pytest.raises(TEMInputError):
        particles.measure_particles(np.zeros((2, 3, 4, 5)))


def test_size_distribution_recovers_lognormal():
    rng = np.random.default_rng(0)
    mu, sigma = np.log(6.0), 0.3
    sizes = rng.lognormal(mu, sigma, 4000)
    summary = particles.size_distribution(pd.DataFrame({"equivalent_diameter_nm": sizes}))
    assert summary["count"] == 4000 and summary["units"] == "nm"
    # MLE standard errors: sigma / sqrt(n) ~ 0.005 for mu, sigma / sqrt(2n) ~ 0.003 for sigma
    assert summary["lognormal_mu"] == pytest.approx(mu, abs=0.02)
    assert summary["lognormal_sigma"] == pytest.approx(sigma, abs=0.015)
    assert summary["median"] == pytest.approx(6.0, rel=0.03)
    assert summary["mean"] == pytest.approx(np.exp(mu + sigma ** 2 / 2), rel=0.02)
    assert sum(summary["counts"]) == 4000


def test_size_distribution_from_drawn_particles_and_px_fallback():
    # 30 disks of radii 5..14 px on a grid; diameters known
    radii = np.tile(np.arange(5, 15), 3)
    shape = (3 * 40, 10 * 40)
    centres = [(20 + 40 * (i // 10), 20 + 40 * (i % 10), r) for i, r in enumerate(radii)]
    table = particles.measure_particles(_draw(shape, centres))
    assert len(table) == 30
    summary = particles.size_distribution(table)         # nm column is NaN -> px column
    assert summary["column"] == "equivalent_diameter_px" and summary["units"] == "px"
    assert summary["mean"] == pytest.approx(2 * radii.mean(), abs=1.0)
    log_d = np.log(2 * radii)
    assert summary["lognormal_mu"] == pytest.approx(log_d.mean(), abs=0.05)
    assert summary["lognormal_sigma"] == pytest.approx(log_d.std(), abs=0.05)
    empty = particles.size_distribution(table.iloc[:0])
    assert empty["count"] == 0 and np.isnan(empty["mean"])


def _movie(n_frames=5):
    """Three particles drifting +2 px/frame in x and growing 1 px in radius per frame."""
    frames = []
    for t in range(n_frames):
        frames.append(_draw((120, 160), [(30, 30 + 2 * t, 8 + t), (80, 40 + 2 * t, 10 + t),
                                         (60, 110 + 2 * t, 6 + t)]))
    return frames


def test_track_particles_follows_drift_and_growth():
    tracks = particles.track_particles(_movie(), PIXEL_NM, max_distance=6)
    assert set(tracks.columns) >= {"frame", "particle", "centroid_y_px", "centroid_x_px",
                                   "equivalent_diameter_nm"}
    assert tracks["particle"].nunique() == 3
    for _, track in tracks.groupby("particle"):
        assert list(track["frame"]) == [0, 1, 2, 3, 4]
        assert track["centroid_y_px"].nunique() == 1          # same particle: same row
        np.testing.assert_allclose(np.diff(track["centroid_x_px"]), 2.0, atol=1e-9)
        growth = np.diff(track["equivalent_diameter_px"])
        np.testing.assert_allclose(growth, 2.0, atol=0.6)     # radius +1 px per frame
    # tables work as input too and give the same tracks
    tables = [particles.measure_particles(m, PIXEL_NM) for m in _movie()]
    again = particles.track_particles(tables, max_distance=6)
    pd.testing.assert_frame_equal(again, tracks)


def test_track_particles_gate_and_memory():
    frames = _movie()
    frames[2] = _draw((120, 160), [(30, 34, 10), (80, 44, 12)])   # third particle vanishes
    no_memory = particles.track_particles(frames, max_distance=6, memory=0)
    assert no_memory["particle"].nunique() == 4                   # it comes back as new
    with_memory = particles.track_particles(frames, max_distance=6, memory=1)
    assert with_memory["particle"].nunique() == 3
    lengths = sorted(with_memory.groupby("particle").size())
    assert lengths == [4, 5, 5]
    # a gate smaller than the 2-px step links nothing: every detection is its own track
    assert particles.track_particles(_movie(), max_distance=1.0)["particle"].nunique() == 15


def test_plots():
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"equivalent_diameter_nm": rng.lognormal(1.5, 0.25, 200)})
    ax = particles.plot_size_distribution(table)
    assert len(ax.patches) > 3 and len(ax.lines) == 1
    ax = particles.plot_size_vs_time(particles.track_particles(_movie(), PIXEL_NM, max_distance=6))
    assert len(ax.lines) == 3


# --------------------------------------------------------------------------------------------
# The compiled path against straightforward references
# --------------------------------------------------------------------------------------------

def _reference_labels(mask, *, min_area=10):
    """label_particles written plainly over the whole image (the specification of the compiled
    path): distance transform, peak_local_max per component, h-maxima, one watershed, then
    clear_border, min_area and numbering in raster order of the first pixel."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import clear_border, watershed

    components = label(mask, connectivity=2)
    radius = np.sqrt(np.median(np.bincount(components.ravel())[1:]) / np.pi)
    min_distance, split_depth = max(3, round(0.5 * radius)), max(1.5, 0.15 * radius)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components,
                           exclude_border=False)
    owner = components[tuple(peaks.T)]
    markers = np.zeros(mask.shape, np.int32)
    for k, box in enumerate(ndi.find_objects(components), start=1):
        inside = components[box] == k
        local = np.where(inside, distance[box], 0.0)
        offset = np.array([s.start for s in box])
        chosen, seen = [], set()
        if (owner == k).sum() >= 2:
            regions = ndi.label(h_maxima(local, split_depth).astype(bool) & inside,
                                np.ones((3, 3)))[0]
            for y, x in peaks[owner == k] - offset:
                if regions[y, x] and regions[y, x] not in seen:
                    seen.add(regions[y, x])
                    chosen.append((y, x))
        for y, x in chosen or [ndi.maximum_position(local, inside.astype(int), 1)]:
            markers[y + offset[0], x + offset[1]] = markers.max() + 1
    labels = clear_border(watershed(-distance, markers, mask=mask, connectivity=2))
    sizes = np.bincount(labels.ravel())
    labels[(sizes < min_area)[labels] & (labels > 0)] = 0
    values, first = np.unique(labels.ravel(), return_index=True)
    order = values[values > 0][np.argsort(first[values > 0])]
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[order] = np.arange(1, order.size + 1)
    return lut[labels]


def _synthetic_masks():
    from scipy import ndimage as ndi

    from tem_keras.data.synthetic import make_image

    rng = np.random.default_rng(5)
    # seed 0 has a component whose two markers have equal distance values: there a watershed
    # per component, instead of one of the whole image, would move pixels between particles
    exact = make_image(192, "bright-field", coverage=0.35, touching_fraction=0.6, seed=0).mask
    noisy = ndi.gaussian_filter(exact.astype(float), 1.2) + rng.normal(0, 0.2, exact.shape)
    blobs = ndi.gaussian_filter(rng.random((160, 160)), 2.5)
    # labyrinth: one component over most of the image with hundreds of peaks, beside specks
    # (what a barely trained model gives)
    labyrinth = rng.random((160, 160)) < np.where(np.arange(160) < 100, 0.75, 0.08)
    return {"exact mask": exact, "noisy probabilities": np.clip(noisy, 0, 1) >= 0.5,
            "blobs": blobs > np.quantile(blobs, 0.7), "random pixels": rng.random((96, 96)) < 0.4,
            "labyrinth": labyrinth}


@pytest.mark.parametrize("name", ["exact mask", "noisy probabilities", "blobs", "random pixels",
                                  "labyrinth"])
def test_labels_equal_the_whole_image_reference(name):
    mask = _synthetic_masks()[name]
    labels = particles.label_particles(mask)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, _reference_labels(mask))
    assert labels.max() >= {"random pixels": 1, "labyrinth": 2}.get(name, 10)


def test_measurements_equal_regionprops():
    """Integer-based columns are regionprops' exactly; moment-based ones within rounding: the
    documented tolerances (axes 1e-12 relative, eccentricity 1e-7 absolute, mean intensity
    1e-12 relative)."""
    from skimage.measure import regionprops_table

    rng = np.random.default_rng(2)
    for mask in _synthetic_masks().values():
        image = rng.random(mask.shape) * 100
        table, labels = particles.measure_particles(mask, 0.5, image=image, min_area=0,
                                                    exclude_border=False, return_labels=True)
        ref = regionprops_table(labels, intensity_image=image, properties=[
            "label", "centroid", "area", "equivalent_diameter_area", "perimeter", "solidity",
            "axis_major_length", "axis_minor_length", "eccentricity", "intensity_mean"])
        exact = {"label": "label", "centroid-0": "centroid_y_px", "centroid-1": "centroid_x_px",
                 "area": "area_px", "equivalent_diameter_area": "equivalent_diameter_px",
                 "solidity": "solidity"}
        for key, column in exact.items():
            np.testing.assert_array_equal(table[column], ref[key], err_msg=column)
        np.testing.assert_allclose(table["major_axis_px"], ref["axis_major_length"], rtol=1e-12)
        np.testing.assert_allclose(table["minor_axis_px"], ref["axis_minor_length"], rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(table["eccentricity"], ref["eccentricity"], atol=1e-7)
        np.testing.assert_allclose(table["mean_intensity"], ref["intensity_mean"], rtol=1e-12)


def _smoothed_contour(region):
    """Length of find_contours' 0.5 contour of the region smoothed by a 1 px Gaussian, and the
    area inside it (shoelace): the reference of the perimeter and circularity."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import find_contours

    length = area = 0.0
    for contour in find_contours(gaussian_filter(np.pad(region.astype(float), 6), 1.0), 0.5):
        y, x = contour[:, 0], contour[:, 1]
        length += np.hypot(np.diff(y), np.diff(x)).sum()
        area += 0.5 * (x[:-1] @ y[1:] - x[1:] @ y[:-1])
    return length, abs(area)


def test_perimeter_is_the_smoothed_contour_and_circularity_at_most_one():
    for name, mask in _synthetic_masks().items():
        table, labels = particles.measure_particles(mask, min_area=0, exclude_border=False,
                                                    return_labels=True)
        assert table["circularity"].max() <= 1, name
        for row in table.itertuples():
            length, area = _smoothed_contour(labels == row.label)
            if area >= 0.5 * row.area_px:  # not thinned away by the smoothing
                assert row.perimeter_px == pytest.approx(length, rel=1e-9, abs=1e-9), name
                assert row.circularity == pytest.approx(4 * np.pi * area / length ** 2, rel=1e-8)


def test_circularity_of_disks_squares_and_lines():
    # digitised disks of radius 3..50 px (pixel centres within r): within 2.5 % of 1, never above
    for radius in [3, 3.5, 4, 4.5, 5, 6, 7, 8, 10, 12.5, 15, 20, 25, 30, 40, 50]:
        n = int(2 * radius) + 12
        yy, xx = np.mgrid[:n, :n] - n // 2
        table = particles.measure_particles(yy ** 2 + xx ** 2 <= radius ** 2, 1.0, split_touching=False)
        assert len(table) == 1
        assert 0.975 <= table["circularity"].iloc[0] <= 1, radius
        if radius >= 10:  # the smoothing shrinks smaller disks by up to 7 %
            assert table["perimeter_px"].iloc[0] == pytest.approx(
                np.pi * table["equivalent_diameter_px"].iloc[0], rel=0.02)
    square = np.zeros((60, 60), bool)
    square[10:50, 10:50] = True
    row = particles.measure_particles(square, 1.0, split_touching=False).iloc[0]
    assert row["circularity"] == pytest.approx(np.pi / 4, rel=0.05)  # corners rounded by 1 px
    assert row["perimeter_px"] == pytest.approx(160, rel=0.03)
    # a line 1 px wide (thinned away by the smoothing): its unsmoothed contour, 2 x 20 px long
    line = np.zeros((10, 30), bool)
    line[5, 5:25] = True
    row = particles.measure_particles(line, 1.0, split_touching=False).iloc[0]
    assert row["perimeter_px"] == pytest.approx(2 * 19 + 2 * np.sqrt(2))
    assert 0 < row["circularity"] < 0.2


def test_known_disks_measured_exactly():
    # disks of known radii at known places; two touching pairs (centres 2r - 4 px apart)
    singles = [(30, 30, 6), (30, 90, 9), (100, 40, 12), (40, 160, 5)]
    pairs = [((110, 120, 14), (110, 144, 14)), ((170, 50, 10), (170, 66, 10))]
    shape = (200, 200)
    mask = _draw(shape, singles + [d for pair in pairs for d in pair])
    table = particles.measure_particles(mask, PIXEL_NM)
    assert len(table) == len(singles) + 2 * len(pairs)           # every pair split in two
    for r, c, rad in singles:
        row = table.iloc[int(np.argmin(np.hypot(table.centroid_y_px - r, table.centroid_x_px - c)))]
        pixels = np.count_nonzero(_draw(shape, [(r, c, rad)]))
        assert row["area_px"] == pixels
        assert row["equivalent_diameter_px"] == (4 * pixels / np.pi) ** 0.5
        assert (row["centroid_y_px"], row["centroid_x_px"]) == (r, c)
        assert row["area_nm2"] == pytest.approx(pixels * PIXEL_NM ** 2, rel=1e-12)
    for left, right in pairs:
        halves = table[np.abs(table.centroid_y_px - left[0]) < 1.5]
        assert len(halves) == 2
        np.testing.assert_allclose(np.sort(halves.centroid_x_px), [left[1], right[1]], atol=1.5)
        union = np.count_nonzero(_draw(shape, [left, right]))
        assert halves.area_px.sum() == union
        np.testing.assert_allclose(halves.area_px, union / 2, rtol=0.05)


def test_split_depth_must_be_positive():
    with pytest.raises(ValueError, match="split_depth"):
        particles.label_particles(_draw((60, 60), [(30, 30, 8)]), split_depth=0)
