"""What the particles of a micrograph look like, read from the image alone: polarity and size.

Both come from the *domes* of the image: the parts of a smoothed image that rise above
everything connecting them to the image border, found by grey-level reconstruction from the
border (Vincent 1993 [1]_, the same step as Horwath et al.'s pseudo-labels [2]_). Particles
are such domes on one side of the grey scale (dark basins in bright-field TEM, bright domes in
HAADF-STEM); background, illumination gradients and support that reach the border are not.

* Polarity: the side whose tallest domes are taller. Noise makes domes of equal height on both
  sides; particles add tall ones on theirs. The 99.9th percentile of the heights is used, not
  the total volume, so that a few strong particles on a textured support with many shallow
  pores (Pt on alumina in HAADF) still decide.
* Scale: the dome pixels above Otsu's threshold of the heights form a first mask; the particle
  diameter is read from its Euclidean distance transform (twice the largest distance inside
  each component, plus one), the median over components weighted by their area. The largest
  inscribed disk does not grow when particles touch or chain (soot aggregates), unlike the
  area of the component, and small noise specks carry little weight.

References
----------
.. [1] L. Vincent, "Morphological grayscale reconstruction in image analysis: applications and
       efficient algorithms", IEEE Transactions on Image Processing 2, 176-201 (1993).
.. [2] J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features
       of deep learning models for segmentation of high-resolution transmission electron
       microscopy images", npj Computational Materials 6, 108 (2020).
.. [3] P. Soille, *Morphological Image Analysis*, 2nd ed., Springer (2003), ch. 6 (regional
       extrema, dome extraction) and ch. 4 (distance transform, granulometry).
"""

from __future__ import annotations

import numpy as np

from ..analysis.baselines import gaussian, otsu_split, reconstruct_from_border
from .morphology import fill_holes

__all__ = ["dome_heights", "particle_polarity", "particle_diameter", "estimate_particle_diameter"]

#: upper percentile of the dome heights compared between the two sides (see module docstring)
POLARITY_PERCENTILE = 99.9


def dome_heights(smoothed: np.ndarray, polarity: str) -> np.ndarray:
    """Height of every pixel above the reconstruction of the image from its border.

    Parameters
    ----------
    smoothed : (H, W) ndarray of float32
        The (smoothed) image.
    polarity : {"bright", "dark"}
        ``"bright"``: ``f - R_dilation(f)``, the bright domes that do not reach the border;
        ``"dark"``: ``R_erosion(f) - f``, the depth of the dark basins.

    Returns
    -------
    (H, W) ndarray of float32, >= 0
    """
    if polarity == "bright":
        return smoothed - reconstruct_from_border(smoothed, "dilation", levels=65536)
    return reconstruct_from_border(smoothed, "erosion", levels=65536) - smoothed


def _upper_percentile(values: np.ndarray, q: float) -> float:
    flat = values.ravel()
    k = min(flat.size - 1, int(np.ceil(q / 100.0 * (flat.size - 1))))
    return float(np.partition(flat, k)[k])


def particle_polarity(image: np.ndarray, *, sigma: float = 2.0) -> tuple[str, float]:
    """Whether the particles are darker or brighter than their surroundings.

    Parameters
    ----------
    image : (H, W) ndarray
        The micrograph.
    sigma : float
        Gaussian smoothing (pixels) before the domes are taken; it removes pixel noise.

    Returns
    -------
    polarity : {"dark", "bright"}
    score : float
        ``log(h_bright / h_dark)`` with ``h`` the 99.9th percentile of the bright-dome heights and
        of the dark-basin depths: positive for bright particles. Its magnitude is the margin
        (0.5 means the taller side is 1.6 times taller; near 0 the image gives no clear answer).
    """
    smoothed = gaussian(np.asarray(image, np.float32), sigma)
    tiny = np.finfo(np.float32).tiny
    bright = max(_upper_percentile(dome_heights(smoothed, "bright"), POLARITY_PERCENTILE), tiny)
    dark = max(_upper_percentile(dome_heights(smoothed, "dark"), POLARITY_PERCENTILE), tiny)
    score = float(np.log(bright / dark))
    return ("bright" if score > 0 else "dark"), score


def particle_diameter(mask: np.ndarray, *, min_area: int = 4) -> float:
    """Typical particle diameter (pixels) of a binary mask, from its distance transform.

    For each connected component (8-connected, holes filled, components under ``min_area``
    pixels ignored) the diameter is ``2 * max(distance) + 1``, which is within 3 % of the
    diameter of a digital disk of 10 px or more (6.7 px for disks of 5 and 6 px). The result
    is the median over components weighted by their area; NaN when no component is left.

    Parameters
    ----------
    mask : (H, W) array_like of bool
    min_area : int
        Smallest component counted, in pixels.
    """
    import cv2

    m = fill_holes(np.asarray(mask, bool), np.inf).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    keep = area >= min_area
    keep[0] = False
    if not keep.any():
        return float("nan")
    distance = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = labels > 0
    largest = np.zeros(n, np.float32)
    np.maximum.at(largest, labels[inside], distance[inside])
    diameter, weight = 2.0 * largest[keep] + 1.0, area[keep]
    order = np.argsort(diameter)
    cumulative = np.cumsum(weight[order])
    return float(diameter[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def estimate_particle_diameter(image: np.ndarray, polarity: str, *, sigma: float = 1.0) -> float:
    """Typical particle diameter (pixels) of a micrograph: :func:`particle_diameter` of its domes.

    Parameters
    ----------
    image : (H, W) ndarray
        The micrograph.
    polarity : {"dark", "bright"}
        Particle contrast (:func:`particle_polarity`).
    sigma : float
        Gaussian smoothing (pixels) before the domes are taken; small, so that 5-px particles
        keep their size.

    Returns
    -------
    float
        Diameter in pixels; NaN when the image has no domes.
    """
    heights = dome_heights(gaussian(np.asarray(image, np.float32), sigma), polarity)
    return particle_diameter(heights > otsu_split(heights).threshold)
