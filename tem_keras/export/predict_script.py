"""Run an exported model with onnxruntime and NumPy only: no TensorFlow, no tem_keras.

This one file is both
- :mod:`tem_keras.export.predict_script`, the light engine of :func:`tem_keras.predict` and ``tem-keras
  predict`` for export folders that hold ``model.onnx``, and
- ``predict.py`` in every such export folder (a verbatim copy written by
  :func:`tem_keras.export`), which a colleague runs after ``pip install onnxruntime numpy
  tifffile pillow``::

      python predict.py image.tif more.png stack.tif -o masks/
      python predict.py images/ -o masks/ --threshold 0.4 --probabilities

So it imports nothing from tem_keras and only NumPy and onnxruntime at module level
(tifffile and Pillow when a TIFF or a bitmap is read or written).

What it computes
----------------
``model.onnx`` holds the whole serving graph of the export (:mod:`tem_keras.export.serving`):
outlier removal and per-image standardisation, padding to the down-sampling multiple, the network
and cropping back. Each image is predicted whole (the graph takes any height and width), which is
what :func:`tem_keras.predict` does for every image whose activations fit its memory budget
(``activation_bytes_per_pixel`` in ``tem_keras.json``); larger images tem_keras cuts into tiles,
whose blend equals the whole-image prediction up to float round-off except a band of about half a
receptive field along the border. Masks are ``probability(particle) >= threshold`` (the export's
threshold unless one is given; the argmax for more than two classes without a threshold), as
:func:`tem_keras.inference.labels_from_probabilities`, which uses :func:`labels_from_probabilities`
here. Outputs are named as ``tem-keras predict`` names them: ``<stem>_mask.png`` (or ``.tif``),
``<stem>_f<frame>_mask.png`` for the frames of a stack, ``<stem>_probabilities.tif`` (float32, the
particle probability for two classes, one page per class otherwise), with the one rule of
:func:`output_stems` (also tem_keras's) for inputs whose names would collide: ``a.tif`` and
``a.png`` give ``a_tif_mask.png`` and ``a_png_mask.png``, ``d1/x.npy`` and ``d2/x.npy`` give
``d1_x_npy_...`` and ``d2_x_npy_...``, so "wrote 2 masks" is two files.

Images are read as tem_keras reads them: colour to grey with the BT.709 weights, alpha dropped,
palette images by their colours, grey + alpha as the grey; every series of a TIFF (a file written
page by page) as frames, pages of different sizes refused; an RGB(A) ``.npy`` ``[H, W, 3|4]`` as
one image.

Not here (use tem_keras): tiles for images beyond the memory budget, ``otsu`` thresholds,
test-time augmentation, DigitalMicrograph/TIA/EMD/MRC files, particle tables, pixel sizes.

References
----------
onnxruntime, https://onnxruntime.ai (CPU execution provider).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "ExportInputError",
    "OnnxModel",
    "foreground_probability",
    "input_files",
    "labels_from_probabilities",
    "main",
    "output_stems",
    "path_stem",
    "parse_threshold",
    "read_frames",
    "read_metadata",
    "write_mask",
    "write_probabilities",
]

#: files :func:`read_frames` reads (TIFF through tifffile, bitmaps through Pillow, NumPy arrays)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")

_LUMINANCE = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as tem_keras.io for colour files


class ExportInputError(ValueError):
    """Bad input: ``problem`` names what is wrong with ``path`` (a file or folder, or None)."""

    def __init__(self, problem: str, path=None):
        self.problem, self.path = problem, None if path is None else str(path)
        super().__init__(problem if path is None else f"{path}: {problem}")


# ---------------------------------------------------------------------------------------------
# Labels from probabilities (tem_keras.inference.masks adds Otsu thresholds and the graph twin)
# ---------------------------------------------------------------------------------------------

def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """The particle probability ``[...]`` of class probabilities ``[..., C]``.

    The only channel of a 1-channel sigmoid output, ``p[..., 1]`` for two classes, and
    ``1 - p(background)`` for more.
    """
    c = probabilities.shape[-1]
    if c == 1:
        return probabilities[..., 0]
    if c == 2:
        return probabilities[..., 1]
    return 1.0 - probabilities[..., 0]


def labels_from_probabilities(probabilities: np.ndarray, threshold: float | None = None):
    """Label mask (uint8) and the threshold used, from class probabilities ``[..., C]``.

    ``threshold`` None: 0.5 for binary models (the argmax), the plain argmax for ``C > 2``
    (returned threshold None). A number: the particle probability (``1 - p(background)`` for
    ``C > 2``) must reach it; a foreground pixel of a multi-class model gets its most probable
    foreground class.
    """
    c = probabilities.shape[-1]
    if threshold is None and c > 2:
        return probabilities.argmax(-1).astype(np.uint8), None
    threshold = 0.5 if threshold is None else float(threshold)
    mask = foreground_probability(probabilities) >= threshold
    if c > 2:
        return np.where(mask, 1 + probabilities[..., 1:].argmax(-1), 0).astype(np.uint8), threshold
    return mask.astype(np.uint8), threshold


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

def read_metadata(folder) -> dict:
    """``tem_keras.json`` of an export folder that holds ``model.onnx``.

    Raises
    ------
    ExportInputError
        No such folder, no or a corrupt ``tem_keras.json``, or no ``model.onnx``.
    """
    folder = Path(folder)
    path = folder / "tem_keras.json"
    if not path.is_file():
        raise ExportInputError("is not a tem_keras export folder (no tem_keras.json)", folder)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
            raise ValueError("the 'files' table is missing")
    except ValueError as error:
        raise ExportInputError(f"is corrupt ({error}); export the model again", path) from None
    onnx = meta["files"].get("onnx")
    if not onnx:
        why = (meta.get("skipped") or {}).get("onnx", "it was exported without the 'onnx' format")
        raise ExportInputError(f"has no model.onnx ({why})", folder)
    if not (folder / onnx).is_file():
        raise ExportInputError(f"is a partial export: {onnx} listed in tem_keras.json is missing; "
                               "export the model again", folder)
    return meta


class OnnxModel:
    """An export folder's ``model.onnx`` in an onnxruntime session, with its threshold and classes.

    Parameters
    ----------
    folder : str or Path
        The export folder (``tem_keras.json`` + ``model.onnx``).
    threads : int, optional
        onnxruntime's intra-op threads (default: its choice, one per physical core).

    Attributes
    ----------
    folder : Path
    metadata : dict
        ``tem_keras.json``.
    threshold : float or None
        The exported threshold of the particle probability (None: argmax).
    num_classes, downsampling : int
    classes : dict
        Class index (str) -> name.
    """

    def __init__(self, folder, *, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.metadata = meta = read_metadata(self.folder)
        threshold = meta.get("threshold")
        self.threshold = float(threshold) if isinstance(threshold, (int, float)) else None
        self.num_classes = int(meta.get("num_classes", 2))
        self.downsampling = int(meta.get("downsampling", 1))
        self.classes = dict(meta.get("classes") or {})
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        # no busy-waiting between operators: on a shared machine spinning threads take the cores
        # from the ones with work (measured 1.5 vs 2.5 s per 1024² image at a load of 6 on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = self.folder / meta["files"]["onnx"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise ExportInputError(f"could not be loaded by onnxruntime ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0][:200] if str(error) else ''}); "
                                   "export the model again", path) from None
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, image, name=None) -> np.ndarray:
        """Class probabilities ``[H, W, C]`` (float32) of one raw 2-D image.

        Raises
        ------
        ExportInputError
            Not 2-D, NaN or infinite pixels, or a constant image (``name`` is the file named).
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or min(image.shape) < 1:
            raise ExportInputError(f"expected one 2-D image [H, W], got shape {image.shape}", name)
        finite = np.isfinite(image)
        if not finite.all():
            raise ExportInputError(f"image has {int(image.size - finite.sum())} NaN or infinite pixels",
                                   name)
        if image.min() == image.max():
            raise ExportInputError("image is constant: it cannot be normalised", name)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(image)[None, :, :, None]})[0][0]
        if not np.isfinite(out).all():  # the normalisation divided by a zero spread
            raise ExportInputError("image is (nearly) constant: it cannot be normalised", name)
        return out

    def activation_gb(self, shape) -> float | None:
        """Estimated activation memory (GB) of predicting an image of ``shape`` whole (None: unknown)."""
        per_pixel = self.metadata.get("activation_bytes_per_pixel")
        if not per_pixel:
            return None
        d = self.downsampling
        h, w = (-(-int(s) // d) * d for s in shape)
        return float(per_pixel) * h * w / 1e9

    def __repr__(self):
        return (f"OnnxModel({str(self.folder)!r}, classes={self.num_classes}, "
                f"threshold={self.threshold})")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _luminance(rgb) -> np.ndarray:
    """``[..., 3]`` RGB to grey with the BT.709 weights (as ``tem_keras.io.core.luminance``)."""
    return (np.asarray(rgb, np.float64) @ _LUMINANCE).astype(np.float32)


def _read_bitmap(path: Path) -> np.ndarray:
    """A PNG/JPEG/BMP as tem_keras reads it (imageio's Pillow plugin): palettes by colour, 16-bit
    PNG as uint16; grey + alpha -> the grey; colour -> luminance, alpha dropped."""
    from PIL import Image

    with Image.open(path) as picture:
        if picture.mode == "P":
            picture = picture.convert(picture.palette.mode)
        elif picture.format == "PNG" and picture.mode == "I":
            picture = picture.convert("I;16" if sys.byteorder == "little" else "I;16B")
        data = np.asarray(picture)
    if data.ndim == 3:
        data = data[..., 0] if data.shape[-1] == 2 else _luminance(data[..., :3])
    return data


#: photometric tags of colour samples (others are grey, or frames)
_COLOUR = {"RGB", "YCBCR", "CIELAB", "ICCLAB", "ITULAB", "SEPARATED"}


def _read_tiff(path: Path) -> np.ndarray:
    """Every series of a TIFF as frames ``[N, H, W]``, as tem_keras reads them: contiguous RGB
    samples are colour (luminance), grey + extra samples keep the grey, any other axis is a
    frame axis; series (a file written page by page has one per page) of different sizes are
    refused."""
    import tifffile

    stacks = []
    with tifffile.TiffFile(path) as tif:
        for series in tif.series:
            page, axes, data = series.keyframe, series.axes, series.asarray()
            if page.axes.endswith("S") and page.axes.index("S") > page.axes.index("X"):
                photometric = getattr(page.photometric, "name", str(page.photometric))
                if photometric in _COLOUR and page.shape[-1] >= 3:
                    data, axes = _luminance(data[..., :3]), axes[:-1]
                elif page.extrasamples:
                    data, axes = data[..., 0], axes[:-1]
            order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
            stacks.append(np.transpose(data, order).reshape(-1, data.shape[axes.index("Y")],
                                                            data.shape[axes.index("X")]))
    sizes = {s.shape[1:] for s in stacks}
    if len(sizes) > 1:
        shown = "; ".join(f"series {k}: {len(s)} frame(s) of {s.shape[1]}×{s.shape[2]} px"
                          for k, s in enumerate(stacks[:4]))
        raise ExportInputError(f"holds pages of different sizes ({shown}); a stack needs one size: "
                               "save each size in its own file", path)
    return stacks[0] if len(stacks) == 1 else np.concatenate(stacks)


def _read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` as tem_keras reads it: ``[H, W]``, frames ``[..., H, W]``, or one RGB(A) image
    ``[H, W, 3|4]``; other channels-last data (a spectrum per pixel) is refused."""
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    shape = data.shape
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return _luminance(data[..., :3])
    if len(shape) == 3 and (shape[-1] <= 4 < shape[0] or shape[0] == shape[1] != shape[2]):
        raise ExportInputError(f"3-D data of shape {tuple(shape)} looks like [H, W, channels] (a "
                               "spectrum per pixel), not a stack of frames [N, H, W]; save one "
                               "image per frame", path)
    return data


def input_files(paths) -> list[Path]:
    """The files of ``paths`` (files, and the image files of folders, sorted), each once: a file
    given twice, or given and inside a folder given, is predicted once, where it first appears."""
    files, seen = [], set()
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ExportInputError(f"holds no image files ({', '.join(IMAGE_SUFFIXES)})", path)
        else:
            found = [path]
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files


def read_frames(path, stem=None):
    """``(name, image [H, W] float32)`` of every frame of one file, or of every image of a folder.

    ``name`` is ``stem`` (default: the file's stem; :func:`output_stems` makes names unique
    among several files), or ``<stem>_f<frame:05d>`` for the frames of a stack (a TIFF of
    several pages or series, a 3-D ``.npy``). Images are read as tem_keras reads them (see the
    module docstring).
    """
    path = Path(path)
    if path.is_dir():
        files = input_files([path])
        for p, name in zip(files, output_stems(files)):
            yield from read_frames(p, name)
        return
    if not path.is_file():
        raise ExportInputError("no such file or folder", path)
    stem = path.stem if stem is None else stem
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ExportInputError(f"cannot read {suffix!r} files here; use {', '.join(IMAGE_SUFFIXES)} "
                               "(tem_keras reads .dm3/.dm4/.ser/.emd/.mrc)", path)
    reader = {".npy": _read_npy, ".tif": _read_tiff, ".tiff": _read_tiff}.get(suffix, _read_bitmap)
    try:
        data = reader(path)
    except ExportInputError:
        raise
    except Exception as error:  # noqa: BLE001  (each library has its own errors)
        reason = " ".join(str(error).split())[:200]
        raise ExportInputError(f"could not be read ({type(error).__name__}: {reason})", path) from None
    if data.dtype.kind not in "biuf":
        raise ExportInputError(f"holds {data.dtype} values, not pixel intensities", path)
    if data.ndim < 2 or 0 in data.shape:
        raise ExportInputError(f"expected an image [H, W] or a stack [frames, H, W], got shape "
                               f"{data.shape}", path)
    frames = data.reshape(-1, *data.shape[-2:])
    if len(frames) == 1:
        yield stem, np.asarray(frames[0], np.float32)
        return
    for i in range(len(frames)):
        yield f"{stem}_f{i:05d}", np.asarray(frames[i], np.float32)


def _output_problem(error: OSError) -> str:
    """``PATH: problem`` of an ``OSError`` on output (a read-only folder, a file where a folder
    belongs, a full disk), on one line."""
    problem = " ".join((error.strerror or str(error) or type(error).__name__).split())
    if error.filename is None:  # ours: the message names the path
        return problem
    return f"{os.fsdecode(error.filename)}: {problem.rstrip('.').lower()}; choose another output"


#: tem_keras's record of the files it wrote in a folder (``tem_keras.io.outputs``), one name a line
MANIFEST = ".tem_keras_output"


def _target(path: Path, overwrite: bool) -> Path:
    """``path``, recorded in its folder's manifest before it is written; an existing file is
    replaced only with ``overwrite``, and only when the manifest lists it (written by this script
    or tem_keras: a file of the user's is never replaced)."""
    manifest = path.parent / MANIFEST
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
        listed = manifest.read_text(encoding="utf-8").splitlines() if manifest.is_file() else []
        if path.is_file() and path.name not in listed:  # (a folder in the way fails on writing)
            raise ExportInputError("was not written by predict.py or tem_keras, and --overwrite replaces only "
                                   "their files: move it, or choose another output folder", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "a", encoding="utf-8") as f:
        f.write(f"{path.name}\n")
    return path


def write_mask(path, mask: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a uint8 label mask as PNG (Pillow) or TIFF (tifffile), as ``tem-keras predict`` does."""
    path = _target(Path(path), overwrite)
    mask = np.asarray(mask, np.uint8)
    if path.suffix.lower() == ".png":
        from PIL import Image

        Image.fromarray(mask).save(path)
    else:
        import tifffile

        tifffile.imwrite(path, mask)
    return path


def write_probabilities(path, probabilities: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write the particle probability (two classes) or all class probabilities (one page per
    class) as a float32 ImageJ TIFF."""
    import tifffile

    path = _target(Path(path), overwrite)
    p = probabilities[..., 1] if probabilities.shape[-1] == 2 else np.moveaxis(probabilities, -1, 0)
    tifffile.imwrite(path, np.ascontiguousarray(p, np.float32), imagej=True)
    return path


# ---------------------------------------------------------------------------------------------
# Output names
# ---------------------------------------------------------------------------------------------

_FRAME_NAME = re.compile(r"(.+)_f\d{5,}")


def _clashing(names) -> set:
    """Positions of ``names`` whose outputs could collide: equal ignoring case (as on macOS and
    Windows), or one a frame name (``<stem>_f00001``) of another."""
    groups: dict = {}
    for i, name in enumerate(names):
        if name is not None:
            groups.setdefault(name.casefold(), []).append(i)
    clash = {i for group in groups.values() if len(group) > 1 for i in group}
    for i, name in enumerate(names):
        frame = name is not None and _FRAME_NAME.fullmatch(name)
        if frame and frame.group(1).casefold() in groups:
            clash.update([i, *groups[frame.group(1).casefold()]])
    return clash


def path_stem(relative) -> str:
    """An output name from a relative path: ``/``, ``\\``, ``.`` and ``:`` become ``_``
    (``d1/x.npy`` -> ``d1_x_npy``)."""
    return re.sub(r"[/\\.:]+", "_", str(relative)).strip("_")


def output_stems(paths) -> list:
    """The name each input's outputs start with, unique among ``paths`` (None stays None).

    The rule: the file's stem (``a.tif`` -> ``a``; frames of a stack add ``_f<frame:05d>``).
    Inputs whose stems are equal ignoring case, or where one stem is another's followed by
    ``_f`` and five or more digits (a frame name), are named instead by their path relative to
    the folder they share, with ``/`` and ``.`` replaced by ``_``: ``a.tif`` + ``a.png`` ->
    ``a_tif``, ``a_png``; ``d1/x.npy`` + ``d2/x.npy`` -> ``d1_x_npy``, ``d2_x_npy``. Names that
    still collide (a file given twice) get their 1-based position appended: ``_2``.
    """
    paths = [None if p is None else os.path.abspath(p) for p in paths]
    names = [None if p is None else Path(p).stem for p in paths]
    clash = _clashing(names)
    if clash:
        try:
            root = os.path.commonpath([os.path.dirname(paths[i]) for i in clash])
        except ValueError:  # different drives
            root = None
        for i in clash:
            names[i] = path_stem(paths[i] if root is None else os.path.relpath(paths[i], root))
    for _ in range(len(names)):
        clash = _clashing(names)
        if not clash:
            break
        for i in clash:
            names[i] = f"{names[i]}_{i + 1}"
    return names


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def parse_threshold(text: str, also: str = "") -> float:
    """A probability threshold in [0, 1] (argparse type); ``also`` names other accepted words in
    the message (``tem-keras predict`` adds ``'otsu'``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]{also}, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    here = Path(__file__).resolve().parent
    default = here if (here / "tem_keras.json").is_file() else None
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "predict.py",
        description="Segment micrographs with an exported tem_keras model (onnxruntime + NumPy).")
    parser.add_argument("images", nargs="+", type=Path, help="image files (.tif, .png, .npy, ...) or folders")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", type=Path, default=default, required=default is None,
                        help="export folder (default: the folder of this script)"
                        if default else "export folder (tem_keras.json + model.onnx)")
    parser.add_argument("--threshold", type=parse_threshold, default=None,
                        help="particle probability threshold in [0, 1] (default: the exported one)")
    parser.add_argument("--mask-format", choices=("png", "tif"), default="png")
    parser.add_argument("--probabilities", action="store_true", help="also write float32 probability TIFFs")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    return parser


def main(argv=None) -> int:
    """``python predict.py IMAGES... -o OUT``; returns the exit status (2 for bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if any(Path(p).resolve() == args.out.resolve() for p in args.images):
            raise ExportInputError("is an input of this command (masks would be written among the "
                                   "images they come from); choose another output folder", args.out)
        model = OnnxModel(args.model, threads=args.threads)
        threshold = model.threshold if args.threshold is None else args.threshold
        n = 0
        files = input_files(args.images)  # each file once
        for source, stem in zip(files, output_stems(files)):
            for name, image in read_frames(source, stem):
                start = time.perf_counter()
                gb = model.activation_gb(image.shape)
                if gb is not None and gb > 4 and not args.quiet:
                    print(f"{name}: predicted whole, about {gb:.1f} GB of activations (tem_keras "
                          "would cut it into tiles)", file=sys.stderr)
                probabilities = model.probabilities(image, source)
                mask, used = labels_from_probabilities(probabilities, threshold)
                write_mask(args.out / f"{name}_mask.{args.mask_format}", mask, overwrite=args.overwrite)
                if args.probabilities:
                    write_probabilities(args.out / f"{name}_probabilities.tif", probabilities,
                                        overwrite=args.overwrite)
                n += 1
                if not args.quiet:
                    print(f"{name}: {image.shape[0]}×{image.shape[1]}, particle fraction "
                          f"{np.count_nonzero(mask) / mask.size:.3f} (threshold {used}), "
                          f"{time.perf_counter() - start:.2f} s")
    except ExportInputError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an unwritable output: one line naming the path
        print(f"{parser.prog}: error: {_output_problem(error)}", file=sys.stderr)
        return 2
    print(f"wrote {n} mask(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
