"""Dataset discovery, masks, splitting, preprocessing, augmentation and the tf.data pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tem_keras.data.augment import Augmentation, Augmenter
from tem_keras.data.datasets import discover, load_pair, read_mask, split_samples
from tem_keras.data.pipeline import patch_pipeline, training_data
from tem_keras.data.preprocess import (Preprocessing, extract_patches, foreground_patches,
                                       remove_outliers, standardize)
from tem_keras.errors import TEMInputError
from tem_keras.io import write_image, write_mask


def disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for cy, cx in centres:
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    return mask


def particle_image(mask, seed=0):
    """Dark particles on a noisy bright background (bright-field contrast)."""
    rng = np.random.default_rng(seed)
    return (100.0 - 40.0 * mask + rng.normal(0, 5, mask.shape)).astype(np.float32)


def make_folder(root, n=5, shape=(64, 80), layout="images/masks", pixel_size_nm=0.4):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = disks(shape, [(16 + 3 * i, 20), (40, 50 + 2 * i)], 7)
        image = particle_image(mask, seed=i)
        if layout == "images/masks":
            write_image(root / "images" / f"img{i}.tif", image, pixel_size_nm)
            write_mask(root / "masks" / f"img{i}.png", mask)
        elif layout == "nnunet":
            write_image(root / "imagesTr" / f"case{i}_0000.tif", image, pixel_size_nm)
            write_mask(root / "labelsTr" / f"case{i}.png", mask)
        elif layout == "suffix":
            write_image(root / f"frame{i}.tif", image, pixel_size_nm)
            write_mask(root / f"frame{i}_mask.png", mask * 255)
    return root


# --- discovery ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, stem", [("images/masks", "img0"), ("nnunet", "case0"),
                                          ("suffix", "frame0")])
def test_discover_layouts(tmp_path, layout, stem):
    ds = discover(make_folder(tmp_path / "d", n=4, layout=layout))
    assert len(ds) == 4 and ds.samples[0].stem == stem
    assert all(s.mask is not None and s.mask.exists() for s in ds)
    assert not ds.unpaired_images and not ds.unpaired_masks


def test_numbered_frames_pair_by_their_whole_name(tmp_path):
    """``frame_0000`` is a frame number, not nnU-Net's channel suffix, outside ``imagesTr/``."""
    mask = disks((64, 80), [(30, 30)], 7)
    for k in range(3):
        write_image(tmp_path / "d" / "images" / f"frame_{k:04d}.tif", particle_image(mask, seed=k))
        write_mask(tmp_path / "d" / "masks" / f"frame_{k:04d}.png", mask)
    ds = discover(tmp_path / "d")
    assert [s.stem for s in ds] == ["frame_0000", "frame_0001", "frame_0002"]
    assert not ds.unpaired_images and not ds.unpaired_masks


def test_discover_split_folders(tmp_path):
    root = tmp_path / "d"
    make_folder(root / "train", n=4)
    make_folder(root / "Test", n=2)  # same stems img0, img1 as in train/: prefixed
    make_folder(root / "valid", n=1, layout="suffix")
    ds = discover(root)
    assert len(ds) == 7 and ds.layout.startswith("split folders")
    assert ds.split == {"train": ["train_img0", "train_img1", "img2", "img3"],
                        "test": ["test_img0", "test_img1"], "val": ["frame0"]}
    by_stem = {s.stem: s for s in ds}
    assert by_stem["test_img1"].image == root / "Test" / "images" / "img1.tif"
    assert by_stem["frame0"].mask == root / "valid" / "frame0_mask.png"


