"""Writers: images (ImageJ TIFF with pixel size, ``.npy``, display PNG), masks, probability maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TEMInputError

def check_target(path, overwrite: bool) -> Path:
    """``path`` as a Path, its folder created; ``FileExistsError`` if it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_tiff(path: Path, array: np.ndarray, pixel_size_nm: float | None) -> None:
    import tifffile

    kwargs = {}
    if pixel_size_nm:
        kwargs = {"resolution": (1.0 / pixel_size_nm, 1.0 / pixel_size_nm), "metadata": {"unit": "nm"}}
    tifffile.imwrite(path, array, imagej=True, **kwargs)


def write_image(path, data, pixel_size_nm: float | None = None, *, overwrite: bool = False) -> Path:
    """Write a 2-D image as ImageJ TIFF (float32, pixel size in nm), ``.npy`` or 8-bit ``.png``.

    PNG output is rescaled to 0..255 (a display copy: it loses intensities and the pixel size).
    """
    path = check_target(path, overwrite)
    data = np.asarray(data)
    if data.ndim != 2:
        raise TEMInputError(f"write_image expects a 2-D array, got shape {data.shape}", path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, data.astype(np.float32), pixel_size_nm)
    elif suffix == ".npy":
        np.save(path, data.astype(np.float32))
    elif suffix == ".png":
        from skimage.exposure import rescale_intensity
        from skimage.io import imsave

        imsave(path, rescale_intensity(data.astype(np.float64), out_range=(0, 255)).astype(np.uint8),
               check_contrast=False)
    else:
        raise TEMInputError(f"cannot write images as {suffix!r}; use .tif, .npy or .png", path)
    return path


def write_mask(path, mask, *, overwrite: bool = False) -> Path:
    """Write an integer label mask (0 = background, 1..K = classes) as PNG/TIFF (uint8/16) or ``.npy``."""
    path = check_target(path, overwrite)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise TEMInputError(f"write_mask expects a 2-D array, got shape {mask.shape}", path)
    if mask.dtype.kind == "b":
        mask = mask.astype(np.uint8)
    if mask.dtype.kind not in "iu" or (mask.size and mask.min() < 0):
        raise TEMInputError(f"masks must hold non-negative integers, got dtype {mask.dtype}", path)
    mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
    suffix = path.suffix.lower()
    if suffix == ".png":
        from PIL import Image  # not skimage.io: importing it costs ~0.5 s, a third of a light predict

        Image.fromarray(mask).save(path)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, mask)
    elif suffix == ".npy":
        np.save(path, mask)
    else:
        raise TEMInputError(f"cannot write masks as {suffix!r}; use .png, .tif or .npy", path)
    return path


def write_probabilities(path, probabilities, pixel_size_nm: float | None = None, *,
                        overwrite: bool = False) -> Path:
    """Write a probability map ``[H, W]`` or ``[H, W, C]`` as float32 ImageJ TIFF or ``.npy``.

    Multi-class maps are stored channel-first in the TIFF (one page per class).
    """
    path = check_target(path, overwrite)
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim not in (2, 3):
        raise TEMInputError(f"probabilities must be [H, W] or [H, W, C], got shape {p.shape}", path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, np.moveaxis(p, -1, 0) if p.ndim == 3 else p, pixel_size_nm)
    elif suffix == ".npy":
        np.save(path, p)
    else:
        raise TEMInputError(f"cannot write probabilities as {suffix!r}; use .tif or .npy", path)
    return path
