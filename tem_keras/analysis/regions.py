"""Region properties of every label of a label image at once, in a few compiled passes.

What :func:`tem_keras.analysis.particles.measure_particles` needs of ``skimage.measure.regionprops`` [1]_,
computed for all regions together instead of once per region on its bounding box:

* area, centroid (exact sums of coordinates), bounding box, numbering in raster order;
* central second moments (the ellipse axes and eccentricity; the same up to rounding);
* perimeter: the same border pixels (4-connectivity) and neighbour codes as
  ``skimage.measure.perimeter(region, 4)``, hence the same histogram of codes;
* convex area: the number of pixel centres in the convex hull of the pixels' edge midpoints
  (``skimage.morphology.convex_hull_image``), counted row by row on the hull's left and right
  chains (Andrew's monotone chain [2]_) in exact integer arithmetic;
* the sum of an intensity image over each region.

References
----------
.. [1] S. van der Walt et al., "scikit-image: image processing in Python", PeerJ 2, e453 (2014).
.. [2] A. M. Andrew, "Another efficient algorithm for convex hulls in two dimensions",
       Information Processing Letters 9, 216-219 (1979).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: skimage.measure.perimeter's weights of the neighbour codes of a border pixel
PERIMETER_WEIGHTS = np.zeros(50)
PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2


@njit(nogil=True, cache=True)
def first_pixels(labels, n):  # pragma: no cover - compiled by Numba
    """For labels ``0..n``: raster index of the first pixel (-1 if absent), area, and whether a
    pixel lies on the image border."""
    height, width = labels.shape
    first = np.empty(n + 1, np.int64)
    area = np.zeros(n + 1, np.int64)
    border = np.zeros(n + 1, np.bool_)
    for k in range(n + 1):
        first[k] = -1
    for y in range(height):
        for x in range(width):
            k = labels[y, x]
            if k > 0:
                if first[k] < 0:
                    first[k] = y * width + x
                area[k] += 1
                if y == 0 or x == 0 or y == height - 1 or x == width - 1:
                    border[k] = True
    return first, area, border


@njit(nogil=True, cache=True)
def bounding_boxes(labels, n):  # pragma: no cover - compiled by Numba
    """``(n + 1, 4)`` int64: first row, last row + 1, first column, last column + 1 of labels
    ``1..n`` (``0, 0, 0, 0`` for row 0 and absent labels)."""
    boxes = np.zeros((n + 1, 4), np.int64)
    for k in range(n + 1):
        boxes[k, 0], boxes[k, 2] = labels.shape[0], labels.shape[1]
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            k = labels[y, x]
            if k > 0:
                boxes[k, 0] = min(boxes[k, 0], y)
                boxes[k, 1] = max(boxes[k, 1], y + 1)
                boxes[k, 2] = min(boxes[k, 2], x)
                boxes[k, 3] = max(boxes[k, 3], x + 1)
    for k in range(n + 1):
        if boxes[k, 1] == 0:
            boxes[k, 0] = boxes[k, 2] = 0
    return boxes


@njit(nogil=True, cache=True)
def _moments(labels, n, intensity):  # pragma: no cover - compiled by Numba
    """Area, coordinate sums, central second moments, intensity sums and perimeter-code
    histograms of labels ``0..n`` (``intensity`` of shape (0, 0): no intensity sums)."""
    height, width = labels.shape
    area = np.zeros(n + 1, np.int64)
    sums = np.zeros((n + 1, 2), np.int64)
    total = np.zeros(n + 1, np.float64)
    with_intensity = intensity.shape[0] > 0
    for y in range(height):
        for x in range(width):
            k = labels[y, x]
            if k > 0:
                area[k] += 1
                sums[k, 0] += y
                sums[k, 1] += x
                if with_intensity:
                    total[k] += intensity[y, x]
    centre = np.zeros((n + 1, 2), np.float64)
    for k in range(1, n + 1):
        if area[k] > 0:
            centre[k, 0] = sums[k, 0] / area[k]
            centre[k, 1] = sums[k, 1] / area[k]
    central = np.zeros((n + 1, 3), np.float64)  # mu_20 (rows), mu_02 (columns), mu_11
    border = np.zeros((height, width), np.bool_)
    for y in range(height):
        for x in range(width):
            k = labels[y, x]
            if k > 0:
                dy, dx = y - centre[k, 0], x - centre[k, 1]
                central[k, 0] += dy * dy
                central[k, 1] += dx * dx
                central[k, 2] += dy * dx
                border[y, x] = (y == 0 or labels[y - 1, x] != k or y == height - 1
                                or labels[y + 1, x] != k or x == 0 or labels[y, x - 1] != k
                                or x == width - 1 or labels[y, x + 1] != k)
    # perimeter codes: 1 (border pixel) + 2 per 4-neighbour and 10 per diagonal neighbour that
    # is a border pixel of the same region (skimage.measure.perimeter's convolution)
    codes = np.zeros((n + 1, 50), np.int64)
    for y in range(height):
        for x in range(width):
            if border[y, x]:
                k = labels[y, x]
                code = 1
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        yy, xx = y + dy, x + dx
                        if ((dy != 0 or dx != 0) and 0 <= yy < height and 0 <= xx < width
                                and border[yy, xx] and labels[yy, xx] == k):
                            code += 10 if dy != 0 and dx != 0 else 2
                codes[k, code] += 1
    return area, sums, central, total, codes


@njit(nogil=True, cache=True)
def _lower_chain(ys, xs, count):  # pragma: no cover - compiled by Numba
    """Lower convex chain of points sorted by strictly increasing ``ys`` (as a function
    ``x(y)``); returns the number of its vertices, moved to the front of ``ys``, ``xs``."""
    size = 0
    for i in range(count):
        y, x = ys[i], xs[i]
        while size >= 2:
            cross = ((ys[size - 1] - ys[size - 2]) * (x - xs[size - 2])
                     - (xs[size - 1] - xs[size - 2]) * (y - ys[size - 2]))
            if cross > 0:
                break
            size -= 1
        ys[size], xs[size] = y, x
        size += 1
    return size


@njit(nogil=True, cache=True)
def _ceil_half_on_chain(ys, xs, size, y):  # pragma: no cover - compiled by Numba
    """``ceil(x(y) / 2)`` on a chain from :func:`_lower_chain`, exactly (``y`` in its range)."""
    j = 0
    while j + 1 < size and ys[j + 1] < y:
        j += 1
    if ys[j] == y or j + 1 == size:
        num, den = xs[j], 1
    else:
        den = ys[j + 1] - ys[j]
        num = xs[j] * den + (xs[j + 1] - xs[j]) * (y - ys[j])
    return -((-num) // (2 * den))


@njit(nogil=True, cache=True)
def _convex_areas(labels, boxes):  # pragma: no cover - compiled by Numba
    """Pixels of the convex hull image of every label (``convex_hull_image`` of its box)."""
    n = boxes.shape[0] - 1
    offsets = np.zeros(n + 2, np.int64)
    longest = 0
    for k in range(n + 1):
        offsets[k + 1] = offsets[k] + boxes[k, 1] - boxes[k, 0]
        longest = max(longest, boxes[k, 1] - boxes[k, 0])
    left = np.empty(offsets[n + 1], np.int64)
    right = np.empty(offsets[n + 1], np.int64)
    for row in range(offsets[n + 1]):
        left[row], right[row] = labels.shape[1], -1
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            k = labels[y, x]
            if k > 0:
                row = offsets[k] + y - boxes[k, 0]
                left[row] = min(left[row], x)
                right[row] = max(right[row], x)
    areas = np.zeros(n + 1, np.int64)
    size = 2 * longest + 2
    ys, ys2 = np.empty(size, np.int64), np.empty(size, np.int64)
    lx, rx = np.empty(size, np.int64), np.empty(size, np.int64)
    for k in range(1, n + 1):
        if boxes[k, 1] == 0:
            continue
        # edge midpoints of the end pixels of each row, coordinates doubled (integers):
        # (2y - 1, 2c), (2y, 2c -+ 1), (2y + 1, 2c); per doubled row y the leftmost / rightmost
        count = 0
        for row in range(offsets[k], offsets[k + 1]):
            if right[row] < 0:
                continue
            y = 2 * (boxes[k, 0] + row - offsets[k])
            a, b = 2 * left[row], -2 * right[row]  # right chain: x negated
            if count > 0 and ys[count - 1] == y - 1:
                lx[count - 1], rx[count - 1] = min(lx[count - 1], a), min(rx[count - 1], b)
            else:
                ys[count], lx[count], rx[count] = y - 1, a, b
                count += 1
            ys[count], lx[count], rx[count] = y, a - 1, b - 1
            ys[count + 1], lx[count + 1], rx[count + 1] = y + 1, a, b
            count += 2
        for i in range(count):
            ys2[i] = ys[i]
        n_left = _lower_chain(ys, lx, count)
        n_right = _lower_chain(ys2, rx, count)
        total = 0
        for y in range(boxes[k, 0], boxes[k, 1]):
            total += (1 - _ceil_half_on_chain(ys2, rx, n_right, 2 * y)
                      - _ceil_half_on_chain(ys, lx, n_left, 2 * y))
        areas[k] = total
    return areas


def region_measurements(labels, n, intensity=None) -> dict:
    """Measurements of labels ``1..n`` of a label image, rows in label order.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    n : int
        The largest label.
    intensity : (H, W) ndarray of float64, optional

    Returns
    -------
    dict of ndarray, each of length ``n``
        ``area`` (int64), ``centroid`` ``(n, 2)``, ``bbox`` ``(n, 4)`` (first row, first
        column, last row + 1, last column + 1, as regionprops), ``central_moments`` ``(n, 3)``
        (mu_20 along rows, mu_02, mu_11), ``perimeter``, ``convex_area`` (int64) and, with an
        intensity image, ``intensity_sum``.
    """
    labels = np.ascontiguousarray(labels)
    image = (np.zeros((0, 0)) if intensity is None
             else np.ascontiguousarray(intensity, dtype=np.float64))
    area, sums, central, total, codes = _moments(labels, n, image)
    boxes = bounding_boxes(labels, n)
    convex = _convex_areas(labels, boxes)
    # perimeter: each region's histogram of codes dotted with the weights, as skimage does
    perimeter = np.array([row @ PERIMETER_WEIGHTS for row in codes[1:]], dtype=np.float64)
    out = {"area": area[1:], "centroid": sums[1:] / area[1:, None],
           "bbox": boxes[1:][:, [0, 2, 1, 3]], "central_moments": central[1:],
           "perimeter": perimeter.reshape(-1), "convex_area": convex[1:]}
    if intensity is not None:
        out["intensity_sum"] = total[1:]
    return out