def test_split_folders_with_their_name_in_front_of_images_and_masks(tmp_path):
    """``train/train_images`` + ``train/train_masks``, ``val/val_images`` + ``val/val_masks`` (as
    some published sets ship); names that differ are refused with the way out, then paired in
    sorted order when asked."""
    root = tmp_path / "d"
    for split, n in (("train", 3), ("val", 2)):
        made = make_folder(tmp_path / "made" / split, n=n)
        (root / split).mkdir(parents=True)
        (made / "images").rename(root / split / f"{split}_images")
        (made / "masks").rename(root / split / f"{split}_masks")
    ds = discover(root)
    assert ds.split == {"train": ["train_img0", "train_img1", "img2"], "val": ["val_img0", "val_img1"]}
    assert {s.stem: s.mask for s in ds}["img2"] == root / "train" / "train_masks" / "img2.png"
    for k in range(2):  # the masks named otherwise, as in the source set
        (root / "val" / "val_masks" / f"img{k}.png").rename(root / "val" / "val_masks" / f"labels_{k}.png")
    with pytest.raises(TEMInputError, match=r"val: 2 images and 2 masks but no pairs .*pairing='sorted'"):
        discover(root)
    paired = {s.stem: s.mask.name for s in discover(root, pairing="sorted")}
    assert paired["val_img0"] == "labels_0.png" and paired["val_img1"] == "labels_1.png"


def test_split_folders_without_validation_give_validation_images_from_train(tmp_path):
    from tem_keras.training import TrainingConfig
    from tem_keras.training.inputs import split_images

    root = tmp_path / "d"
    make_folder(root / "train", n=10)
    make_folder(root / "test", n=3)
    split = split_images(discover(root), TrainingConfig(), root)
    assert len(split["val"]) >= 1 and len(split["train"]) + len(split["val"]) == 10
    assert not set(split["val"]) & set(split["train"])
    assert split["test"] == ["test_img0", "test_img1", "test_img2"]


def test_discover_reports_unpaired_and_strict(tmp_path):
    root = make_folder(tmp_path / "d", n=3)
    write_image(root / "images" / "lonely.tif", np.ones((64, 80)))
    write_mask(root / "masks" / "orphan.png", np.zeros((64, 80), np.uint8))
    ds = discover(root)
    assert [s.stem for s in ds] == ["img0", "img1", "img2"]
    assert [p.name for p in ds.unpaired_images] == ["lonely.tif"]
    assert [p.name for p in ds.unpaired_masks] == ["orphan.png"]
    with pytest.raises(TEMInputError, match="lonely.tif"):
        discover(root, strict=True)
    unlabelled = discover(root, include_unlabelled=True)
    assert len(unlabelled) == 4 and len(unlabelled.labelled) == 3


def test_discover_natural_order(tmp_path):
    root = tmp_path / "d"
    for i in (10, 2, 1):
        write_image(root / "images" / f"im{i}.tif", np.ones((8, 8)))
        write_mask(root / "masks" / f"im{i}.png", np.zeros((8, 8), np.uint8))
    assert [s.stem for s in discover(root)] == ["im1", "im2", "im10"]


