"""Bad inputs of the readers and of pairing: each is refused with one line that names the file,
and the user's files are byte-identical afterwards (no file added, none changed or removed).

Kinds: TIFFs whose pages (series) differ in size, through ``read_stack``, ``tem-keras info``,
``predict.py``'s reader and the Zarr store's input; masks that are neither 0/1, 0/255 nor the
declared classes, through ``read_mask`` and ``tem-keras check`` (which must report the pair as
not ready); two masks (or images) for one stem, through ``discover`` and ``tem-keras check``;
files ``predict.py`` must refuse as tem_keras does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile
from PIL import Image

from tem_keras.errors import TEMInputError

RNG = np.random.default_rng(7)


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _pages(path: Path, *frames, **options) -> Path:
    """A TIFF written page by page (one series per page), as ``tifffile`` appends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        tifffile.imwrite(path, frame, append=True, **options)
    return path


def _grey(h, w, dtype=np.uint16):
    return RNG.integers(0, 200, (h, w)).astype(dtype)


# --------------------------------------------------------------------------------------------
# TIFFs whose pages differ in size
# --------------------------------------------------------------------------------------------

TIFFS = {
    "two pages, heights differ": lambda d: _pages(d / "a.tif", _grey(8, 9), _grey(5, 9)),
    "three pages, the middle one narrower": lambda d: _pages(d / "b.tif", _grey(8, 9),
                                                             _grey(8, 4), _grey(8, 9)),
    "RGB pages of two sizes": lambda d: _pages(d / "c.tif", _grey(8, 9, np.uint8)[..., None]
                                               .repeat(3, -1), _grey(6, 6, np.uint8)[..., None]
                                               .repeat(3, -1), photometric="rgb"),
    "a stack then a smaller page": lambda d: _pages(d / "d.tif", _grey(8, 9)[None].repeat(2, 0),
                                                    _grey(4, 4)),
    "float pages of two sizes": lambda d: _pages(d / "e.tiff", _grey(8, 9, np.float32),
                                                 _grey(9, 8, np.float32)),
}


def _read_stack(path, capsys):
    from tem_keras.io import read_stack

    with pytest.raises(TEMInputError) as error:
        read_stack(path)
    return str(error.value)


def _info(path, capsys):
    from tem_keras.cli import main

    assert main(["info", str(path)]) == 2
    return capsys.readouterr().err


def _script(path, capsys):
    from tem_keras.export.predict_script import ExportInputError, read_frames

    with pytest.raises(ExportInputError) as error:
        list(read_frames(path))
    return str(error.value)


def _store_input(path, capsys):
    from tem_keras.distributed.inputs import job_input

    with pytest.raises(TEMInputError) as error:
        job_input(str(path))
    return str(error.value)


TIFF_READERS = {"read_stack": _read_stack, "tem-keras info": _info, "predict.py": _script,
                "store": _store_input}


@pytest.mark.parametrize("reader", TIFF_READERS)
@pytest.mark.parametrize("kind", TIFFS)
def test_a_tiff_with_pages_of_different_sizes_is_refused(kind, reader, tmp_path, capsys):
    path = TIFFS[kind](tmp_path / "user")
    before = _snapshot(tmp_path)
    message = TIFF_READERS[reader](path, capsys)
    assert str(path) in message and "pages of different sizes" in message, message
    assert len(message.strip().splitlines()) == 1, message
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# Masks that are guessed at no more
# --------------------------------------------------------------------------------------------

def _disk(h=16, w=16):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 4) ** 2).astype(np.uint8)


def _png(path, array):
    Image.fromarray(array).save(path)


def _with_ring(value):
    mask = _disk() * 255
    mask[0, :] = value
    return mask


@dataclass
class BadMask:
    name: str  # the mask file, in masks/
    write: Callable  # write(path)
    words: str  # in the message
    classes: tuple | None = None  # declared in dataset.json


