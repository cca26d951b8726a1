"""Segment a folder of micrographs with a tem_keras export folder, without tem_keras.

Needs only TensorFlow and NumPy, plus an image reader: tifffile for .tif/.tiff, Pillow for
.png/.jpg (install what your images need); .npy files are read by NumPy.

    python predict_with_savedmodel.py EXPORT_DIR IMAGES_DIR OUT_DIR [--threshold 0.5]

For every image it writes ``<name>_mask.png`` (0 background, 1.. classes; saved as 0/255 for
binary models when Pillow is there, else ``<name>_mask.npy``) and ``<name>_probabilities.npy``
(``[H, W, C]`` float32) with ``--probabilities``.

The SavedModel does the preprocessing the model was trained with (outlier removal, per-image
standardisation), the padding to the network's down-sampling multiple and the cropping back, so
the images are given as they are, any height and width.

Safety: a SavedModel is a program. Load SavedModels only from people you trust.

For .dm3/.dm4/.ser/.emd files, tiles of very large images and particle measurements in nm, use
tem_keras itself (``tem-keras predict EXPORT_DIR IMAGES_DIR``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")


def read_image(path: Path) -> np.ndarray:
    """One 2-D image as float32 (colour images are averaged to grey)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data = np.load(path)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(path)
    else:
        from PIL import Image

        data = np.asarray(Image.open(path))
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3].mean(axis=-1)
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {data.shape}")
    return data


def write_mask(path: Path, mask: np.ndarray, binary: bool) -> Path:
    try:
        from PIL import Image
    except ImportError:
        np.save(path.with_suffix(".npy"), mask)
        return path.with_suffix(".npy")
    Image.fromarray((mask * 255).astype(np.uint8) if binary else mask.astype(np.uint8)).save(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("images", type=Path, help="folder of images")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--threshold", type=float, default=None,
                        help="particle probability threshold (default: the exported one)")
    parser.add_argument("--probabilities", action="store_true", help="also save probabilities as .npy")
    args = parser.parse_args(argv)

    meta = json.loads((args.export_dir / "tem_keras.json").read_text())
    threshold = meta.get("threshold", 0.5) if args.threshold is None else args.threshold
    model = tf.saved_model.load(str(args.export_dir / "saved_model"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"{args.images}: no images ({', '.join(SUFFIXES)})")
    for path in files:
        image = read_image(path)
        probabilities = model.serve(tf.constant(image[None, :, :, None])).numpy()[0]
        c = probabilities.shape[-1]
        if c <= 2:
            mask = (probabilities[..., -1] >= threshold).astype(np.uint8)
        else:  # background unless 1 - p(background) reaches the threshold, then the likeliest class
            mask = np.where(1.0 - probabilities[..., 0] >= threshold,
                            np.argmax(probabilities[..., 1:], axis=-1) + 1, 0).astype(np.uint8)
        written = write_mask(args.out_dir / f"{path.stem}_mask.png", mask, binary=c <= 2)
        if args.probabilities:
            np.save(args.out_dir / f"{path.stem}_probabilities.npy", probabilities)
        print(f"{path.name}: {image.shape[0]}×{image.shape[1]} px, "
              f"{100 * np.mean(mask > 0):.1f} % particle -> {written.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