def test_discover_dataset_json(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    (root / "dataset.json").write_text(json.dumps({
        "pixel_size_nm": 0.25, "classes": {"0": "background", "1": "Au"},
        "split": {"train": ["img0", "img1"], "val": ["img2"], "test": ["img3"]}}))
    ds = discover(root)
    assert ds.pixel_size_nm == 0.25 and ds.class_names == {0: "background", 1: "Au"}
    assert ds.split["val"] == ["img2"]
    (root / "dataset.json").write_text(json.dumps({"split": {"train": ["nope"]}}))
    with pytest.raises(TEMInputError, match="nope"):
        discover(root)
    (root / "dataset.json").write_text("{broken")
    with pytest.raises(TEMInputError, match="dataset.json.*not valid JSON"):
        discover(root)


def test_discover_bad_folders(tmp_path):
    with pytest.raises(TEMInputError, match="no such dataset folder"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TEMInputError, match="empty.*no image files"):
        discover(tmp_path / "empty")
    root = tmp_path / "differ"
    write_image(root / "images" / "a.tif", np.ones((8, 8)))
    write_mask(root / "masks" / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(TEMInputError, match="no pairs.*pairing='sorted'"):
        discover(root)
    assert discover(root, pairing="sorted").samples[0].mask.name == "b.png"


def test_discover_real_set_with_sorted_pairing(shared_data):
    root = shared_data / "real-dev" / "pt-alumina-haadf-tomo"
    ds = discover(root, images=["train/train_images", "val/val_images"],
                  masks=["train/train_masks", "val/val_masks"], pairing="sorted")
    assert len(ds) == 60
    image, mask = load_pair(ds.samples[0], num_classes=3)
    assert image.data.shape == mask.shape == (512, 512)
    assert set(np.unique(mask)) <= {0, 1, 2}


# --- masks -------------------------------------------------------------------------------------

def test_read_mask_conventions(tmp_path):
    binary = disks((20, 20), [(10, 10)], 4)
    write_mask(tmp_path / "m255.png", binary * 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "m255.png"), binary)
    classes = binary + (np.arange(20)[None, :] > 15).astype(np.uint8) * 2
    np.save(tmp_path / "m.npy", classes.astype(np.int64))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.npy", classes=range(3)), classes)
    with pytest.raises(TEMInputError, match="m.npy: mask holds class 2 but the data set declares "
                       "the classes 0, 1"):
        read_mask(tmp_path / "m.npy")  # binary unless classes are declared
    np.save(tmp_path / "frac.npy", binary * 0.5)
    with pytest.raises(TEMInputError, match="frac.npy.*non-integer"):
        read_mask(tmp_path / "frac.npy")
    np.save(tmp_path / "neg.npy", binary.astype(int) - 1)
    with pytest.raises(TEMInputError, match="neg.npy.*negative"):
        read_mask(tmp_path / "neg.npy")
    from PIL import Image

    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = binary * 255  # red particles on black: binary
    Image.fromarray(rgb).save(tmp_path / "red.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "red.png"), binary)
    rgb[:2, :2, 1] = 200  # a second colour: ambiguous
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(TEMInputError, match="rgb.png.*colour mask"):
        read_mask(tmp_path / "rgb.png")
    big = disks((64, 64), [(30, 30)], 12)
    grey = (big * 255).astype(np.uint8)
    edge = (disks((64, 64), [(30, 30)], 13) - big).astype(bool)
    grey[edge] = 100  # anti-aliased ring outside the particle: below 128
    write_mask(tmp_path / "aa.png", grey)
    with pytest.raises(TEMInputError, match=r"aa.png: mask holds the values 0, 100, 255: grey levels"):
        read_mask(tmp_path / "aa.png")
    Image.fromarray((big * 255).astype(np.uint8)).save(tmp_path / "lossy.jpg", quality=75)
    with pytest.raises(TEMInputError, match="lossy.jpg: mask holds the values .*JPEG"):
        read_mask(tmp_path / "lossy.jpg")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(TEMInputError, match="junk.png.*could not be read"):
        read_mask(tmp_path / "junk.png")


def test_load_pair_size_and_class_checks(tmp_path):
    root = make_folder(tmp_path / "d", n=2)
    write_mask(root / "masks" / "img1.png", np.zeros((60, 80), np.uint8), overwrite=True)
    ds = discover(root)
    with pytest.raises(TEMInputError, match=r"img1.png: mask is 60×80 px but its image img1.tif is 64×80"):
        load_pair(ds.samples[1])
    write_mask(root / "masks" / "img0.png", np.full((64, 80), 3, np.uint8), overwrite=True)
    with pytest.raises(TEMInputError, match="img0.png: mask holds class 3"):
        load_pair(ds.samples[0], num_classes=2)


# --- split -------------------------------------------------------------------------------------

def test_split_fractions_seed_and_groups():
    stems = [f"s{i:02d}" for i in range(20)]
    a = split_samples(stems, (0.7, 0.1, 0.2), seed=1)
    assert [len(a[k]) for k in ("train", "val", "test")] == [14, 2, 4]
    assert sorted(sum(a.values(), [])) == stems
    assert a == split_samples(stems, seed=1)
    assert a != split_samples(stems, seed=2)
    groups = {s: f"video{int(s[1:]) // 5}" for s in stems}  # 4 videos of 5 frames
    g = split_samples(stems, (0.5, 0.25, 0.25), seed=0, groups=groups)
    assert [len(g[k]) for k in ("train", "val", "test")] == [10, 5, 5]
    videos = [{groups[s] for s in g[k]} for k in ("train", "val", "test")]
    assert [len(v) for v in videos] == [2, 1, 1] and not set.intersection(*videos)
    tiny = split_samples(["a", "b", "c"], (0.7, 0.1, 0.2))
    assert all(len(v) == 1 for v in tiny.values())


# --- preprocessing -----------------------------------------------------------------------------

def test_remove_outliers_replaces_only_hot_pixels():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 3, (64, 64)).astype(np.float32)
    hot = [(5, 7), (30, 31), (30, 32), (63, 0)]  # a lone hit, a 2-pixel streak, a corner
    for y, x in hot:
        image[y, x] = 5000
    clean = remove_outliers(image)
    changed = np.argwhere(clean != image)
    assert sorted(map(tuple, changed)) == sorted(hot)
    assert np.all(np.abs(clean[tuple(np.array(hot).T)] - 100) < 12)


def test_standardize_and_errors():
    image = np.random.default_rng(1).gamma(2.0, 10.0, (50, 40))
    z = standardize(image)
    assert z.dtype == np.float32 and abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    p = standardize(image, "percentile", percentiles=(1, 99))
    assert abs(np.percentile(p, 1)) < 1e-5 and abs(np.percentile(p, 99) - 1) < 1e-4
    with pytest.raises(TEMInputError, match="constant"):
        standardize(np.ones((5, 5)))
    bad = image.copy()
    bad[3, 3] = np.nan
    with pytest.raises(TEMInputError, match="1 NaN"):
        Preprocessing()(bad)


def test_preprocessing_is_the_same_across_bit_depths_offsets_and_gains():
    """One micrograph stored as 8-bit PNG, 16-bit counts with a dark offset, or float electrons per
    pixel gives one model input: per-image normalisation holds across detectors and collections."""
    from tem_keras.data.synthetic import make_image

    counts = make_image(96, "bright-field", seed=3, dose=200).image.astype(np.float64)
    unit = (counts - counts.min()) / (counts.max() - counts.min())
    reference = Preprocessing()(unit)
    for stored in (np.round(unit * 255).astype(np.uint8), (1000 + unit * 40000).astype(np.uint16),
                   (unit * 3.7 + 0.2).astype(np.float32)):
        step = np.ptp(reference) / 255 if stored.dtype == np.uint8 else 1e-4  # 8 bits: 1/255 of the range
        np.testing.assert_allclose(Preprocessing()(stored), reference, atol=step)
    # the contrast is kept: inverting the image (bright-field vs HAADF) inverts the input
    np.testing.assert_allclose(Preprocessing(remove_outliers=False)(1 - unit),
                               -Preprocessing(remove_outliers=False)(unit), atol=1e-5)


def test_extract_patches_cover_image_and_match_slices():
    image = np.arange(70 * 90, dtype=np.float32).reshape(70, 90)
    mask = (image % 7 == 0).astype(np.uint8)
    patches, mpatches, origins = extract_patches(image, mask, 32, 24)
    assert patches.shape == (len(origins), 32, 32) and mpatches.shape == patches.shape
    assert sorted(set(origins[:, 0])) == [0, 24, 38] and sorted(set(origins[:, 1])) == [0, 24, 48, 58]
    for p, m, (r, c) in zip(patches, mpatches, origins):
        np.testing.assert_array_equal(p, image[r:r + 32, c:c + 32])
        np.testing.assert_array_equal(m, mask[r:r + 32, c:c + 32])
    with pytest.raises(TEMInputError, match="small.tif: image is 20×90 px, smaller than the 32 px"):
        extract_patches(image[:20], None, 32, source="small.tif")
    sel = foreground_patches(np.stack([np.zeros((4, 4)), np.eye(4)]).astype(np.uint8), 3)
    assert sel.tolist() == [False, True]


# --- augmentation ------------------------------------------------------------------------------

def test_dihedral_augmentation_keeps_image_and_mask_aligned():
    mask = disks((48, 48), [(10, 14), (30, 36)], 5)
    mask[40:44, 2:20] = 1  # an asymmetric bar so every dihedral transform is distinct
    image = mask.astype(np.float32) * 3.0 - 1.0
    augmenter = Augmenter(Augmentation(rotate_degrees=0, p=0))
    seen = set()
    for seed in range(40):
        aug_image, aug_mask = augmenter(image, mask, seed)
        np.testing.assert_array_equal(aug_image > 0.5, aug_mask.astype(bool))
        assert aug_mask.sum() == mask.sum()
        seen.add(aug_mask.tobytes())
    assert len(seen) == 8


def test_full_augmentation_alignment_and_reproducibility():
    mask = disks((64, 64), [(20, 20), (44, 40)], 9)
    image = particle_image(mask)
    augmenter = Augmenter(Augmentation(p=1.0))
    for seed in range(10):
        a_img, a_mask = augmenter(image, mask, seed)
        assert a_img.shape == image.shape and a_img.dtype == np.float32
        assert set(np.unique(a_mask)) <= {0, 1}
        # particles stay dark where the augmented mask says they are
        assert a_img[a_mask == 1].mean() < a_img[a_mask == 0].mean()
        inside = (a_img < (a_img[a_mask == 1].mean() + a_img[a_mask == 0].mean()) / 2)
        assert (inside == a_mask.astype(bool)).mean() > 0.9
    first = augmenter(image, mask, 3)
    again = augmenter(image, mask, 3)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], augmenter(image, mask, 4)[0])