MASKS = [
    BadMask("s0.png", lambda p: _png(p, (_disk() * 255).clip(0, 255).astype(np.uint8)
                                     + np.eye(16, dtype=np.uint8)), "0, 1 and 255 at once"),
    BadMask("s0.tif", lambda p: tifffile.imwrite(p, np.where(np.eye(16) > 0, 1, _disk() * 255)
                                                 .astype(np.uint8)), "0, 1 and 255 at once"),
    BadMask("s0.png", lambda p: _png(p, _with_ring(100)), "grey levels"),
    BadMask("s0.npy", lambda p: np.save(p, _disk() * 2), "mask holds class 2"),
    BadMask("s0.png", lambda p: _png(p, (_disk() * 3).astype(np.uint8)), "mask holds class 3",
            classes=("background", "particle", "oxide")),
    BadMask("s0.tif", lambda p: tifffile.imwrite(p, _disk().astype(np.uint16) * 65535),
            "values 0, 65535"),
    BadMask("s0.npy", lambda p: np.save(p, _disk() * 0.5), "non-integer"),
    BadMask("s0.npy", lambda p: np.save(p, _disk().astype(int) - 1), "negative"),
    BadMask("s0.tif", lambda p: _pages(p, _disk(), _disk()), "2 images"),
    BadMask("s0.jpg", lambda p: Image.fromarray(_disk() * 255).save(p, quality=60), "JPEG"),
    BadMask("s0.png", lambda p: _png(p, (_disk() * 254).astype(np.uint8)), "mask holds class 254"),
    BadMask("s0.npy", lambda p: np.save(p, np.stack([_disk(), _disk()])), "must be 2-D"),
    BadMask("s0.png", lambda p: _png(p, np.dstack([_disk() * 255, _disk()[::-1] * 200,
                                                   np.zeros((16, 16), np.uint8)])), "colour mask"),
]


def _dataset_with(root: Path, bad: BadMask) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("s0", "s1"):
        tifffile.imwrite(root / "images" / f"{stem}.tif", _grey(16, 16, np.float32))
    _png(root / "masks" / "s1.png", _disk() * 255)
    bad.write(root / "masks" / bad.name)
    if bad.classes:
        (root / "dataset.json").write_text(json.dumps({"classes": list(bad.classes)}))
    return root / "masks" / bad.name


@pytest.mark.parametrize("bad", MASKS, ids=[f"{m.name}-{m.words}" for m in MASKS])
def test_check_reports_a_bad_mask_as_not_ready(bad, tmp_path, capsys):
    from tem_keras.cli import main

    mask = _dataset_with(tmp_path / "data", bad)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(tmp_path / "data")])
    assert exit_info.value.code == 2
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1 and str(mask) in problems[0] and bad.words in problems[0], out
    assert "1 of 2 pairs are ready" in out
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("bad", MASKS, ids=[f"{m.name}-{m.words}" for m in MASKS])
def test_read_mask_refuses_naming_the_file_and_the_values(bad, tmp_path):
    from tem_keras.data.datasets import read_mask

    mask = _dataset_with(tmp_path / "data", bad)
    before = _snapshot(tmp_path)
    classes = range(len(bad.classes)) if bad.classes else None
    with pytest.raises(TEMInputError, match=bad.words) as error:
        read_mask(mask, classes)
    assert str(error.value).startswith(f"{mask}: ") and "\n" not in str(error.value)
    assert _snapshot(tmp_path) == before


def test_declared_classes_and_both_binary_conventions_are_read(tmp_path):
    from tem_keras.data.datasets import read_mask

    disk = _disk()
    _png(tmp_path / "m255.png", disk * 255)
    np.save(tmp_path / "m01.npy", disk.astype(np.int32))
    np.testing.assert_array_equal(read_mask(tmp_path / "m255.png"), disk)
    np.testing.assert_array_equal(read_mask(tmp_path / "m01.npy"), disk)
    three = disk + (np.arange(16)[None, :] > 12).astype(np.uint8) * 2
    _png(tmp_path / "m3.png", three)
    np.testing.assert_array_equal(read_mask(tmp_path / "m3.png", range(3)), three)


