"""Preprocessing of micrographs as in the papers: outlier removal, standardisation, patches.

References
----------
Horwath, J. P., Zakharov, D. N., Mégret, R. & Stach, E. A. Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images.
npj Comput. Mater. 6, 108 (2020).
Sytwu, K., Groschner, C. & Scott, M. C. Understanding the influence of receptive field and network
complexity in neural network-guided TEM image analysis. Microsc. Microanal. 28, 1896 (2022).

Exported models run the same steps as graph operations: :mod:`tem_keras.data.preprocess_tf` holds
the TensorFlow twin of :func:`remove_outliers`, :func:`standardize`, :class:`Preprocessing` and
:func:`pad_to_multiple`. Whoever changes one of them here must change its twin there the same
way (``tests/test_preprocess_tf.py`` checks that both give the same numbers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import TEMInputError


def median3(image: np.ndarray) -> np.ndarray:
    """3×3 median filter with mirrored borders (``scipy.ndimage.median_filter(size=3)``'s result,
    computed with OpenCV, about 10× faster)."""
    import cv2

    return cv2.medianBlur(np.pad(np.asarray(image, np.float32), 1, mode="symmetric"), 3)[1:-1, 1:-1]


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def remove_outliers(image: np.ndarray, threshold: float | None = None, *, n_sigma: float = 6.0) -> np.ndarray:
    """Replace X-ray hits and hot pixels by the mean of their 8 neighbours.

    A pixel is an outlier when it exceeds the 3×3 median around it by more than ``threshold``
    (Horwath et al. 2020). By default the threshold is ``n_sigma`` robust standard deviations
    (1.4826 × median absolute deviation) of the image minus its median filter. Outliers are
    replaced by the mean of their neighbours that are not outliers themselves (so clusters of hot
    pixels do not feed each other), or by the local median when all neighbours are outliers.

    Parameters
    ----------
    image : ndarray, 2-D
    threshold : float, optional
        Absolute excess over the local median, in image units.
    n_sigma : float
        Threshold in robust standard deviations when ``threshold`` is None.

    Returns
    -------
    ndarray, float32
        A copy with the outliers replaced.
    """
    image = np.asarray(image, dtype=np.float32)
    median = median3(image)
    excess = image - median
    if threshold is None:
        mad = np.median(np.abs(excess - np.median(excess)))
        threshold = n_sigma * 1.4826 * mad if mad > 0 else np.inf
    hot = excess > threshold
    out = image.copy()
    if not hot.any():
        return out
    rows, cols = np.nonzero(hot)
    values = np.pad(image, 1, mode="symmetric")
    good = np.pad(~hot, 1, mode="symmetric")
    sums, counts = np.zeros(rows.size), np.zeros(rows.size)
    for dy, dx in _NEIGHBOURS:  # 8 gathers at the outliers only
        g = good[rows + 1 + dy, cols + 1 + dx]
        sums += np.where(g, values[rows + 1 + dy, cols + 1 + dx], 0.0)
        counts += g
    sums, counts = sums.astype(np.float32), counts.astype(np.float32)
    out[rows, cols] = np.where(counts > 0, sums / np.maximum(counts, 1), median[rows, cols])
    return out


def standardize(image: np.ndarray, method: str = "standard", *, percentiles=(1.0, 99.0)) -> np.ndarray:
    """Normalise one image.

    ``"standard"`` gives mean 0 and standard deviation 1 (per image, as in the papers);
    ``"percentile"`` maps the given percentiles to 0 and 1 (robust to a few very bright pixels).

    Raises
    ------
    TEMInputError
        NaN or infinite pixels, or a constant image.
    """
    image = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        raise TEMInputError(f"image has {int(np.sum(~np.isfinite(image)))} NaN or infinite pixels")
    if method == "standard":
        center, scale = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    elif method == "percentile":
        center, hi = np.percentile(image, percentiles)
        scale = float(hi - center)
    else:
        raise ValueError(f"method must be 'standard' or 'percentile', got {method!r}")
    if not scale > 0:
        raise TEMInputError("image is constant: it cannot be normalised")
    return ((image - center) / scale).astype(np.float32)


@dataclass(frozen=True)
class Preprocessing:
    """What is done to every image before the model sees it (stored in run and export configs).

    Attributes
    ----------
    remove_outliers : bool
        Replace X-ray hits / hot pixels (:func:`remove_outliers`).
    outlier_sigma : float
        Robust threshold for them.
    normalization : {"standard", "percentile"}
        See :func:`standardize`.
    percentiles : tuple of float
        Used by ``"percentile"``.
    """

    remove_outliers: bool = True
    outlier_sigma: float = 6.0
    normalization: str = "standard"
    percentiles: tuple = (1.0, 99.0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if not np.all(np.isfinite(image)):
            raise TEMInputError(f"image has {int(np.sum(~np.isfinite(image)))} NaN or infinite pixels")
        if self.remove_outliers:
            image = remove_outliers(image, n_sigma=self.outlier_sigma)
        return standardize(image, self.normalization, percentiles=self.percentiles)

    def to_dict(self) -> dict:
        return {**asdict(self), "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, config: dict) -> "Preprocessing":
        return cls(**{**config, "percentiles": tuple(config.get("percentiles", (1.0, 99.0)))})


def pad_to_multiple(image: np.ndarray, multiple: int):
    """Reflect-pad ``[H, W]`` at the bottom and right so both sides are multiples of ``multiple``.

    Returns the padded image and the ``(H, W)`` to crop back to. Images smaller than the padding
    are padded symmetrically (repeating), so even a 3×3 image reaches one down-sampling multiple.
    The graph twin is :func:`tem_keras.data.preprocess_tf.pad_to_multiple_tf`.
    """
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "symmetric"
        widths = ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, widths, mode=mode)
    return image, (h, w)


def patch_origins(length: int, patch: int, stride: int) -> np.ndarray:
    """Start indices of patches covering ``length`` pixels; the last patch ends at the border."""
    if length < patch:
        raise ValueError(f"length {length} is smaller than the patch size {patch}")
    starts = np.arange(0, length - patch + 1, stride)
    if starts[-1] != length - patch:
        starts = np.append(starts, length - patch)
    return starts


def extract_patches(image: np.ndarray, mask: np.ndarray | None = None, patch_size: int = 256,
                    stride: int | None = None, *, source: str | None = None):
    """Cut an image (and its mask) into square patches on a regular grid.

    The grid covers the whole image: the last row and column of patches are moved back to end at
    the border, so no pixels are lost and every patch is full-size.

    Parameters
    ----------
    image : ndarray ``[H, W]``
    mask : ndarray ``[H, W]``, optional
    patch_size : int
    stride : int, optional
        Step between patches; ``patch_size`` (no overlap) by default.
    source : str, optional
        Name used in the error message.

    Returns
    -------
    patches : ndarray ``[N, patch_size, patch_size]``
    mask_patches : ndarray ``[N, patch_size, patch_size]`` or None
    origins : ndarray ``[N, 2]`` of (row, column)

    Raises
    ------
    TEMInputError
        When the image is smaller than one patch.
    """
    image = np.asarray(image)
    h, w = image.shape
    if h < patch_size or w < patch_size:
        raise TEMInputError(f"image is {h}×{w} px, smaller than the {patch_size} px patch size; "
                            "choose a smaller patch_size", source)
    stride = stride or patch_size
    rows, cols = patch_origins(h, patch_size, stride), patch_origins(w, patch_size, stride)
    origins = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_size, patch_size))
    patches = windows[origins[:, 0], origins[:, 1]].copy()
    mask_patches = None
    if mask is not None:
        mwin = np.lib.stride_tricks.sliding_window_view(np.asarray(mask), (patch_size, patch_size))
        mask_patches = mwin[origins[:, 0], origins[:, 1]].copy()
    return patches, mask_patches, origins


def foreground_patches(mask_patches: np.ndarray, min_foreground_pixels: int = 1) -> np.ndarray:
    """Boolean selector of patches holding at least ``min_foreground_pixels`` non-background pixels.

    Sytwu et al. (2022) drop background-only patches from training.
    """
    counts = np.count_nonzero(mask_patches.reshape(len(mask_patches), -1), axis=1)
    return counts >= min_foreground_pixels