# --- pipeline ----------------------------------------------------------------------------------

def test_training_data_shapes_split_and_determinism(tmp_path):
    root = make_folder(tmp_path / "d", n=10, shape=(64, 96))
    data = training_data(root, patch_size=32, batch_size=4, seed=3)
    assert [len(data.split[k]) for k in ("train", "val", "test")] == [7, 1, 2]
    assert data.pixel_size_nm == pytest.approx(0.4)
    # patches of one source image all sit in one split
    for name, other in (("train", "test"), ("val", "test"), ("train", "val")):
        assert not set(data.patches[name].sources) & set(data.patches[other].sources)
    assert len(data.patches["test"]) == 2 * 6  # all 2×3 patches kept for evaluation
    def epoch(ds):
        return [(x.numpy(), y.numpy()) for x, y in ds]

    a1, a2 = epoch(data.pipelines["train"]), epoch(data.pipelines["train"])
    images, masks = a1[0]
    assert images.shape == (4, 32, 32, 1) and images.dtype.name == "float32"
    assert masks.shape == (4, 32, 32) and masks.dtype.name == "int32"
    # no background-only training patch, and every val/test patch is kept
    train_counts = data.patches["train"].masks.reshape(len(data.patches["train"]), -1).sum(1)
    assert train_counts.min() >= 1
    # the same seed gives the same batches; the next epoch is shuffled and augmented anew
    b1 = epoch(training_data(root, patch_size=32, batch_size=4, seed=3).pipelines["train"])
    assert len(a1) == len(b1) == len(data.patches["train"]) // 4
    for (xa, ya), (xb, yb) in zip(a1, b1):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(a1, a2))
    other = epoch(training_data(root, patch_size=32, batch_size=4, seed=4).pipelines["train"])
    assert not np.array_equal(other[0][0], a1[0][0])


