"""Intensity and class probability along a line across the image (Horwath et al. 2020, Fig. 5).

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Computational Materials 6, 108 (2020).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import _common
from ..validation import check_int

__all__ = ["LineProfile", "line_profile"]


@dataclass
class LineProfile:
    """Result of :func:`line_profile`.

    Attributes
    ----------
    distance : ndarray
        Distance of each sample from ``start`` (nm when the pixel size is known, else px).
    intensity : ndarray
        Image intensity (as given, not standardised) at the samples (bilinear interpolation).
    probability : ndarray
        Probability of the class at the samples.
    rows, cols : ndarray
        Sample coordinates in pixels.
    unit : str
        ``"nm"`` or ``"px"``.
    """

    distance: np.ndarray
    intensity: np.ndarray
    probability: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    unit: str = "px"


def line_profile(image, probabilities, start, end, *, class_index: int = 1, n_points: int | None = None,
                 pixel_size_nm: float | None = None, preprocessing=None, return_figure: bool = False):
    """Sample the image and a class probability along the segment ``start → end``.

    Parameters
    ----------
    image : ndarray ``[H, W]``, Micrograph or path
        The image; its intensities are sampled as they are.
    probabilities : ndarray ``[H, W]`` or ``[H, W, C]``, or keras.Model
        Probability map of the class (or all classes, ``class_index`` is taken), e.g. from
        :func:`tem_keras.inference.predict_image`; or a model, applied to the (standardised) image.
    start, end : (float, float)
        ``(row, col)`` end points in pixels.
    class_index : int
        Class of a ``[H, W, C]`` map or of the model output.
    n_points : int, optional
        Number of samples (default: one per pixel of length, at least 2).
    pixel_size_nm : float, optional
        Distances in nm (default: the Micrograph's pixel size when it has one).
    preprocessing : callable or False, optional
        Used when ``probabilities`` is a model, see :func:`~tem_keras.explain._common.prepare_image`.
    return_figure : bool
        Also return a figure: the image with the line, and both profiles (two y axes).

    Returns
    -------
    profile : LineProfile
    figure : matplotlib.figure.Figure
        Only with ``return_figure=True``.

    References
    ----------
    Horwath et al. 2020, Fig. 5.
    """
    from scipy import ndimage

    from ..io import Micrograph, read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Micrograph):
        pixel_size_nm = pixel_size_nm if pixel_size_nm is not None else image.pixel_size_nm
        image = image.data
    data = np.asarray(image, np.float32)
    if data.ndim != 2:
        raise ValueError(f"line_profile needs a 2-D image, got shape {data.shape}")
    if hasattr(probabilities, "predict") and hasattr(probabilities, "layers"):  # a keras.Model
        batch, (h, w) = _common.model_input_image(probabilities, data, preprocessing)
        probabilities = np.asarray(probabilities(batch, training=False), np.float32)[0, :h, :w]
    prob = np.asarray(probabilities, np.float32)
    if prob.ndim == 3:
        prob = prob[..., check_int("class_index", class_index, 0, prob.shape[-1] - 1)]
    if prob.shape != data.shape:
        raise ValueError(f"probability map {prob.shape} and image {data.shape} differ in size")
    (r0, c0), (r1, c1) = (tuple(float(v) for v in start), tuple(float(v) for v in end))
    for r, c in ((r0, c0), (r1, c1)):
        if not (0 <= r <= data.shape[0] - 1 and 0 <= c <= data.shape[1] - 1):
            raise ValueError(f"point ({r:g}, {c:g}) is outside the {data.shape[0]}×{data.shape[1]} image")
    length = float(np.hypot(r1 - r0, c1 - c0))
    n = check_int("n_points", n_points, 2) if n_points is not None else max(2, int(round(length)) + 1)
    t = np.linspace(0.0, 1.0, n)
    rows, cols = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
    coords = np.vstack([rows, cols])
    intensity = ndimage.map_coordinates(data, coords, order=1, mode="nearest")
    probability = ndimage.map_coordinates(prob, coords, order=1, mode="nearest")
    scale, unit = (pixel_size_nm, "nm") if pixel_size_nm else (1.0, "px")
    profile = LineProfile(t * length * scale, intensity, probability, rows, cols, unit)
    if not return_figure:
        return profile
    fig, (ax0, ax1) = _common.figure(1, 2, figsize=(10, 4))
    ax0.imshow(data, cmap="gray")
    ax0.plot([c0, c1], [r0, r1], color="yellow", linewidth=1.5)
    ax0.plot([c0], [r0], "o", color="yellow", markersize=4)
    ax0.axis("off")
    ax1.plot(profile.distance, intensity, color="black", label="intensity")
    ax1.set(xlabel=f"distance ({unit})", ylabel="intensity")
    ax2 = ax1.twinx()
    ax2.plot(profile.distance, probability, color="tab:red", label=f"p(class {class_index})")
    ax2.set_ylabel(f"p(class {class_index})", color="tab:red")
    ax2.set_ylim(-0.02, 1.02)
    ax1.set_title("line profile")
    ax1.grid(alpha=0.3)
    return profile, fig
