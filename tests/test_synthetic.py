"""Known-answer tests of the synthetic micrograph generator (tem_keras.data.synthetic)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from tem_keras.data.synthetic import make_dataset, make_image, make_stack

MODES = ("bright-field", "haadf", "hrtem")


def _inner_regions(instances):
    """regionprops of instances whose bounding box does not touch the image border."""
    h, w = instances.shape
    return [r for r in regionprops(instances)
            if r.bbox[0] > 0 and r.bbox[1] > 0 and r.bbox[2] < h and r.bbox[3] < w]


# ------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("mode", MODES)
def test_mask_instances_and_requested_count(mode):
    n = 3 if mode == "hrtem" else 25
    s = make_image((160, 192), mode, n_particles=n, pixel_size_nm=0.45 if mode != "hrtem" else 0.03,
                   seed=1)
    assert s.image.shape == s.mask.shape == s.instances.shape == (160, 192)
    assert s.image.dtype == np.float32 and s.mask.dtype == np.uint8
    assert s.instances.dtype == np.int32
    np.testing.assert_array_equal(s.mask, (s.instances > 0).astype(np.uint8))
    assert set(np.unique(s.instances)) == set(range(n + 1))       # every particle has pixels
    assert [r["label"] for r in s.particles] == list(range(1, n + 1))
    assert s.pixel_size_nm == s.params["pixel_size_nm"] == (0.45 if mode != "hrtem" else 0.03)
    assert s.mode == mode
    # centres inside the frame and on their own instance
    for r in s.particles:
        assert 0 <= r["y_px"] <= 159 and 0 <= r["x_px"] <= 191
        assert s.instances[int(round(r["y_px"])), int(round(r["x_px"]))] == r["label"]


def test_diameters_centres_and_contacts_match_the_pixels():
    s = make_image(256, "bright-field", n_particles=60, touching_fraction=0.3, ellipticity=0.3,
                   seed=7)
    records = {r["label"]: r for r in s.particles}
    touching = {lab for lab, r in records.items() if r["touching"]}
    assert len(touching) >= 4, "touching_fraction=0.3 should give several touching particles"
    checked = 0
    for region in _inner_regions(s.instances):
        rec = records[region.label]
        if rec["touching"]:
            continue
        assert abs(region.equivalent_diameter_area - rec["diameter_px"]) < 1.0, rec
        assert abs(region.equivalent_diameter_area * s.pixel_size_nm - rec["diameter_nm"]) \
            < s.pixel_size_nm
        assert np.hypot(region.centroid[0] - rec["y_px"], region.centroid[1] - rec["x_px"]) < 0.6
        checked += 1
    assert checked >= 15
    # touching particles merge in the binary mask; the others are isolated blobs
    components = label(s.mask, connectivity=2)
    for lab, rec in records.items():
        comp = components[s.instances == lab]
        assert np.all(comp == comp[0])
        partners = rec["touching"]
        members = set(np.unique(s.instances[components == comp[0]])) - {0}
        if partners:
            assert set(partners) <= members
        else:
            assert members == {lab}


def test_ellipse_axes_and_orientation_match_the_pixels():
    s = make_image(256, "haadf", n_particles=20, touching_fraction=0.0, ellipticity=0.5,
                   irregularity=0.0, particle_diameter_nm=(14, 2), seed=3)
    records = {r["label"]: r for r in s.particles}
    for region in _inner_regions(s.instances):
        rec = records[region.label]
        assert abs(region.axis_major_length - rec["major_axis_nm"] / s.pixel_size_nm) < 1.5
        assert abs(region.axis_minor_length - rec["minor_axis_nm"] / s.pixel_size_nm) < 1.5
        if rec["major_axis_nm"] > 1.15 * rec["minor_axis_nm"]:
            # skimage: angle between row axis and major axis; ours: from the x axis, y down
            measured = np.degrees(np.pi / 2 - region.orientation) % 180
            diff = abs(measured - rec["orientation_deg"] % 180)
            assert min(diff, 180 - diff) < 8


def test_log_normal_size_distribution():
    s = make_image(768, "haadf", particle_diameter_nm=(10.0, 2.5), pixel_size_nm=0.5,
                   n_particles=300, dose=None, seed=11)
    d = np.array([r["diameter_nm"] for r in s.particles])
    assert abs(d.mean() - 10.0) < 3 * 2.5 / np.sqrt(d.size)
    assert 2.0 < d.std() < 3.0
    assert (d > d.mean()).mean() < 0.5                         # right-skewed: median < mean


def test_too_many_particles_is_a_clear_error():
    with pytest.raises(ValueError, match="could not place"):
        make_image(64, "bright-field", n_particles=200, seed=0)
    with pytest.raises(ValueError, match="mode"):
        make_image(64, "cryo", seed=0)
    with pytest.raises(ValueError, match="Nyquist"):
        make_image(64, "hrtem", pixel_size_nm=0.2, seed=0)


def test_the_free_spot_search_is_the_all_pairs_test():
    """The k-d tree search of the last-resort placement flags exactly the proposals that a
    comparison with every placed particle flags (also after particles are added to it)."""
    from tem_keras.data.synthetic.shapes import FreeSpots

    rng = np.random.default_rng(3)
    n = 900
    ys, xs = rng.uniform(0, 300, n), rng.uniform(0, 300, n)
    bound = rng.uniform(1.0, 6.0, n)
    placed = rng.random(n) < 0.6
    free = FreeSpots(ys, xs, bound, placed)
    for extra in np.flatnonzero(~placed)[:300]:  # past one rebuild of the tree
        placed[extra] = True
        free.add(int(extra))
    py, px = rng.uniform(0, 300, 512), rng.uniform(0, 300, 512)
    done = np.flatnonzero(placed)
    expected = np.any(np.hypot(py[:, None] - ys[done], px[:, None] - xs[done]) < bound[done] + 2.5 + FreeSpots.gap, axis=1)
    assert 0 < expected.sum() < len(py)
    np.testing.assert_array_equal(free.clash(py, px, 2.5), expected)


def test_dense_tiny_particles_are_placed_apart():
    """A coverage that does not fit leaves hundreds of particles that never come closer than the
    gap (their bounding circles hold circles of their equivalent diameters)."""
    import warnings

    from tem_keras.data.synthetic.shapes import FreeSpots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = make_image(192, "haadf", seed=5, particle_diameter_nm=(2.2, 0.3), pixel_size_nm=0.5, coverage=0.35,
                       touching_fraction=0.0)
    table = s.table()
    assert len(table) > 300
    y, x, d = table["y_px"].to_numpy(), table["x_px"].to_numpy(), table["diameter_px"].to_numpy()
    gap = np.hypot(y[:, None] - y, x[:, None] - x) - (d[:, None] + d) / 2
    np.fill_diagonal(gap, np.inf)
    assert gap.min() >= FreeSpots.gap - 1e-9


# ------------------------------------------------------------------------------------- contrast
def _particle_and_background_means(s):
    core = ndi.binary_erosion(s.mask, iterations=2)
    far = ~ndi.binary_dilation(s.mask, iterations=4)
    return s.image[core].mean(), s.image[far].mean()


def test_contrast_sign_per_mode():
    bf = make_image(256, "bright-field", low_contrast_fraction=0.0, seed=2)
    haadf = make_image(256, "haadf", low_contrast_fraction=0.0, seed=2)
    hrtem = make_image(384, "hrtem", n_particles=5, low_contrast_fraction=0.0, seed=2)
    p, b = _particle_and_background_means(bf)
    assert p < 0.8 * b
    p, b = _particle_and_background_means(haadf)
    assert p > 1.5 * b
    p, b = _particle_and_background_means(hrtem)
    assert abs(p - b) < 0.1 * b                 # HRTEM: only slightly different mean intensity
    # background ~ dose (counts-like units)
    assert abs(bf.image[~ndi.binary_dilation(bf.mask, iterations=4)].mean()
               - bf.params["dose"]) < 0.1 * bf.params["dose"]


def test_low_contrast_particles_are_fainter():
    s = make_image(384, "haadf", n_particles=60, low_contrast_fraction=0.5, dose=None,
                   touching_fraction=0.0, particle_diameter_nm=(8, 0.5), background_texture=0,
                   illumination_gradient=0, seed=4)
    peak = ndi.maximum(s.image, s.instances, [r["label"] for r in s.particles]) - 1.0
    low = np.array([r["low_contrast"] for r in s.particles])
    assert low.any() and (~low).any()
    assert peak[low].max() < peak[~low].min()


@pytest.mark.parametrize("mode, dose", [("bright-field", 150.0), ("haadf", 40.0)])
def test_poisson_noise_on_a_flat_support(mode, dose):
    s = make_image(256, mode, n_particles=0, background_texture=0.0, illumination_gradient=0.0,
                   dose=dose, seed=5)
    assert s.mask.sum() == 0
    mean, var = s.image.mean(), s.image.var()
    assert abs(mean - dose) < 0.02 * dose
    assert 0.93 < var / mean < 1.07                              # Poisson: variance = mean
    assert np.all(s.image == np.round(s.image))                  # counts


def test_no_dose_means_no_noise():
    flat = make_image(128, "bright-field", n_particles=0, background_texture=0.0,
                      illumination_gradient=0.0, dose=None, seed=5)
    assert np.ptp(flat.image) < 1e-5 and abs(flat.image.mean() - 1.0) < 1e-5
    clean = make_image(128, "haadf", n_particles=6, dose=None, seed=6)
    noisy = make_image(128, "haadf", n_particles=6, dose=1e4, seed=6)
    np.testing.assert_array_equal(clean.instances, noisy.instances)   # same particles
    residual = noisy.image / 1e4 - clean.image
    assert 0.5 < residual.std() / np.sqrt(clean.image.mean() / 1e4) < 1.5


# --------------------------------------------------------------------------------------- HRTEM
@pytest.mark.parametrize("spacing_nm", [0.235, 0.31])
def test_hrtem_fringes_at_the_lattice_spacing(spacing_nm):
    px = 0.03
    for seed in range(20):     # a particle far enough from the edges for a 88 px square inside
        s = make_image(320, "hrtem", pixel_size_nm=px, n_particles=1,
                       particle_diameter_nm=(6.0, 0.0), lattice_spacing_nm=spacing_nm,
                       ellipticity=0.0, seed=seed)
        # the largest square inside the particle (the image edge counts as its boundary)
        inside = ndi.distance_transform_edt(np.pad(s.mask, 1))[1:-1, 1:-1]
        cy, cx = np.unravel_index(np.argmax(inside), inside.shape)
        half = min(48, int(inside[cy, cx] / np.sqrt(2)) - 1)
        if half >= 44:
            break
    assert half >= 44
    rec = s.particles[0]
    crop = s.image[cy - half:cy + half, cx - half:cx + half].astype(float)
    assert s.mask[cy - half:cy + half, cx - half:cx + half].all()
    window = np.hanning(2 * half)[:, None] * np.hanning(2 * half)[None, :]
    n_fft = 8 * half                                 # zero padding x4: sub-bin peak position
    power = np.abs(np.fft.fftshift(np.fft.fft2((crop - crop.mean()) * window, s=(n_fft, n_fft))))
    k = np.fft.fftshift(np.fft.fftfreq(n_fft, d=px))             # nm^-1
    ky, kx = np.meshgrid(k, k, indexing="ij")
    power[np.hypot(ky, kx) < 1.5] = 0                            # ignore the particle envelope
    iy, ix = np.unravel_index(np.argmax(power), power.shape)
    k_peak = np.hypot(ky[iy, ix], kx[iy, ix])
    bin_width = 1.0 / (2 * half * px)                            # one bin of the unpadded crop
    assert abs(k_peak - 1.0 / spacing_nm) <= 0.4 * bin_width
    angle = np.degrees(np.arctan2(ky[iy, ix], kx[iy, ix])) % 180
    diff = abs(angle - rec["fringe_angle_deg"] % 180)
    assert min(diff, 180 - diff) < 6


def test_fringes_can_be_switched_off_and_are_absent_elsewhere():
    s = make_image(128, "bright-field", seed=0)
    assert all(np.isnan(r["fringe_angle_deg"]) for r in s.particles)
    h = make_image(128, "hrtem", lattice_spacing_nm=0, n_particles=1, seed=0)
    assert np.isnan(h.particles[0]["fringe_angle_deg"])


# --------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_image_different_seed_different(mode):
    a = make_image(96, mode, seed=12)
    b = make_image(96, mode, seed=12)
    c = make_image(96, mode, seed=13)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert a.table().equals(b.table())
    assert not np.array_equal(a.image, c.image)
    g = make_image(96, mode, seed=np.random.default_rng(12))
    np.testing.assert_array_equal(a.image, g.image)


def test_size_may_be_rectangular():
    s = make_image((64, 200), "haadf", n_particles=4, seed=0)
    assert s.image.shape == (64, 200)


# ---------------------------------------------------------------------------------- make_dataset
def _pixel_size_from_tiff(path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
        return tif.asarray(), den / num


def test_make_dataset_writes_images_masks_and_metadata(tmp_path):
    from skimage.io import imread

    import tem_keras

    out = make_dataset(tmp_path / "synth", n_images=3, size=80, mode="haadf", pixel_size_nm=0.4,
                       seed=21, n_particles=5)
    assert out == tmp_path / "synth"
    stems = [f"synthetic_{i:03d}" for i in range(3)]
    assert sorted(p.stem for p in (out / "images").iterdir()) == stems
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{s}.png" for s in stems]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["mode"] == "haadf" and meta["n_images"] == 3
    assert meta["pixel_size_nm"] == pytest.approx(0.4)
    assert meta["classes"] == {"0": "background", "1": "particle"}
    assert meta["generator"]["seed"] == 21 and meta["generator"]["n_particles"] == 5
    assert meta["generator"]["tem_keras_version"] == tem_keras.__version__
    assert meta["particles"] == {s: 5 for s in stems}
    for stem in stems:
        image, pixel = _pixel_size_from_tiff(out / "images" / f"{stem}.tif")
        mask = imread(out / "masks" / f"{stem}.png")
        assert image.dtype == np.float32 and image.shape == (80, 80)
        assert pixel == pytest.approx(0.4, rel=1e-5)
        assert set(np.unique(mask)) == {0, 1}
        # the image and mask belong together: particles are brighter (HAADF)
        assert image[mask == 1].mean() > image[mask == 0].mean()
    # regenerating the same data set gives the same files
    again = make_dataset(tmp_path / "again", n_images=3, size=80, mode="haadf",
                         pixel_size_nm=0.4, seed=21, n_particles=5)
    for stem in stems:
        np.testing.assert_array_equal(_pixel_size_from_tiff(out / "images" / f"{stem}.tif")[0],
                                      _pixel_size_from_tiff(again / "images" / f"{stem}.tif")[0])


def test_make_dataset_child_seeds_keep_earlier_images(tmp_path):
    small = make_dataset(tmp_path / "a", n_images=2, size=64, seed=3, n_particles=4)
    large = make_dataset(tmp_path / "b", n_images=4, size=64, seed=3, n_particles=4)
    for i in range(2):
        a = _pixel_size_from_tiff(small / "images" / f"synthetic_{i:03d}.tif")[0]
        b = _pixel_size_from_tiff(large / "images" / f"synthetic_{i:03d}.tif")[0]
        np.testing.assert_array_equal(a, b)
    first = _pixel_size_from_tiff(large / "images" / "synthetic_000.tif")[0]
    second = _pixel_size_from_tiff(large / "images" / "synthetic_001.tif")[0]
    assert not np.array_equal(first, second)
    # a neighbouring root seed does not reuse the same images shifted by one
    other = make_dataset(tmp_path / "c", n_images=1, size=64, seed=4, n_particles=4)
    shifted = _pixel_size_from_tiff(other / "images" / "synthetic_000.tif")[0]
    assert not np.array_equal(second, shifted)


def test_make_dataset_refuses_a_non_empty_folder(tmp_path):
    target = tmp_path / "data"
    make_dataset(target, n_images=3, size=48, seed=0, n_particles=2)
    with pytest.raises(FileExistsError, match="data"):
        make_dataset(target, n_images=2, size=48, seed=1, n_particles=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        make_dataset(tmp_path / "mine", n_images=1, size=48, seed=0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    make_dataset(target, n_images=2, size=48, seed=1, n_particles=2, overwrite=True)
    assert len(list((target / "images").iterdir())) == 2          # stale third image removed
    assert json.loads((target / "dataset.json").read_text())["generator"]["seed"] == 1


# ------------------------------------------------------------------------------------ make_stack
def test_make_stack_tracks_match_masks_under_ripening():
    frames, masks, tracks = make_stack(12, 160, "bright-field", n_particles=14,
                                       particle_diameter_nm=(8.0, 3.0), coarsening_rate=0.08,
                                       drift_px=0.3, seed=9)
    assert frames.shape == masks.shape == (12, 160, 160)
    assert frames.dtype == np.float32 and masks.dtype == np.uint8
    assert list(tracks.columns[:5]) == ["frame", "particle_id", "y_px", "x_px", "diameter_nm"]
    px = 0.5
    for t in range(12):
        rows = tracks[tracks.frame == t]
        components = label(masks[t], connectivity=2)
        assert components.max() == len(rows)          # particles never touch in a stack
        for row in rows.itertuples():
            lab = components[int(round(row.y_px)), int(round(row.x_px))]
            assert lab > 0
            region = components == lab
            ys, xs = np.nonzero(region)
            on_border = ys.min() == 0 or xs.min() == 0 or ys.max() == 159 or xs.max() == 159
            if not on_border:
                d = 2 * np.sqrt(region.sum() / np.pi)
                assert abs(d - row.diameter_nm / px) < 1.0
    first, last = (tracks[tracks.frame == t].set_index("particle_id").diameter_nm for t in (0, 11))
    ids = [int(i) for i in first.index]
    survived = [i for i in ids if i in last.index]
    change = last[survived] - first[survived]
    assert (change > 0).any() and ((change < 0).any() or len(survived) < len(ids))
    # ids only disappear (dissolution), never appear; dissolved ones were the small ones
    for t in range(11):
        ids_now = set(tracks[tracks.frame == t].particle_id)
        assert set(tracks[tracks.frame == t + 1].particle_id) <= ids_now
    gone = [i for i in ids if i not in last.index]
    if gone:
        assert first[gone].max() < first.median()
    # particles move only slightly
    moves = tracks.groupby("particle_id")[["y_px", "x_px"]].agg(np.ptp)
    assert (np.hypot(moves.y_px, moves.x_px) < 10).all()


def test_make_stack_growth_grows_every_particle():
    frames, masks, tracks = make_stack(5, 96, "haadf", n_particles=6, growth_rate=0.05,
                                       coarsening_rate=0.0, drift_px=0.0, seed=1)
    d = tracks.pivot(index="frame", columns="particle_id", values="diameter_nm")
    assert (np.diff(d.to_numpy(), axis=0) > 0).all()
    area = masks.reshape(5, -1).sum(axis=1)
    assert (np.diff(area) > 0).all()
    # noise is new in each frame, the support is not
    assert not np.array_equal(frames[0], frames[1])


def test_synthesis_params_round_trip_and_reproduce_a_data_set(tmp_path):
    from tem_keras.data.synthetic import SynthesisParams

    params = SynthesisParams(n_particles=4, dose=None, particle_diameter_nm=(6, 1))
    assert SynthesisParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.dose = 10.0
    with pytest.raises(ValueError, match="ellipticity"):
        SynthesisParams(ellipticity=0.95)
    with pytest.raises(ValueError, match="unknown synthesis parameter"):
        SynthesisParams.from_dict({"doze": 10})
    with pytest.raises(TypeError, match="unexpected keyword argument 'doze'"):
        make_image(32, doze=10)
    # the params object and the same keywords give the same image; keywords override it
    a = make_image(64, "haadf", params=params, seed=3)
    b = make_image(64, "haadf", n_particles=4, dose=None, particle_diameter_nm=(6, 1), seed=3)
    assert np.array_equal(a.image, b.image) and a.params == b.params
    assert make_image(64, "haadf", params=params, n_particles=2, seed=3).n_particles == 2
    # the dataset.json record rebuilds the images
    out = make_dataset(tmp_path / "d", n_images=1, size=48, mode="hrtem", seed=4, coverage=0.1)
    record = json.loads((out / "dataset.json").read_text())["generator"]
    again = make_image(record["size"], record["mode"], params=SynthesisParams.from_dict(record),
                       seed=np.random.SeedSequence(record["seed"], spawn_key=(0,)))
    assert again.params == {k: v for k, v in record.items() if k in again.params}
    first = make_image(48, "hrtem", coverage=0.1,
                       seed=np.random.SeedSequence(4, spawn_key=(0,)))
    assert np.array_equal(again.image, first.image)