# --------------------------------------------------------------------------------------------
# Two masks (or images) for one stem
# --------------------------------------------------------------------------------------------

def _image(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, _grey(16, 16, np.float32))


def _mask(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, _disk())
    else:
        _png(path, _disk() * 255) if path.suffix == ".png" else tifffile.imwrite(path, _disk())


#: layout -> (images, masks, the two files the message names)
TWINS = {
    "png and npy mask": (["images/s0.tif", "images/s1.tif"],
                         ["masks/s0.png", "masks/s0.npy", "masks/s1.png"],
                         ("masks/s0.npy", "masks/s0.png")),
    "s0 and s0_mask": (["images/s0.tif"], ["masks/s0.png", "masks/s0_mask.png"],
                       ("masks/s0.png", "masks/s0_mask.png")),
    "tif and tiff mask": (["images/s0.tif"], ["masks/s0.tif", "masks/s0.tiff"],
                          ("masks/s0.tif", "masks/s0.tiff")),
    "side by side": (["s0.tif", "s1.tif"], ["s0_mask.png", "s0_mask.tif", "s1_mask.png"],
                     ("s0_mask.png", "s0_mask.tif")),
    "nnU-Net": (["imagesTr/s0_0000.tif"], ["labelsTr/s0.png", "labelsTr/s0.npy"],
                ("labelsTr/s0.npy", "labelsTr/s0.png")),
    "two images": (["images/s0.tif", "images/s0.png"], ["masks/s0.png"],
                   ("images/s0.png", "images/s0.tif")),
    "split folders": (["train/images/s0.tif", "test/images/s1.tif"],
                      ["train/masks/s0.png", "train/masks/s0_label.png", "test/masks/s1.png"],
                      ("train/masks/s0.png", "train/masks/s0_label.png")),
}


