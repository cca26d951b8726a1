"""Readers and writers of tem_keras.io: real microscope files, round trips and every bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tem_keras.errors import TEMInputError
from tem_keras.io import (Micrograph, MicrographStack, read_image, read_stack, write_image,
                          write_mask, write_probabilities)

FORMATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "formats"
HS = "hyperspy176_testdata"
TEMUL = "temul_toolkit_experimental"
NOT_DATA = {"COPYING.txt", "LICENSE"}

# Every file of ../shared/data/formats that must be refused, with the reason the message gives.
REFUSED = {
    **{f"{HS}/dm3/test-{n}.dm3": "complex" for n in (3, 5, 13)},  # complex64/128 test images
    **{f"{HS}/dm4/test-{n}.dm4": "complex" for n in (3, 5, 13, 27, 28)},
    f"{HS}/dm4/test-MonarcCL_spectrum-SI.dm4": "spectrum image",  # CL spectrum per pixel
    f"{HS}/dm4/test-MonoCL_spectrum-SI.dm4": "spectrum image",  # CL line scan
}


def _all_format_files():
    if not FORMATS.is_dir():
        return []
    return sorted(str(p.relative_to(FORMATS)) for p in FORMATS.rglob("*")
                  if p.is_file() and p.name not in NOT_DATA)


@pytest.fixture(scope="module")
def au_emd(shared_data):
    """The 2048² Velox EMD, read once."""
    return read_image(shared_data / "formats" / TEMUL / "example_Au_nanoparticle.emd")


# --------------------------------------------------------------------------------------------
# Every real file: read, or refused with a message naming it
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relative", _all_format_files())
def test_every_format_file_is_read_or_refused_by_name(shared_data, relative, request):
    path = shared_data / "formats" / relative
    if relative in REFUSED:
        with pytest.raises(TEMInputError, match=REFUSED[relative]) as info:
            read_image(path)
        assert str(info.value).startswith(str(path))
        return
    big = relative == f"{TEMUL}/example_Au_nanoparticle.emd"
    micrograph = request.getfixturevalue("au_emd") if big else read_image(path)
    assert micrograph.data.dtype == np.float32 and micrograph.data.ndim == 2
    assert np.isfinite(micrograph.data).all()
    assert micrograph.metadata["format"] in {"DigitalMicrograph", "TIA", "EMD", "TIFF"}
    assert micrograph.metadata["signal_type"] in {"image", "diffraction"}
    assert micrograph.path == str(path)


def test_refused_list_names_only_existing_files(shared_data):
    assert set(REFUSED) <= set(_all_format_files())


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------

def test_dm3_stem_image_pixel_size_and_metadata(shared_data):
    m = read_image(shared_data / "formats" / HS / "dm3" / "test_STEM_image.dm3")
    assert m.shape == (68, 68)
    assert m.pixel_size_nm == pytest.approx(0.24853801727294922, rel=1e-9)
    assert m.metadata["units"] == "nm"
    assert m.metadata["original_dtype"] == "uint32"
    assert m.metadata["voltage_kv"] == 200.0
    assert m.metadata["magnification"] == 225000.0
    assert m.metadata["acquisition_mode"] == "STEM"
    assert m.metadata["date"] == "2016-08-08"
    assert m.field_of_view_nm == pytest.approx((68 * 0.248538, 68 * 0.248538), rel=1e-6)
    assert m.data[0, :3].tolist() == [33121.0, 33489.0, 33638.0]  # raw counts, not rescaled
    assert "68×68" in repr(m) and "0.248538 nm/px" in repr(m) and "DigitalMicrograph" in repr(m)


def test_au_nanoparticle_emd(au_emd):
    assert au_emd.shape == (2048, 2048)
    assert au_emd.pixel_size_nm == pytest.approx(0.0075, abs=2e-6)
    assert au_emd.metadata["format"] == "EMD"
    assert au_emd.metadata["title"] == "HAADF"
    assert au_emd.metadata["microscope"] == "Titan"
    assert au_emd.metadata["voltage_kv"] == 300.0
    assert au_emd.metadata["original_dtype"] == "uint16"
    assert au_emd.data.max() > 255  # 16-bit counts kept


def test_se_implanted_mos2_dm3(shared_data):
    m = read_image(shared_data / "formats" / TEMUL / "example_Se_implanted_MoS2.dm3")
    assert m.shape == (1024, 1024)
    assert m.pixel_size_nm == pytest.approx(0.0126953125, rel=1e-9)  # 13 nm / 1024 px
    assert m.metadata["voltage_kv"] == 60.0


@pytest.mark.parametrize("name, shape, pixel_nm, n_frames", [
    ("64x64_TEM_images_acquire_1.ser", (64, 64), 6.281833616298531, 1),
    ("128x128-TEM_search_1.ser", (128, 128), 5.261214205047081, 1),
    ("128x128_TEM_acquire-sum1_1.ser", (128, 128), 21.479317511461325, 1),
    ("64x64x5_TEM_preview_1.ser", (64, 64), 6.281833616298531, 5),
    ("64x64x5_TEM_preview.emi", (64, 64), 6.281833616298531, 5),
])
def test_tia_shapes_and_calibrations(shared_data, name, shape, pixel_nm, n_frames):
    stack = read_stack(shared_data / "formats" / HS / "fei_tia" / name)
    assert stack.shape == (n_frames, *shape)
    assert stack.pixel_size_nm == pytest.approx(pixel_nm, rel=1e-9)
    assert stack[0].metadata["format"] == "TIA"


def test_tia_emi_carries_acquisition_metadata(shared_data):
    m = read_image(shared_data / "formats" / HS / "fei_tia" / "64x64x5_TEM_preview.emi", frame=4)
    assert m.metadata["n_frames"] == 5 and m.metadata["frame"] == 4
    assert m.metadata["microscope"] == "Tecnai 200 kV D2267 SuperTwin"
    assert m.metadata["magnification"] == 19500.0
    assert m.metadata["voltage_kv"] == 200.0
    assert m.metadata["exposure_s"] == 0.0625


@pytest.mark.parametrize("name, pixel_nm", [
    ("test_loading_image_saved_with_DM.tif", 168.67469),
    ("test_loading_image_saved_with_imageJ.tif", 168.67471),
    ("test_dm_image_um_unit.dm3", 168.67469),
])
def test_tiff_scales_from_digitalmicrograph_and_imagej(shared_data, name, pixel_nm):
    m = read_image(shared_data / "formats" / HS / "tiff" / name)
    assert m.shape == (68, 68)
    assert m.metadata["units"] == "µm"
    assert m.pixel_size_nm == pytest.approx(pixel_nm, rel=1e-6)


def test_imagej_tiff_stack(shared_data):
    stack = read_stack(shared_data / "formats" / HS / "tiff"
                       / "test_loading_image_saved_with_imageJ_stack.tif")
    assert stack.shape == (2, 68, 68)
    assert stack.pixel_size_nm == pytest.approx(168.67471, rel=1e-6)


def test_dm_tiff_stack_has_non_square_pixels(shared_data):
    # DigitalMicrograph saved this stack with y = 10 × x (hyperspy's test asserts the same)
    stack = read_stack(shared_data / "formats" / HS / "tiff"
                       / "test_loading_image_saved_with_DM_stack.tif")
    assert stack.shape == (2, 68, 68)
    assert stack.pixel_size_nm is None
    y_nm, x_nm = stack[0].metadata["pixel_size_yx_nm"]
    assert (y_nm, x_nm) == pytest.approx((1686.74, 168.674), rel=1e-5)
    assert stack[0].metadata["frame_axes"][0]["units"] == "s"


def test_diffraction_pattern_keeps_reciprocal_calibration(shared_data):
    m = read_image(shared_data / "formats" / HS / "dm3" / "test_diffraction_pattern.dm3")
    assert m.metadata["signal_type"] == "diffraction"
    assert m.pixel_size_nm is None
    assert m.metadata["units"] == "1/nm"
    assert m.metadata["scale"] == pytest.approx(0.17443285882472992)


def test_multi_signal_dm3_picks_the_image(shared_data):
    m = read_image(shared_data / "formats" / HS / "dm3" / "multi_signal.dm3")
    assert m.shape == (512, 512)
    assert m.metadata["title"] == "HAADF"
    assert m.pixel_size_nm == pytest.approx(0.017751578, rel=1e-6)
    assert m.metadata["other_signals"] == ["Plot (spectrum, shape (512,))"]


@pytest.mark.parametrize("folder", ["dm3", "dm4"])
def test_dm_dtypes_are_kept_as_counts(shared_data, folder):
    expected = {1: "int16", 2: "float32", 6: "uint8", 7: "int32", 9: "int8", 10: "uint16",
                11: "uint32", 12: "float64", 23: "RGB(A) uint8", 8: "RGB(A) uint8"}
    for n, dtype in expected.items():
        m = read_image(shared_data / "formats" / HS / folder / f"test-{n}.{folder}")
        assert m.metadata["original_dtype"] == dtype
        np.testing.assert_allclose(m.data, [[1, 2], [3, 4]], rtol=1e-6)
        assert m.pixel_size_nm is None  # scale 1, no unit


def test_3d_dm3_read_lazily_by_read_stack(shared_data, tmp_path):
    path = tmp_path / "stack.dm3"
    shutil.copy(shared_data / "formats" / HS / "dm3" / "test-1_3D.dm3", path)
    stack = read_stack(path)
    assert isinstance(stack, MicrographStack) and stack.lazy
    assert len(stack) == 2 and stack.shape == (2, 2, 2)
    assert read_image(path).metadata["n_frames"] == 2
    # frames come from the file when indexed: change the pixels on disk after read_stack
    raw = path.read_bytes()
    offset = raw.index(np.arange(1, 9, dtype="<i2").tobytes())
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.arange(11, 19, dtype="<i2").tobytes())
    assert stack[1].data.tolist() == [[15, 16], [17, 18]]
    assert [m.metadata["frame"] for m in stack] == [0, 1]


def test_emd_stacks(shared_data):
    velox = read_stack(shared_data / "formats" / HS / "emd" / "fei_example_tem_stack.emd")
    assert velox.shape == (2, 3, 3)
    assert velox.pixel_size_nm == pytest.approx(0.0081728832, rel=1e-6)  # 8.17 pm
    assert velox[1].data.tolist() == [[1, 3, 5], [7, 9, 11], [13, 15, 17]]
    ncem = read_stack(shared_data / "formats" / HS / "emd" / "example_signal.emd")
    assert ncem.shape == (3, 3, 3) and ncem.pixel_size_nm is None


# --------------------------------------------------------------------------------------------
# Round trips and other formats
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(1000.0, 50.0, (40, 56)).astype(np.float32)


def test_image_tiff_round_trip_keeps_values_and_pixel_size(tmp_path, image):
    write_image(tmp_path / "a.tif", image, pixel_size_nm=0.0075)
    m = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(m.data, image)
    assert m.pixel_size_nm == pytest.approx(0.0075, rel=1e-6)
    assert m.metadata["units"] == "nm"


def test_image_npy_round_trip(tmp_path, image):
    write_image(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.npy").data, image)


def test_mask_png_and_tiff_round_trip_keep_labels(tmp_path):
    mask = np.random.default_rng(1).integers(0, 4, (30, 20))
    for name in ("m.png", "m.tif"):
        write_mask(tmp_path / name, mask)
        np.testing.assert_array_equal(read_image(tmp_path / name).data, mask)


def test_probabilities_round_trip(tmp_path):
    p = np.random.default_rng(2).dirichlet([1, 1, 1], (24, 32)).astype(np.float32)
    write_probabilities(tmp_path / "p.tif", p, pixel_size_nm=0.25)
    stack = read_stack(tmp_path / "p.tif")
    assert stack.shape == (3, 24, 32) and stack.pixel_size_nm == pytest.approx(0.25)
    np.testing.assert_array_equal(np.moveaxis(stack.to_numpy(), 0, -1), p)
    write_probabilities(tmp_path / "p.npy", p[..., 1])
    np.testing.assert_array_equal(read_image(tmp_path / "p.npy").data, p[..., 1])


def test_writers_refuse_to_overwrite(tmp_path, image):
    write_image(tmp_path / "a.tif", image)
    for writer, data in ((write_image, image), (write_mask, image > 1000),
                         (write_probabilities, image)):
        with pytest.raises(FileExistsError, match="overwrite=True"):
            writer(tmp_path / "a.tif", data)
    write_image(tmp_path / "a.tif", image * 2, overwrite=True)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").data, image * 2)


def test_rgb_png_becomes_luminance_and_alpha_is_dropped(tmp_path):
    import imageio.v3 as iio

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    iio.imwrite(tmp_path / "c.png", rgba)
    m = read_image(tmp_path / "c.png")
    assert m.shape == (4, 5) and m.metadata["channels"] == "RGBA"
    np.testing.assert_allclose(m.data, 0.2125 * 200 + 0.7154 * 100 + 0.0721 * 50, rtol=1e-6)
    assert m.pixel_size_nm is None


def test_mrc_voxel_size_in_angstrom_becomes_nm(tmp_path):
    import mrcfile

    data = np.arange(3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10)
    with mrcfile.new(tmp_path / "s.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.5  # Å
    stack = read_stack(tmp_path / "s.mrc")
    assert stack.shape == (3, 8, 10) and stack.pixel_size_nm == pytest.approx(0.15)
    np.testing.assert_array_equal(stack[2].data, data[2])
    assert read_image(tmp_path / "s.mrc", frame=-1).metadata["frame"] == 2


def test_npy_and_h5_stacks(tmp_path):
    import h5py

    data = np.random.default_rng(3).random((4, 6, 7))
    np.save(tmp_path / "s.npy", data)
    stack = read_stack(tmp_path / "s.npy")
    assert stack.shape == (4, 6, 7) and stack.pixel_size_nm is None
    np.testing.assert_allclose(stack[1:3].to_numpy(), data[1:3], rtol=1e-6)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["meta/labels"] = np.arange(3)  # 1-D: skipped
        h5["group/frames"] = data
        h5["group/frames"].attrs["pixel_size"] = 2.0
        h5["group/frames"].attrs["units"] = "Å"
        h5["other"] = data[0] * 10
        h5["other"].attrs["pixel_size_nm"] = 0.3
    stack = read_stack(tmp_path / "s.h5")
    assert stack.shape == (4, 6, 7) and stack.pixel_size_nm == pytest.approx(0.2)
    np.testing.assert_allclose(stack[3].data, data[3], rtol=1e-6)
    other = read_image(tmp_path / "s.h5", dataset="other")
    assert other.pixel_size_nm == pytest.approx(0.3) and other.metadata["dataset"] == "/other"


@pytest.mark.parametrize("scale, unit, expected_nm", [
    (2.0, "Å", 0.2), (2.0, "A", 0.2), (2.0, "angstrom", 0.2), (0.2, "nm", 0.2),
    (0.002, "µm", 2.0), (0.002, "\u03bcm", 2.0), (0.002, "um", 2.0), (0.002, "micron", 2.0),
    (500.0, "pm", 0.5), (2e-10, "m", 0.2), (2e-7, "mm", 0.2),
    (1.0, "pixels", None), (1.0, "<undefined>", None), (1.0, "", None), (3.0, "furlong", None),
])
def test_units_are_converted_to_nm(tmp_path, scale, unit, expected_nm):
    import h5py

    with h5py.File(tmp_path / "u.h5", "w") as h5:
        h5["image"] = np.zeros((4, 5))
        h5["image"].attrs.update(pixel_size=scale, units=unit)
    m = read_image(tmp_path / "u.h5")
    assert m.metadata["units"] == unit
    if expected_nm is None:
        assert m.pixel_size_nm is None
    else:
        assert m.pixel_size_nm == pytest.approx(expected_nm, rel=1e-9)


@pytest.mark.parametrize("unit", ["1/nm", "nm^-1", "1/Å"])
def test_reciprocal_units_mean_diffraction(tmp_path, unit):
    import h5py

    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["pattern"] = np.ones((4, 4))
        h5["pattern"].attrs.update(pixel_size=0.05, units=unit)
    m = read_image(tmp_path / "d.h5")
    assert m.metadata["signal_type"] == "diffraction" and m.pixel_size_nm is None
    assert m.metadata["scale"] == 0.05


def test_imagej_tiff_with_escaped_angstrom_unit(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.ones((6, 7), np.float32), imagej=True,
                     resolution=(1 / 1.25, 1 / 1.25), metadata={"unit": "\\u00C5"})
    m = read_image(tmp_path / "a.tif")
    assert m.pixel_size_nm == pytest.approx(0.125, rel=1e-6)


def test_plain_tiff_with_dpi_has_no_pixel_size(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "p.tif", np.arange(12, dtype=np.uint16).reshape(3, 4),
                     resolution=(300, 300), resolutionunit="INCH")
    m = read_image(tmp_path / "p.tif")
    assert m.pixel_size_nm is None and m.metadata["original_dtype"] == "uint16"
    assert m.data.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


@pytest.mark.parametrize("name, data, expected", [
    ("g16.png", np.array([[0, 1000], [40000, 65535]], np.uint16), [[0, 1000], [40000, 65535]]),
    ("rgb.bmp", np.full((2, 2, 3), (10, 20, 30), np.uint8),
     np.full((2, 2), 0.2125 * 10 + 0.7154 * 20 + 0.0721 * 30)),
    ("g.jpg", np.full((8, 8), 128, np.uint8), np.full((8, 8), 128)),
])
def test_bitmaps(tmp_path, name, data, expected):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / name, data)
    m = read_image(tmp_path / name)
    np.testing.assert_allclose(m.data, expected, rtol=1e-5, atol=1)
    assert m.pixel_size_nm is None and m.shape == data.shape[:2]


def test_folder_glob_and_list_stacks_in_natural_order(tmp_path):
    for n in (10, 2, 1):
        write_image(tmp_path / f"img{n}.tif", np.full((5, 6), n, np.float32), pixel_size_nm=0.5)
    (tmp_path / "notes.txt").write_text("not an image")
    stack = read_stack(tmp_path)
    assert [int(m.data[0, 0]) for m in stack] == [1, 2, 10]
    assert stack.shape == (3, 5, 6) and stack.pixel_size_nm == pytest.approx(0.5)
    assert [int(m.data[0, 0]) for m in read_stack(str(tmp_path / "img*.tif"))] == [1, 2, 10]
    listed = read_stack([tmp_path / "img10.tif", tmp_path / "img1.tif"])
    assert [int(m.data[0, 0]) for m in listed] == [10, 1]


def test_tia_folder_counts_an_emi_and_its_ser_once(shared_data, tmp_path):
    for name in ("128x128-TEM_search.emi", "128x128-TEM_search_1.ser"):
        shutil.copy(shared_data / "formats" / HS / "fei_tia" / name, tmp_path / name)
    stack = read_stack(tmp_path)
    assert len(stack) == 1 and stack.pixel_size_nm == pytest.approx(5.261214205047081)


def test_micrograph_from_array():
    m = Micrograph(np.ones((3, 4), np.uint8), 0.5)
    assert m.data.dtype == np.float32 and m.field_of_view_nm == (1.5, 2.0)
    assert Micrograph(np.ones((3, 4))).field_of_view_nm is None


def test_importing_io_does_not_import_tensorflow():
    code = "import sys, tem_keras.io; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# Bad input: a clear TEMInputError naming the file
# --------------------------------------------------------------------------------------------

def _raises(match, function, path, **kwargs):
    with pytest.raises(TEMInputError, match=match) as info:
        function(path, **kwargs)
    assert str(info.value).startswith(str(path))
    return info.value


def test_missing_file(tmp_path):
    _raises("no such file", read_image, tmp_path / "absent.dm4")
    _raises("no such file", read_stack, tmp_path / "absent.tif")


def test_empty_folder_and_folder_without_images(tmp_path):
    _raises("no readable images in this folder", read_stack, tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    error = _raises("no readable images", read_stack, tmp_path)
    assert ".dm4" in str(error)
    _raises("is a folder", read_image, tmp_path)
    _raises("no files match", read_stack, str(tmp_path / "*.dm3"))


def test_unsupported_extension_lists_supported_ones(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"123")
    error = _raises("unsupported file type '.xyz'", read_image, tmp_path / "a.xyz")
    for suffix in (".dm3", ".dm4", ".ser", ".emd", ".mrc", ".tif", ".png", ".npy", ".h5"):
        assert suffix in str(error)


@pytest.mark.parametrize("keep", [100, 20000, 60000])
def test_truncated_dm3(shared_data, tmp_path, keep):
    original = (shared_data / "formats" / HS / "dm3" / "test_STEM_image.dm3").read_bytes()
    (tmp_path / "cut.dm3").write_bytes(original[:keep])
    _raises(r"could not be read as DigitalMicrograph \(struct.error", read_image,
            tmp_path / "cut.dm3")


@pytest.mark.parametrize("name, fmt", [("r.tif", "TIFF"), ("r.png", "PNG"), ("r.mrc", "MRC"),
                                       ("r.npy", "NumPy"), ("r.h5", "HDF5"), ("r.emd", "EMD"),
                                       ("r.ser", "TIA"), ("r.dm4", "DigitalMicrograph")])
def test_random_bytes_are_reported_as_unreadable(tmp_path, name, fmt):
    (tmp_path / name).write_bytes(np.random.default_rng(4).bytes(4096))
    error = _raises(f"could not be read as {fmt} ", read_image, tmp_path / name)
    assert "\n" not in str(error)


def test_spectra_are_refused(shared_data, tmp_path):
    _raises("this is a spectrum image", read_image,
            shared_data / "formats" / HS / "dm4" / "test-MonoCL_spectrum-SI.dm4")
    _raises("this is a spectrum image", read_stack,
            shared_data / "formats" / HS / "dm4" / "test-MonarcCL_spectrum-SI.dm4")
    np.save(tmp_path / "spectrum.npy", np.arange(100.0))
    _raises("this is a spectrum, not an image", read_image, tmp_path / "spectrum.npy")
    np.save(tmp_path / "si.npy", np.zeros((32, 32, 1024)))
    _raises(r"looks like \[H, W, channels\]", read_image, tmp_path / "si.npy")
    np.save(tmp_path / "two.npy", np.zeros((32, 40, 2)))  # two channels: not a colour image
    _raises(r"looks like \[H, W, channels\]", read_image, tmp_path / "two.npy")


def test_an_rgb_npy_is_one_grey_image(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (32, 40, 4)).astype(np.uint8)
    np.save(tmp_path / "rgba.npy", rgba)
    stack = read_stack(tmp_path / "rgba.npy")
    assert len(stack) == 1 and stack.shape == (1, 32, 40)
    expected = rgba[..., :3].astype(np.float64) @ [0.2125, 0.7154, 0.0721]  # BT.709, alpha dropped
    np.testing.assert_allclose(stack[0].data, expected, rtol=1e-6)
    assert stack[0].metadata["channels"] == "RGBA"


def test_nan_and_infinite_pixels_are_counted(tmp_path, image):
    bad = image.copy()
    bad[0, :3] = np.nan
    bad[5, 5] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    _raises("4 of 2240 pixels are NaN or infinite", read_image, tmp_path / "nan.npy")
    write_image(tmp_path / "nan.tif", bad)
    _raises("4 of 2240 pixels are NaN", read_image, tmp_path / "nan.tif")


def test_complex_data_is_refused(shared_data, tmp_path):
    np.save(tmp_path / "fft.npy", np.fft.fft2(np.ones((8, 8))))
    _raises("complex values", read_image, tmp_path / "fft.npy")
    _raises(r"complex values \(complex64\)", read_stack,
            shared_data / "formats" / HS / "dm4" / "test-27.dm4")


def test_frame_out_of_range_and_misplaced_options(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((3, 4, 5)))
    _raises("frame 3 does not exist: the file has 3 frame", read_image, tmp_path / "s.npy",
            frame=3)
    _raises("only apply to HDF5", read_image, tmp_path / "s.npy", dataset="x")
    import h5py

    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5["x"] = np.zeros(5)
    _raises("no 2-D or 3-D numeric dataset", read_image, tmp_path / "a.h5")
    _raises("no dataset 'missing'", read_image, tmp_path / "a.h5", dataset="missing")


def test_a_stack_inside_a_file_sequence_is_refused_when_read(tmp_path):
    np.save(tmp_path / "a1.npy", np.zeros((4, 5)))
    np.save(tmp_path / "a2.npy", np.zeros((2, 4, 5)))
    stack = read_stack(tmp_path)
    assert stack[0].shape == (4, 5)
    _raises("is a stack of 2 frames", lambda p: stack[1], tmp_path / "a2.npy")


# --------------------------------------------------------------------------------------------
# Multi-page TIFF: frames decided by the page layout, never by the array shape alone
# --------------------------------------------------------------------------------------------

def _frames(n, dtype, h=64, w=80):
    rng = np.random.default_rng(n)
    return (rng.random((n, h, w)) * 200).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("n", [3, 4, 5])
def test_tiff_stack_written_by_tifffile_is_read_as_frames(tmp_path, n, dtype):
    import warnings

    import tifffile

    frames = _frames(n, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tifffile: 3/4 planes become "RGB"
        tifffile.imwrite(tmp_path / "s.tif", frames)
    stack = read_stack(tmp_path / "s.tif")
    assert stack.shape == (n, 64, 80)
    np.testing.assert_array_equal(stack.to_numpy(), frames.astype(np.float32))
    first = read_image(tmp_path / "s.tif")
    assert first.shape == (64, 80) and first.metadata["n_frames"] == n
    np.testing.assert_array_equal(read_image(tmp_path / "s.tif", frame=-1).data, frames[-1])


@pytest.mark.parametrize("axes, shape, kwargs", [
    ("TYX", (3, 16, 20), {}),
    ("ZYX", (3, 16, 20), {}),
    ("QYX", (2, 16, 20), {}),
    ("TZCYX", (2, 3, 2, 16, 20), {"imagej": True}),
    ("ZCYX", (3, 3, 16, 20), {"imagej": True}),
    ("TCYX", (2, 3, 16, 20), {"ome": True}),
])
def test_tiff_axes_strings_give_every_frame_in_file_order(tmp_path, axes, shape, kwargs):
    import tifffile

    data = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    tifffile.imwrite(tmp_path / "h.tif", data, metadata={"axes": axes}, **kwargs)
    stack = read_stack(tmp_path / "h.tif")
    np.testing.assert_array_equal(stack.to_numpy(), data.reshape(-1, 16, 20))


def test_imagej_stack_without_axes_is_iyx(tmp_path):
    import tifffile

    data = _frames(3, np.float32, 16, 20)
    tifffile.imwrite(tmp_path / "i.tif", data, imagej=True)
    np.testing.assert_array_equal(read_stack(tmp_path / "i.tif").to_numpy(), data)


def test_contiguous_rgb_tiff_is_one_grey_image(tmp_path):
    import tifffile

    rgb = np.random.default_rng(1).integers(0, 255, (16, 20, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    m = read_image(tmp_path / "rgb.tif")
    assert m.shape == (16, 20) and m.metadata.get("n_frames") is None
    np.testing.assert_allclose(m.data, rgb @ np.array([0.2125, 0.7154, 0.0721]), rtol=1e-5)
    stack_rgb = np.stack([rgb, rgb[::-1]])
    tifffile.imwrite(tmp_path / "rgbs.tif", stack_rgb, imagej=True, photometric="rgb")
    stack = read_stack(tmp_path / "rgbs.tif")
    assert stack.shape == (2, 16, 20)
    np.testing.assert_allclose(stack[1].data, m.data[::-1], rtol=1e-5)


def test_planar_minisblack_pages_are_frames(tmp_path):
    import tifffile

    data = _frames(3, np.uint16, 16, 20)
    tifffile.imwrite(tmp_path / "p.tif", data, photometric="minisblack")
    np.testing.assert_array_equal(read_stack(tmp_path / "p.tif").to_numpy(), data)


def test_empty_array_file_is_refused(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 64), np.float32))
    _raises(r"is empty, it holds no image: 1 frame\(s\) of 0×64 px", read_image, tmp_path / "e.npy")


def test_grey_and_alpha_tiff_keeps_the_grey_sample(tmp_path):
    import tifffile

    la = np.zeros((16, 20, 2), np.uint8)
    la[..., 0] = np.arange(20, dtype=np.uint8)
    la[..., 1] = 255
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    m = read_image(tmp_path / "la.tif")
    assert m.shape == (16, 20) and m.metadata.get("n_frames") is None
    np.testing.assert_array_equal(m.data, la[..., 0])


# --------------------------------------------------------------------------------------------
# TIFFs written page by page, and predict.py reading as tem_keras reads
# --------------------------------------------------------------------------------------------

def _append_pages(path, frames, **options):
    import tifffile

    for frame in frames:
        tifffile.imwrite(path, frame, append=True, **options)
    return path


@pytest.mark.parametrize("metadata", [{}, {"metadata": None}], ids=["shaped", "plain"])
def test_a_tiff_written_page_by_page_is_read_as_frames(tmp_path, capsys, metadata):
    import tifffile

    from tem_keras.cli import main

    frames = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9) * 7
    path = _append_pages(tmp_path / "pages.tif", frames, **metadata)
    with tifffile.TiffFile(path) as tif:  # the layout this test is about
        assert len(tif.series) == (3 if not metadata else 1)
    data = path.read_bytes()
    stack = read_stack(path)
    assert len(stack) == 3 and stack.shape == (3, 8, 9)
    np.testing.assert_array_equal(stack.to_numpy(), frames)
    np.testing.assert_array_equal(read_image(path, frame=2).data, frames[2])
    assert read_image(path, frame=1).metadata["n_frames"] == 3
    assert main(["info", str(path)]) == 0
    assert "3 frame(s) of 8×9 px" in capsys.readouterr().out
    from tem_keras.live import read_all_frames  # what watch segments

    np.testing.assert_array_equal(np.stack([m.data for m in read_all_frames(path)]), frames)
    assert path.read_bytes() == data


def test_series_of_stacks_and_colour_pages_are_frames_in_file_order(tmp_path):
    a = np.arange(2 * 6 * 7, dtype=np.uint8).reshape(2, 6, 7)
    path = _append_pages(tmp_path / "mixed.tif", [a, a[0] + 100])
    np.testing.assert_array_equal(read_stack(path).to_numpy(), np.concatenate([a, a[:1] + 100]))
    rgb = np.random.default_rng(2).integers(0, 256, (2, 6, 7, 3)).astype(np.uint8)
    colour = _append_pages(tmp_path / "rgb.tif", rgb, photometric="rgb")
    expected = rgb.astype(np.float64) @ [0.2125, 0.7154, 0.0721]
    np.testing.assert_allclose(read_stack(colour).to_numpy(), expected, rtol=1e-6)


def _reader_cases(folder: Path) -> list[Path]:
    """Files of every layout both readers take: bitmaps of every Pillow mode that matters,
    TIFFs of every sample layout, NumPy arrays."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (20, 24)).astype(np.uint8)
    rgb = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    rgba = rng.integers(0, 256, (20, 24, 4)).astype(np.uint8)
    Image.fromarray(g8).save(folder / "grey.png")
    Image.fromarray(g8.astype(np.uint16) * 200).save(folder / "grey16.png")
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(np.dstack([g8, rgba[..., 3]]), mode="LA").save(folder / "grey_alpha.png")
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    assert palette.mode == "P"
    palette.save(folder / "palette.png")
    palette.save(folder / "palette_transparent.png", transparency=3)
    Image.fromarray(g8 > 128).save(folder / "bilevel.png")
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=90)
    Image.fromarray(rgb).save(folder / "rgb.bmp")
    tifffile.imwrite(folder / "grey.tif", g8)
    tifffile.imwrite(folder / "stack.tif", np.stack([g8, g8 // 2, g8 // 3]))
    _append_pages(folder / "pages.tif", [g8, g8 // 2, g8 // 3])
    tifffile.imwrite(folder / "rgb_contiguous.tif", rgb, photometric="rgb")
    tifffile.imwrite(folder / "grey_alpha.tif", np.dstack([g8, g8 // 2]), photometric="minisblack",
                     extrasamples=["unassalpha"])
    tifffile.imwrite(folder / "float.tif", g8.astype(np.float32) / 7)
    tifffile.imwrite(folder / "hyperstack.tif", rng.random((2, 3, 20, 24)).astype(np.float32),
                     imagej=True, metadata={"axes": "TZYX"})
    _append_pages(folder / "rgb_pages.tif", [rgb, rgb[::-1]], photometric="rgb")
    np.save(folder / "grey.npy", g8)
    np.save(folder / "stack.npy", np.stack([g8, g8 // 2]))
    np.save(folder / "rgb.npy", rgb)
    np.save(folder / "rgba.npy", rgba.astype(np.float32))
    np.save(folder / "four_d.npy", rng.random((2, 2, 20, 24)))
    np.save(folder / "one_frame.npy", g8[None])
    return sorted(folder.iterdir())


def test_predict_script_reads_every_file_as_tem_keras_does(tmp_path):
    """The standalone script of exports (NumPy, tifffile and Pillow only) and tem_keras.io give
    the same frames, bit for bit, and the same output names."""
    from tem_keras.export.predict_script import read_frames

    files = _reader_cases(tmp_path)
    before = {p: p.read_bytes() for p in files}
    for path in files:
        ours = read_stack(path)
        script = list(read_frames(path))
        assert len(script) == len(ours), path.name
        np.testing.assert_array_equal(np.stack([image for _, image in script]), ours.to_numpy(),
                                      err_msg=path.name)
        names = [name for name, _ in script]
        assert names == ([path.stem] if len(ours) == 1 else
                         [f"{path.stem}_f{i:05d}" for i in range(len(ours))]), names
    assert {p: p.read_bytes() for p in files} == before