def test_validation_pipeline_is_not_augmented(tmp_path):
    root = make_folder(tmp_path / "d", n=6, shape=(64, 64))
    data = training_data(root, patch_size=32, batch_size=2, seed=0, split=(0.5, 0.5, 0.0))
    expected = data.patches["val"].images
    got = np.concatenate([x.numpy()[..., 0] for x, _ in data.pipelines["val"]])
    np.testing.assert_array_equal(got, expected)
    assert "test" not in data.pipelines


def test_pipeline_bad_inputs_name_the_file(tmp_path):
    root = make_folder(tmp_path / "small", n=3, shape=(24, 24))
    with pytest.raises(TEMInputError, match=r"img\d.tif: image is 24×24 px, smaller than the 32"):
        training_data(root, patch_size=32)
    root = make_folder(tmp_path / "nan", n=3, shape=(32, 32))
    bad = particle_image(disks((32, 32), [(10, 10)], 4))
    bad[0, :5] = np.nan
    np.save(root / "images" / "img9.npy", bad)
    write_mask(root / "masks" / "img9.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(TEMInputError, match="img9.npy: 5 of 1024 pixels are NaN"):
        training_data(root, patch_size=32, split=(1, 0, 0))


def test_patch_pipeline_rejects_empty():
    from tem_keras.data.pipeline import PatchSet

    empty = PatchSet(np.zeros((0, 8, 8), np.float32), np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="no patches"):
        patch_pipeline(empty, 2)