def _twins(root: Path, kind: str) -> tuple[Path, Path]:
    images, masks, named = TWINS[kind]
    for name in images:
        if name.endswith(".png"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            _png(root / name, _grey(16, 16, np.uint8))
        else:
            _image(root / name)
    for name in masks:
        _mask(root / name)
    return root / named[0], root / named[1]


@pytest.mark.parametrize("kind", TWINS)
def test_two_files_for_one_stem_are_an_error_naming_both(kind, tmp_path):
    from tem_keras.data.datasets import discover

    first, second = _twins(tmp_path / "data", kind)
    before = _snapshot(tmp_path)
    with pytest.raises(TEMInputError, match="for one image stem 's0'") as error:
        discover(tmp_path / "data")
    assert str(first) in str(error.value) and str(second) in str(error.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", TWINS)
def test_check_refuses_two_files_for_one_stem(kind, tmp_path, capsys):
    from tem_keras.cli import main

    first, second = _twins(tmp_path / "data", kind)
    before = _snapshot(tmp_path)
    assert main(["check", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert str(first) in err and str(second) in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# What predict.py refuses, as tem_keras does
# --------------------------------------------------------------------------------------------

SCRIPT_BAD = {
    "spectrum image .npy": ("si.npy", lambda p: np.save(p, np.zeros((16, 16, 64))), "channels"),
    "two-channel .npy": ("two.npy", lambda p: np.save(p, np.zeros((16, 20, 2))), "channels"),
    "1-D spectrum .npy": ("spectrum.npy", lambda p: np.save(p, np.arange(50.0)), "got shape (50,)"),
    "complex .npy": ("fft.npy", lambda p: np.save(p, np.zeros((8, 8), complex)), "complex"),
    "empty .npy": ("empty.npy", lambda p: np.save(p, np.zeros((0, 8))), "got shape (0, 8)"),
    "not a PNG": ("junk.png", lambda p: p.write_bytes(b"not a png at all"), "could not be read"),
    "truncated TIFF": ("cut.tif", lambda p: p.write_bytes(b"II*\x00\x08\x00\x00\x00\x05"),
                       "could not be read"),
    "a DigitalMicrograph file": ("x.dm4", lambda p: p.write_bytes(b"\x00" * 32), "cannot read"),
}


@pytest.mark.parametrize("kind", SCRIPT_BAD)
def test_predict_script_refuses_what_tem_keras_refuses(kind, tmp_path):
    from tem_keras.export.predict_script import ExportInputError, read_frames
    from tem_keras.io import read_stack

    name, write, words = SCRIPT_BAD[kind]
    path = tmp_path / "user" / name
    path.parent.mkdir()
    write(path)
    before = _snapshot(tmp_path)
    with pytest.raises(ExportInputError, match=re.escape(words)) as error:
        list(read_frames(path))
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    with pytest.raises(TEMInputError) as ours:  # tem_keras refuses it too
        read_stack(path)
    assert str(path) in str(ours.value)
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# Spectra are refused by the Zarr store's input as by predict
# --------------------------------------------------------------------------------------------

def _spectrum_dict():
    axes = [{"name": "y", "navigate": True, "scale": 1.0, "units": "nm"},
            {"name": "x", "navigate": True, "scale": 1.0, "units": "nm"},
            {"name": "Energy loss", "navigate": False, "scale": 0.1, "units": "eV"}]
    return {"data": np.zeros((8, 9, 40), np.float32), "axes": axes}


def _no_navigation_flags():
    data = _spectrum_dict()
    for axis in data["axes"]:
        del axis["navigate"]
    return data


@pytest.mark.parametrize("make", [_spectrum_dict, _no_navigation_flags, lambda: np.arange(40.0),
                                  lambda: np.zeros((16, 20, 3), np.float32)],
                         ids=["RosettaSciIO spectrum image", "energy axis last", "1-D array",
                              "colour array"])
def test_the_store_refuses_a_spectrum_as_predict_does(make):
    from tem_keras.distributed.inputs import job_input
    from tem_keras.inference import input_sources

    with pytest.raises(TEMInputError, match="signal axes|got shape|colour image") as by_store:
        job_input(make())
    if isinstance(make(), np.ndarray):  # predict's words exactly
        with pytest.raises(TEMInputError) as by_predict:
            input_sources(make())
        assert str(by_store.value) == str(by_predict.value)


def test_the_store_refuses_a_hyperspy_spectrum_image_as_predict_does():
    hs = pytest.importorskip("hyperspy.api")
    from tem_keras.distributed.inputs import job_input
    from tem_keras.inference import input_sources

    signal = hs.signals.Signal1D(np.zeros((8, 9, 40), np.float32))
    with pytest.raises(TEMInputError) as by_predict:
        input_sources(signal)
    with pytest.raises(TEMInputError) as by_store:
        job_input(signal)
    assert str(by_store.value) == str(by_predict.value)


# --------------------------------------------------------------------------------------------
# Output names are unique among the inputs of one call
# --------------------------------------------------------------------------------------------

def _colliding_inputs(root: Path) -> list[Path]:
    """``a.tif`` + ``a.png``, ``d1/x.npy`` + ``d2/x.npy``, and a stack ``s.tif`` beside a file
    named like its second frame, ``s_f00001.npy``."""
    from tem_keras.data.synthetic import make_image

    image = make_image(48, seed=3).image.astype(np.float32)
    (root / "d1").mkdir(parents=True)
    (root / "d2").mkdir()
    tifffile.imwrite(root / "a.tif", image)
    _png(root / "a.png", np.clip(image / image.max() * 255, 0, 255).astype(np.uint8))
    np.save(root / "d1" / "x.npy", image)
    np.save(root / "d2" / "x.npy", image[::-1])
    _pages(root / "s.tif", image, image[:, ::-1])
    np.save(root / "s_f00001.npy", image.T)
    return [root / "a.tif", root / "a.png", root / "d1" / "x.npy", root / "d2" / "x.npy",
            root / "s.tif", root / "s_f00001.npy"]


#: the names of :func:`_colliding_inputs`' frames, by the rule of ``output_stems``
UNIQUE_NAMES = ["a_tif", "a_png", "d1_x_npy", "d2_x_npy", "s_tif_f00000", "s_tif_f00001",
                "s_f00001_npy"]


def test_sources_and_predictions_get_unique_names(tmp_path):
    from tem_keras.inference import input_sources, select_frames
    from tem_keras.inference.stream import Prediction

    files = _colliding_inputs(tmp_path / "user")
    sources, _ = input_sources([str(p) for p in files])
    names = [Prediction(np.zeros((2, 2), np.uint8), source=s.name, stem=s.stem,
                        frame=f if s.multi else None, index=g).name
             for g, s, f in select_frames(sources, None)]
    assert names == UNIQUE_NAMES
    alone, _ = input_sources(str(files[0]))  # nothing collides: the stem
    assert alone[0].stem == "a"
    arrays, _ = input_sources([np.zeros((2, 8, 8)), np.zeros((3, 8, 8)), np.zeros((8, 8))])
    names = [Prediction(np.zeros((2, 2), np.uint8), source=s.name, stem=s.stem,
                        frame=f if s.multi else None, index=g).name
             for g, s, f in select_frames(arrays, None)]
    assert names == ["stack0_f00000", "stack0_f00001", "stack1_f00000", "stack1_f00001",
                     "stack1_f00002", "image00005"]


def test_predict_script_names_inputs_by_the_same_rule(tmp_path):
    from tem_keras.export.predict_script import output_stems, read_frames

    files = _colliding_inputs(tmp_path / "user")
    names = [name for path, stem in zip(files, output_stems(files))
             for name, _ in read_frames(path, stem)]
    assert names == UNIQUE_NAMES
    assert output_stems([files[0], files[0]]) == ["a_tif_1", "a_tif_2"]  # one file given twice
    assert output_stems([tmp_path / "A.tif", tmp_path / "a.png"]) == ["A_tif", "a_png"]  # case


def test_label_writes_one_image_and_mask_per_input_when_stems_collide(tmp_path, capsys):
    from tem_keras.cli import main

    files = _colliding_inputs(tmp_path / "user")[:4]
    before = _snapshot(tmp_path / "user")
    assert main(["label", *map(str, files), "-o", str(tmp_path / "ds"), "--quiet",
                 "--method", "otsu"]) == 0
    assert "wrote 4 image(s)" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "ds" / "masks").iterdir())
    assert written == sorted(f"{n}.png" for n in UNIQUE_NAMES[:4])
    assert len(list((tmp_path / "ds" / "images").iterdir())) == 4
    assert _snapshot(tmp_path / "user") == before


def test_one_file_given_twice_or_through_a_link_is_predicted_once(tmp_path):
    """``a.tif a.tif`` and ``a.tif link-to-a.tif``: one set of outputs, as ``predict.py``'s
    ``input_files`` does, not ``a_tif_1`` and ``a_tif_2``."""
    from tem_keras.export.predict_script import input_files
    from tem_keras.inference import input_sources

    files = _colliding_inputs(tmp_path / "user")
    link = tmp_path / "user" / "link.tif"
    link.symlink_to(files[0])
    before = _snapshot(tmp_path / "user")
    given = [files[0], files[0], link, files[1]]
    sources, _ = input_sources([str(p) for p in given])
    assert [s.stem for s in sources] == ["a_tif", "a_png"]
    assert [p.name for p in input_files(given)] == ["a.tif", "a.png"]  # predict.py: the same
    assert _snapshot(tmp_path / "user") == before


def test_predict_script_refuses_an_input_folder_as_its_output(tmp_path, capsys):
    from tem_keras.export.predict_script import main

    files = _colliding_inputs(tmp_path / "user")
    before = _snapshot(tmp_path)
    folder = files[0].parent
    code = main([str(folder), "-o", str(folder), "--overwrite", "--model", str(tmp_path / "none.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "is an input of this command" in err and str(folder) in err, err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before
