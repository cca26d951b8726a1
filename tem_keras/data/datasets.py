"""Finding image/mask pairs in a dataset folder, validating them and splitting them.

Layouts recognised by :func:`discover` (first match wins):

* ``DIR/images/<stem>.<ext>`` + ``DIR/masks/<stem>.<ext>``
* ``DIR/imagesTr/<stem>[_0000].<ext>`` + ``DIR/labelsTr/<stem>.<ext>`` (nnU-Net)
* ``<stem>.<ext>`` + ``<stem>_mask.<ext>`` or ``<stem>_label.<ext>`` side by side
* explicit ``images=`` / ``masks=`` folders, paired by stem or, when names differ, in sorted order
* split folders ``DIR/train/``, ``DIR/val/``, ``DIR/test/`` (also ``training``, ``valid``,
  ``validation``, ``testing``), each in one of the layouts above: the folders give the split
  (a data set with only ``train/`` and ``test/`` gets its validation images from ``train/``);
  stems that occur in two folders are prefixed with the folder's split name

An optional ``DIR/dataset.json`` gives ``pixel_size_nm``, class names (``classes``) and a fixed
split (``split: {"train": [stems], "val": [...], "test": [...]}``, each image in one split only),
checked on read by :func:`tem_keras.validation.files.check_dataset_json`.

Mask convention: 0 = background, 1..K = classes; a binary mask stored as 0/255 is read as 0/1.
Nothing is guessed: two masks (or two images) for one stem are an error naming both files, and a
mask holding other values than 0/1, 0/255 or the classes ``dataset.json`` declares (0, 1 and 255
at once; the grey edges of an anti-aliased or JPEG mask) is refused (:func:`read_mask`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import TEMInputError

IMAGE_SUFFIXES = (".dm3", ".dm4", ".ser", ".emd", ".mrc", ".tif", ".tiff", ".png", ".jpg",
                  ".jpeg", ".bmp", ".npy", ".h5", ".hdf5")
#: in-memory mask value of pixels without a label (the uncertain edges of pseudo-labels): no loss,
#: no metric, never a patch centre. Never read from or written to a mask file.
IGNORE_LABEL = 255
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".bmp", ".jpg", ".jpeg")
_MASK_TAGS = ("_mask", "_label", "_labels", "_seg")
_LAYOUTS = (("images", "masks"), ("imagesTr", "labelsTr"), ("image", "mask"),
            ("imgs", "labels"), ("images", "labels"))
#: sub-folder names (lower case) that hold one split each
_SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
                  "test": ("test", "testing")}


@dataclass(frozen=True)
class Sample:
    """One image with its mask (``mask`` is None for an unlabelled image)."""

    stem: str
    image: Path
    mask: Path | None = None


@dataclass
class Dataset:
    """The pairs found in a dataset folder, with what ``dataset.json`` says about them.

    Attributes
    ----------
    root : Path
        The dataset folder.
    samples : list of Sample
        Paired (and, when ``labels`` allow, unlabelled) images in sorted order.
    unpaired_images, unpaired_masks : list of Path
        Files that could not be paired; :func:`discover` reports them.
    pixel_size_nm : float or None
        From ``dataset.json``; images that carry their own calibration keep it.
    class_names : dict of int to str
    split : dict of str to list of str, or None
        A fixed split from ``dataset.json``.
    layout : str
        How the pairs were found.
    """

    root: Path
    samples: list[Sample]
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    pixel_size_nm: float | None = None
    class_names: dict[int, str] = field(default_factory=lambda: {0: "background", 1: "particle"})
    split: dict[str, list[str]] | None = None
    layout: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    @property
    def labelled(self) -> list[Sample]:
        return [s for s in self.samples if s.mask is not None]

    @property
    def num_classes(self) -> int:
        return max(self.class_names) + 1

    def __repr__(self) -> str:
        return (f"Dataset({str(self.root)!r}, {len(self.labelled)} labelled pairs, "
                f"{len(self.samples) - len(self.labelled)} unlabelled, "
                f"{len(self.unpaired_masks)} unpaired masks, layout={self.layout!r}, "
                f"pixel_size_nm={self.pixel_size_nm}, classes={self.class_names})")


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")),
                  key=_natural_key)


def _image_stem(path: Path) -> str:
    """The stem an image pairs by: nnU-Net's channel suffix ``_0000`` dropped in its own layout only
    (elsewhere ``frame_0000.tif`` pairs with ``frame_0000.png``)."""
    if path.parent.name in ("imagesTr", "imagesTs"):
        return re.sub(r"_0000$", "", path.stem)
    return path.stem


def _one_per_stem(files: list[Path], stem_of, what: str) -> dict[str, Path]:
    """``{stem: file}``; two files with one stem are an error naming both (never a guess)."""
    by_stem: dict[str, Path] = {}
    for f in files:
        stem = stem_of(f)
        if stem in by_stem:
            raise TEMInputError(f"two {what}s for one image stem {stem!r}: {by_stem[stem]} and {f}; "
                                "keep one of them (remove or rename the other)", f.parent)
        by_stem[stem] = f
    return by_stem


def _mask_stem(path: Path) -> str:
    stem = path.stem
    for tag in _MASK_TAGS:
        if stem.endswith(tag):
            return stem[: -len(tag)]
    return stem


def _pair_by_stem(images: list[Path], masks: list[Path]):
    by_stem = _one_per_stem(masks, _mask_stem, "mask")
    _one_per_stem(images, _image_stem, "image")
    samples, unpaired = [], []
    for img in images:
        mask = by_stem.pop(_image_stem(img), None)
        if mask is None:
            unpaired.append(img)
        else:
            samples.append(Sample(_image_stem(img), img, mask))
    return samples, unpaired, sorted(by_stem.values(), key=_natural_key)


def _pair_sorted(images: list[Path], masks: list[Path], where: Path):
    if len(images) != len(masks):
        raise TEMInputError(
            f"pairing='sorted' needs as many masks as images, found {len(images)} images and "
            f"{len(masks)} masks", where)
    return [Sample(_image_stem(i), i, m) for i, m in zip(images, masks)], [], []


def _as_folders(root: Path, spec) -> list[Path]:
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    folders = [Path(s) if Path(s).is_absolute() else root / s for s in specs]
    for f in folders:
        if not f.is_dir():
            raise TEMInputError("no such folder", f)
    return folders


def _split_folders(root: Path) -> dict[str, Path]:
    """``{"train": DIR/train, ...}`` for the split sub-folders of ``root`` (train/ required)."""
    found = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        for split, names in _SPLIT_FOLDERS.items():
            if child.name.lower() in names and split not in found:
                found[split] = child
    return found if "train" in found else {}


def _discover_split_folders(root, split_dirs, info, **options) -> Dataset:
    """A data set laid out as one sub-folder per split: each discovered on its own, then merged."""
    parts = {split: discover(folder, **options) for split, folder in split_dirs.items()}
    counts: dict[str, int] = {}
    for part in parts.values():
        for sample in part.samples:
            counts[sample.stem] = counts.get(sample.stem, 0) + 1
    samples, split, unpaired_images, unpaired_masks = [], {}, [], []
    for name, part in parts.items():
        renamed = [Sample(f"{name}_{s.stem}" if counts[s.stem] > 1 else s.stem, s.image, s.mask)
                   for s in part.samples]
        samples += renamed
        split[name] = [s.stem for s in renamed if s.mask is not None]
        unpaired_images += part.unpaired_images
        unpaired_masks += part.unpaired_masks
    pixel = info.get("pixel_size_nm")
    layouts = ", ".join(f"{folder.name}/ ({parts[s].layout})" for s, folder in split_dirs.items())
    return Dataset(root=root, samples=samples, unpaired_images=unpaired_images,
                   unpaired_masks=unpaired_masks, pixel_size_nm=float(pixel) if pixel else None,
                   class_names=_class_names(info), split=info.get("split") or split,
                   layout=f"split folders: {layouts}")


def _read_dataset_json(root: Path) -> dict:
    """``root/dataset.json`` checked by :func:`tem_keras.validation.files.check_dataset_json` ({} if absent)."""
    from ..validation.files import check_dataset_json, read_json

    path = root / "dataset.json"
    if not path.is_file():
        return {}
    return check_dataset_json(read_json(path), path)


def _class_names(info: dict) -> dict[int, str]:
    classes = info.get("classes") or info.get("labels")  # nnU-Net writes "labels": {name: value}
    if not classes:
        return {0: "background", 1: "particle"}
    if isinstance(classes, list):
        return {i: str(n) for i, n in enumerate(classes)}
    items = classes.items()
    if all(isinstance(v, int) for _, v in items):  # nnU-Net style {name: value}
        return {int(v): str(k) for k, v in items}
    return {int(k): str(v) for k, v in items}


def discover(dataset_dir, *, images=None, masks=None, pairing: str = "stem",
             include_unlabelled: bool = False, strict: bool = False) -> Dataset:
    """Find the image/mask pairs of a dataset folder.

    Parameters
    ----------
    dataset_dir : str or Path
        The dataset folder (see the module docstring for the layouts it recognises).
    images, masks : str, Path or list of them, optional
        Image and mask folders (relative to ``dataset_dir`` or absolute), for layouts the
        conventions do not cover. Several folders are paired folder by folder.
    pairing : {"stem", "sorted"}
        ``"stem"`` pairs files with the same stem (mask suffixes ``_mask``/``_label`` allowed);
        ``"sorted"`` pairs the n-th image with the n-th mask in natural sort order, for data sets
        whose image and mask names differ.
    include_unlabelled : bool
        Keep images without a mask as samples with ``mask=None`` (for automatic labelling).
    strict : bool
        Raise if any image or mask is left unpaired instead of reporting it.

    Returns
    -------
    Dataset

    Raises
    ------
    TEMInputError
        Missing or empty folder, nothing paired, (``strict``) unpaired files, or a
        ``dataset.json`` that is not JSON or holds a wrong type, a pixel size <= 0 or an image in
        two splits (:func:`tem_keras.validation.files.check_dataset_json`; the message names the field).
    TypeError
        ``dataset_dir`` is not a path, ``include_unlabelled`` or ``strict`` not a bool.
    """
    if not isinstance(dataset_dir, (str, os.PathLike)):
        raise TypeError(f"dataset_dir must be a folder (str or Path), got {dataset_dir!r} "
                        f"({type(dataset_dir).__name__})")
    from ..validation import check_bool

    check_bool("include_unlabelled", include_unlabelled)
    check_bool("strict", strict)
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise TEMInputError("no such dataset folder", root)
    if not root.is_dir():
        raise TEMInputError("is a file; fit and discover expect a dataset folder", root)
    if pairing not in ("stem", "sorted"):
        raise ValueError(f"pairing must be 'stem' or 'sorted', got {pairing!r}")
    info = _read_dataset_json(root)

    if (images is None) != (masks is None):
        raise ValueError("give both images= and masks=, or neither")
    split_dirs = _split_folders(root) if images is None else {}
    if split_dirs and not any((root / i).is_dir() and (root / m).is_dir() for i, m in _LAYOUTS):
        return _discover_split_folders(root, split_dirs, info, pairing=pairing,
                                       include_unlabelled=include_unlabelled, strict=strict)
    if images is not None:
        image_dirs, mask_dirs = _as_folders(root, images), _as_folders(root, masks)
        if len(image_dirs) != len(mask_dirs):
            raise ValueError("images= and masks= must name the same number of folders")
        pairs = list(zip(image_dirs, mask_dirs))
        layout = "explicit folders"
    else:
        layouts = [*_LAYOUTS, *((f"{root.name}_{i}", f"{root.name}_{m}") for i, m in _LAYOUTS)]  # train/train_images
        pairs = [(root / i, root / m) for i, m in layouts if (root / i).is_dir() and (root / m).is_dir()][:1]
        layout = f"{pairs[0][0].name}/ + {pairs[0][1].name}/" if pairs else "side by side"

    samples, lone_images, lone_masks = [], [], []
    if pairs:
        for img_dir, mask_dir in pairs:
            imgs, msks = _files(img_dir, IMAGE_SUFFIXES), _files(mask_dir, MASK_SUFFIXES)
            if pairing == "sorted":
                s, li, lm = _pair_sorted(imgs, msks, img_dir)
            else:
                s, li, lm = _pair_by_stem(imgs, msks)
            samples += s
            lone_images += li
            lone_masks += lm
    else:
        unlabelled_folder = include_unlabelled and (root / "images").is_dir()
        files = _files(root / "images" if unlabelled_folder else root, IMAGE_SUFFIXES)
        is_mask = [any(f.stem.endswith(t) for t in _MASK_TAGS) for f in files]
        samples, lone_images, lone_masks = _pair_by_stem(
            [f for f, m in zip(files, is_mask) if not m], [f for f, m in zip(files, is_mask) if m])

    if not samples and not (include_unlabelled and lone_images):
        found = "no image files" if not (lone_images or lone_masks) else (
            f"{len(lone_images)} images and {len(lone_masks)} masks but no pairs "
            "(names differ? try pairing='sorted')")
        raise TEMInputError(
            f"{found}; expected images/ + masks/, imagesTr/ + labelsTr/, or <stem>_mask files "
            f"beside the images (supported image types: {', '.join(IMAGE_SUFFIXES)})", root)
    if strict and (lone_images or lone_masks):
        raise TEMInputError(
            f"unpaired files: images {[p.name for p in lone_images]}, masks {[p.name for p in lone_masks]}",
            root)
    stems = [s.stem for s in samples]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise TEMInputError(f"several images share the stem(s) {dup}; stems must be unique", root)
    if include_unlabelled:
        samples += [Sample(_image_stem(p), p, None) for p in lone_images]
        lone_images = []

    split = info.get("split")
    if split is not None:
        known = {s.stem for s in samples}
        unknown = sorted(set().union(*map(set, split.values())) - known)
        if unknown:
            raise TEMInputError(f"split names stems that are not in the data set: {unknown[:5]}",
                                root / "dataset.json")
    pixel = info.get("pixel_size_nm")
    return Dataset(root=root, samples=samples, unpaired_images=lone_images,
                   unpaired_masks=lone_masks, pixel_size_nm=float(pixel) if pixel else None,
                   class_names=_class_names(info), split=split, layout=layout)


#: the classes of a mask when the data set declares none
BINARY_CLASSES = (0, 1)


def _value_list(values: np.ndarray) -> str:
    shown = ", ".join(str(v) for v in values[:8].tolist())
    return shown + (f", ... ({values.size} values)" if values.size > 8 else "")


def _refuse_values(values: np.ndarray, classes: set, path: Path) -> TEMInputError:
    """The error for mask ``values`` that are neither binary nor declared classes."""
    found = set(values.tolist())
    declared = ", ".join(map(str, sorted(classes)))
    if max(found) <= 254:
        extra = values[~np.isin(values, list(classes))]
        return TEMInputError(f"mask holds class {_value_list(extra)} but the data set declares the "
                             f"classes {declared} (values found: {_value_list(values)}); list the "
                             "classes in dataset.json", path)
    if found == {0, 1, 255}:
        why = ("0, 1 and 255 at once: is 1 a particle (a 0/1 mask) or background (a 0/255 "
               "mask)? Save it with one convention")
    elif 255 in found:
        why = ("grey levels between 0 and 255: a binary mask with anti-aliased or lossy (JPEG) "
               "edges? Save it as PNG with 0 and 255 only")
    else:
        why = "these are not class indices"
    return TEMInputError(f"mask holds the values {_value_list(values)}: {why}; a mask holds 0/1 or "
                         f"0/255 (binary), or the classes the data set declares ({declared})", path)


def _read_mask_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if len(tif.series) > 1:
                raise ValueError(f"{len(tif.series)} images (series) in one file; a mask is one "
                                 "image")
            return tif.series[0].asarray()
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def read_mask(path, classes=None) -> np.ndarray:
    """Read a label mask as ``uint8`` classes.

    A mask holds 0/1 or 0/255 (binary: read as 0/1), or class indices among ``classes``; one
    colour on black is binary too. Nothing else is guessed at.

    Parameters
    ----------
    path : str or Path
    classes : iterable of int, optional
        The class indices the data set declares (``dataset.json`` ``classes``); default 0 and 1.

    Raises
    ------
    TEMInputError
        Unreadable file, colour mask of more than one colour on black, values that are not class
        indices (fractions, negatives), or values outside 0/1, 0/255 and ``classes`` (0, 1 and
        255 at once; grey edges of an anti-aliased or JPEG mask). The message names the file
        and the values.
    """
    path = Path(path)
    classes = set(BINARY_CLASSES if classes is None else (int(c) for c in classes))
    if not path.is_file():
        raise TEMInputError("no such mask file", path)
    try:
        arr = _read_mask_array(path)
    except Exception as err:  # noqa: BLE001 - any reader failure is reported with the file
        raise TEMInputError(f"could not be read as a mask ({type(err).__name__}: {err})", path) from None
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        colours = np.unique(arr[..., :3].reshape(-1, 3), axis=0)
        if len(colours) == 2 and not colours[0].any():  # black and one colour: a binary mask
            return arr[..., :3].any(axis=-1).astype(np.uint8)
        if not (np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 0] == arr[..., 2])):
            raise TEMInputError("colour mask with differing channels; save masks as one channel "
                                "of class indices (0 = background, 1..K = classes)", path)
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise TEMInputError(f"a mask must be 2-D, got shape {arr.shape}", path)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise TEMInputError(f"a mask holds class indices, got {arr.dtype} values", path)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise TEMInputError("mask holds non-integer or NaN values; masks must hold class "
                                "indices 0..K", path)
    values = np.unique(arr)
    if values.min() < 0:
        raise TEMInputError(f"mask holds negative values {values[values < 0][:5].tolist()}", path)
    found = set(values.tolist())
    if found <= {0, 1} or found <= classes - {IGNORE_LABEL}:
        return arr.astype(np.uint8)
    if found <= {0, 255}:
        return (arr == 255).astype(np.uint8)
    raise _refuse_values(values, classes, path)


def load_pair(sample: Sample, num_classes: int | None = None):
    """Read one sample: ``(Micrograph, mask or None)``, checking that sizes and classes agree
    (mask values are classes ``0..num_classes - 1``; binary without ``num_classes``)."""
    from ..io import read_image

    micrograph = read_image(sample.image)
    if sample.mask is None:
        return micrograph, None
    mask = read_mask(sample.mask, None if num_classes is None else range(num_classes))
    if mask.shape != micrograph.data.shape:
        raise TEMInputError(f"mask is {mask.shape[0]}×{mask.shape[1]} px but its image "
                            f"{sample.image.name} is {micrograph.data.shape[0]}×"
                            f"{micrograph.data.shape[1]} px", sample.mask)
    return micrograph, mask


def split_samples(stems: Iterable[str], fractions=(0.7, 0.1, 0.2), *, seed: int = 0,
                  groups: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Split images (not patches) into train/val/test, reproducibly for a seed.

    Splitting whole images keeps all patches of one source image in the same split; ``groups``
    (stem → group key, e.g. the video or tomogram a frame came from) keeps whole groups together.
    Every split with a non-zero fraction gets at least one group when there are enough groups.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` of stems, each in sorted order.
    """
    stems = sorted(stems)
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or fractions.sum() <= 0:
        raise ValueError(f"split must be three non-negative fractions (train, val, test), got {fractions}")
    fractions = fractions / fractions.sum()
    groups = groups or {}
    keys = sorted({groups.get(s, s) for s in stems})
    order = np.random.default_rng(seed).permutation(len(keys))
    n = len(keys)
    counts = np.floor(fractions * n).astype(int)
    # hand out the remainder by largest fractional part, then make sure no requested split is empty
    for i in np.argsort(-(fractions * n - counts))[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    bounds = np.cumsum(counts)[:-1]
    parts = np.split(np.asarray(keys, dtype=object)[order], bounds)
    out = {}
    for name, part in zip(("train", "val", "test"), parts):
        chosen = set(part.tolist())
        out[name] = [s for s in stems if groups.get(s, s) in chosen]
    return out
