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
particle probability for two classes, one page per class otherwise).

Not here (use tem_keras): tiles for images beyond the memory budget, ``otsu`` thresholds,
test-time augmentation, DigitalMicrograph/TIA/EMD/MRC files, particle tables, pixel sizes.

References
----------
onnxruntime, https://onnxruntime.ai (CPU execution provider).
"""

from __future__ import annotations

import argparse
import json
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

def _grey(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return (np.asarray(array[..., :3], np.float64) @ _LUMINANCE).astype(np.float32)
    return array


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


def read_frames(path):
    """``(name, image [H, W] float32)`` of every frame of one file, or of every image of a folder.

    ``name`` is the file's stem, or ``<stem>_f<frame:05d>`` for the frames of a stack (a
    multi-page TIFF or a 3-D ``.npy``). Colour bitmaps are converted to grey (BT.709).
    """
    path = Path(path)
    if path.is_dir():
        for p in input_files([path]):
            yield from read_frames(p)
        return
    if not path.is_file():
        raise ExportInputError("no such file or folder", path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            data = _grey(tifffile.imread(path))
        elif suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as picture:
                data = _grey(np.asarray(picture))
        else:
            raise ExportInputError(f"cannot read {suffix!r} files here; use {', '.join(IMAGE_SUFFIXES)} "
                                   "(tem_keras reads .dm3/.dm4/.ser/.emd/.mrc)", path)
    except ExportInputError:
        raise
    except Exception as error:  # noqa: BLE001  (each library has its own errors)
        raise ExportInputError(f"could not be read ({type(error).__name__}: {error})", path) from None
    if data.dtype.kind not in "biuf":
        raise ExportInputError(f"holds {data.dtype} values, not pixel intensities", path)
    if data.ndim == 2:
        yield path.stem, np.asarray(data, np.float32)
    elif data.ndim == 3:
        for i in range(len(data)):
            yield f"{path.stem}_f{i:05d}", np.asarray(data[i], np.float32)
    else:
        raise ExportInputError(f"expected an image [H, W] or a stack [frames, H, W], got shape "
                               f"{data.shape}", path)


def _target(path: Path, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
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
        model = OnnxModel(args.model, threads=args.threads)
        threshold = model.threshold if args.threshold is None else args.threshold
        n = 0
        for source in input_files(args.images):  # each file once
            for name, image in read_frames(source):
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
    except (ExportInputError, FileExistsError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {n} mask(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
