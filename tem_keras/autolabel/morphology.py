"""The morphological steps of the automatic labeller, each sized by the particle diameter.

* :func:`local_background` -- the background level under the particles, a grey closing (dark
  particles) or opening (bright particles) with a disk wider than the particles, i.e. Sternberg's
  rolling ball [1]_: it follows illumination gradients and support thickness that vary more
  slowly than the particles, which a global threshold cannot.
* :func:`remove_specks` and :func:`fill_holes` -- connected components too small to be a
  particle, and enclosed background too small to be anything but a gap inside one.
* :func:`refine_edges` -- the outline moved onto the steepest edge around the thresholded
  particles: a watershed of the gradient magnitude between the thresholded particles and the
  background farther than a few pixels (marker-controlled watershed, Beucher & Meyer [2]_).
  A threshold puts the outline at a fixed fraction of the contrast; the steepest edge is where
  the particle ends whatever its contrast: at mid-height for a sharp edge blurred by the
  microscope, at the faint rim for a rounded particle whose projected thickness falls off.

References
----------
.. [1] S. R. Sternberg, "Biomedical image processing", Computer 16, 22-34 (1983).
.. [2] S. Beucher, F. Meyer, "The morphological approach to segmentation: the watershed
       transformation", in *Mathematical Morphology in Image Processing*, E. R. Dougherty
       (ed.), Marcel Dekker, 433-481 (1993).
.. [3] J. Serra, *Image Analysis and Mathematical Morphology*, Academic Press (1982).
"""

from __future__ import annotations

import numpy as np

from ..analysis.baselines import gaussian_wide, sobel_magnitude

__all__ = ["disk", "local_background", "remove_specks", "fill_holes", "refine_edges"]


def disk(radius: int) -> np.ndarray:
    """Disk footprint of ``radius`` pixels as a uint8 array ``(2r + 1, 2r + 1)``."""
    import cv2

    r = max(0, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def local_background(signal: np.ndarray, radius: float, *, presmooth: float = 1.0) -> np.ndarray:
    """Background under bright particles: grey opening with a disk of ``radius`` pixels.

    Parameters
    ----------
    signal : (H, W) ndarray of float32
        Image with the particles bright (invert bright-field images first).
    radius : float
        Disk radius in pixels; particles narrower than ``2 * radius`` are removed by the opening.
    presmooth : float
        Gaussian smoothing (pixels) before the opening, so that it follows the mean background
        and not the peaks of its noise.

    Returns
    -------
    (H, W) ndarray of float32
        The opening, smoothed by a Gaussian of half the radius. Computed on a copy reduced by
        ``radius // 8`` (area averaging) and interpolated back: the result varies on the scale
        of the radius, so 8 pixels per radius are enough, and a wide disk stays cheap.
    """
    import cv2

    r = max(2, int(round(radius)))
    smooth = gaussian_wide(np.asarray(signal, np.float32), presmooth)
    height, width = smooth.shape
    factor = max(1, min(r // 8, min(height, width) // 8))
    small = smooth if factor == 1 else cv2.resize(
        smooth, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, disk(r // factor),
                              borderType=cv2.BORDER_REFLECT)
    opened = gaussian_wide(opened, max(1.0, r / factor / 2))
    if factor > 1:
        opened = cv2.resize(opened, (width, height), interpolation=cv2.INTER_LINEAR)
    return opened


def _components(mask: np.ndarray, connectivity: int):
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                           connectivity=connectivity)
    return labels, stats


def remove_specks(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its connected components (8-connected) of fewer than ``min_area`` pixels."""
    import cv2

    labels, stats = _components(mask, 8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """``mask`` with its holes of at most ``max_area`` pixels filled.

    A hole is a 4-connected component of the background that does not touch the image border;
    larger ones (the background enclosed by a ring of touching particles, a loop of an
    aggregate) stay open.
    """
    import cv2

    background = ~np.asarray(mask, bool)
    labels, stats = _components(background, 4)
    height, width = background.shape
    x, y, w, h, area = (stats[:, i] for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                              cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA))
    on_border = (x == 0) | (y == 0) | (x + w == width) | (y + h == height)
    fill = (area <= max_area) & ~on_border
    fill[0] = False                        # label 0 is the mask itself
    return np.asarray(mask, bool) | fill[labels]


def refine_edges(core: np.ndarray, smoothed: np.ndarray, radius: int) -> np.ndarray:
    """Move the outline of ``core`` outwards onto the steepest edge within ``radius`` pixels.

    Parameters
    ----------
    core : (H, W) ndarray of bool
        The thresholded particles; they are kept whole.
    smoothed : (H, W) ndarray of float32
        The smoothed image whose Sobel gradient magnitude is flooded.
    radius : int
        How far (pixels) the outline may move; the pixels beyond ``radius + 1`` are background.

    Returns
    -------
    (H, W) ndarray of bool
        ``core`` plus the pixels of the band that the watershed gives to the particles.
    """
    import cv2
    from skimage.segmentation import watershed

    core = np.asarray(core, bool)
    if not core.any():
        return core
    radius = max(1, int(radius))
    band = cv2.dilate(core.astype(np.uint8), disk(radius + 1)).astype(bool)
    rows, cols = np.nonzero(band)
    top, bottom = max(0, rows.min() - 1), rows.max() + 2
    left, right = max(0, cols.min() - 1), cols.max() + 2
    window = (slice(top, bottom), slice(left, right))
    markers = np.where(core[window], 2, np.where(band[window], 0, 1)).astype(np.int32)
    flooded = watershed(sobel_magnitude(np.ascontiguousarray(smoothed[window])), markers,
                        mask=cv2.dilate(band[window].astype(np.uint8), disk(1)).astype(bool))
    out = core.copy()
    out[window] |= flooded == 2
    return out
