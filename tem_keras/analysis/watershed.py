"""Markers of the watershed split of touching particles, found component by component.

:func:`tem_keras.analysis.particles.label_particles` splits touching particles by the watershed of the
distance transform [1]_, with markers at the maxima of the distance transform that are at least
``min_distance`` apart (scikit-image's ``peak_local_max`` with ``labels=components``) and that
rise at least ``split_depth`` above the saddle to a higher maximum (``h_maxima``). This module
finds the same markers in compiled passes instead of per-component Python calls:

* the Euclidean distance transform, exactly (Felzenszwalb & Huttenlocher [2]_: the same integer
  squared distances, hence the same ``float64`` values, as
  ``scipy.ndimage.distance_transform_edt``);
* per component, on its bounding box: the peak candidates of ``peak_local_max`` (maximum filter
  of ``2 min_distance + 1`` restricted to the component, its plateau rule, greedy spacing), the
  h-maxima (reconstruction by dilation [3]_ of ``image - h - resolution`` as ``h_maxima``, by
  :func:`tem_keras.analysis.reconstruction.reconstruct_framed`) and one marker per h-maximum region,
  or one at the deepest point; all linear in the component's box.

The flooding itself stays one ``skimage.segmentation.watershed`` of the whole image: where two
markers of a component have the same distance value, its priority queue orders them by the
markers of all the other particles, so a flood per component could move a pixel of the line
between two particles.

References
----------
.. [1] L. Vincent, P. Soille, "Watersheds in digital spaces", IEEE Transactions on Pattern
       Analysis and Machine Intelligence 13, 583-598 (1991).
.. [2] P. F. Felzenszwalb, D. P. Huttenlocher, "Distance transforms of sampled functions",
       Theory of Computing 8, 415-428 (2012).
.. [3] L. Vincent, "Morphological grayscale reconstruction in image analysis: applications and
       efficient algorithms", IEEE Transactions on Image Processing 2, 176-201 (1993).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .reconstruction import reconstruct_framed
from .regions import bounding_boxes

_FLOAT_MIN = np.finfo(np.float64).min  # peak_local_max's value outside the component


@njit(nogil=True, cache=True)
def _distance_transform(mask):  # pragma: no cover - compiled by Numba
    """Exact Euclidean distance of every True pixel to the nearest False one (``mask`` has one)."""
    height, width = mask.shape
    far = height + width + 1
    column = np.empty((height, width), np.int64)  # distance along the column, both ways
    for y in range(height):
        for x in range(width):
            above = column[y - 1, x] + 1 if y > 0 else far
            column[y, x] = 0 if not mask[y, x] else min(above, far)
    for y in range(height - 2, -1, -1):
        for x in range(width):
            column[y, x] = min(column[y, x], column[y + 1, x] + 1)
    out = np.empty((height, width), np.float64)
    f = np.empty(width, np.int64)
    v = np.empty(width, np.int64)
    z = np.empty(width + 1, np.float64)
    for y in range(height):  # lower envelope of the parabolas (x - q)**2 + column[y, q]**2
        k = -1
        for q in range(width):
            if column[y, q] >= far:
                continue
            f[q] = column[y, q] * column[y, q]
            if k < 0:
                k, v[0], z[0], z[1] = 0, q, -np.inf, np.inf
                continue
            while True:
                p = v[k]
                s = ((f[q] + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
                if s > z[k]:
                    break
                k -= 1
            k += 1
            v[k], z[k], z[k + 1] = q, s, np.inf
        k = 0
        for q in range(width):
            while z[k + 1] < q:
                k += 1
            dq = q - v[k]
            out[y, q] = np.sqrt(np.float64(dq * dq + f[v[k]]))
    return out


@njit(nogil=True, cache=True)
def _component_peaks(f, inside, m, threshold, peaks):  # pragma: no cover - compiled by Numba
    """``peak_local_max`` of one component (``f``: distance inside, lowest float outside) into
    ``peaks`` (rows, columns in the box) in its order: highest first, raster order among equals,
    greedy ``m`` spacing. Returns their number."""
    h, w = f.shape
    candidate = np.zeros((h, w), np.bool_)
    if h * w == 1:
        candidate[0, 0] = f[0, 0] > threshold
    else:
        # maximum filter (2m+1)**2, mode "nearest": the maximum over the window inside the box
        rows = np.empty((h, w), np.float64)
        for y in range(h):
            for x in range(w):
                best = f[y, x]
                for xx in range(max(0, x - m), min(w, x + m + 1)):
                    best = max(best, f[y, xx])
                rows[y, x] = best
        trivial = True
        for y in range(h):
            for x in range(w):
                best = rows[y, x]
                for yy in range(max(0, y - m), min(h, y + m + 1)):
                    best = max(best, rows[yy, x])
                candidate[y, x] = f[y, x] == best
                trivial = trivial and (candidate[y, x] or not inside[y, x])
        if trivial:  # flat: the pixels that a binary opening (cross) removes are the peaks
            eroded = np.zeros((h, w), np.bool_)
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    eroded[y, x] = (inside[y, x] and inside[y - 1, x] and inside[y + 1, x]
                                    and inside[y, x - 1] and inside[y, x + 1])
            for y in range(h):
                for x in range(w):
                    opened = (eroded[y, x] or (y > 0 and eroded[y - 1, x])
                              or (y < h - 1 and eroded[y + 1, x])
                              or (x > 0 and eroded[y, x - 1]) or (x < w - 1 and eroded[y, x + 1]))
                    candidate[y, x] = inside[y, x] and not opened
    # candidates above the threshold in raster order, then stably sorted highest first
    count = 0
    for y in range(h):
        for x in range(w):
            if candidate[y, x] and f[y, x] > threshold:
                peaks[count, 0], peaks[count, 1] = y, x
                count += 1
    order = _highest_first(f, peaks, count)
    blocked = np.zeros((h, w), np.bool_)  # within m - 1 (Chebyshev) of a kept peak
    kept = np.empty((count, 2), np.int64)
    n_kept = 0
    for i in order:
        y, x = peaks[i, 0], peaks[i, 1]
        if blocked[y, x]:
            continue
        kept[n_kept, 0], kept[n_kept, 1] = y, x
        n_kept += 1
        if m > 1:  # greedy spacing: later peaks closer than m are dropped
            for yy in range(max(0, y - m + 1), min(h, y + m)):
                for xx in range(max(0, x - m + 1), min(w, x + m)):
                    blocked[yy, xx] = True
    for i in range(n_kept):
        peaks[i, 0], peaks[i, 1] = kept[i, 0], kept[i, 1]
    return n_kept


@njit(nogil=True, cache=True)
def _highest_first(f, peaks, count):  # pragma: no cover - compiled by Numba
    """Indices of ``peaks[:count]`` by decreasing ``f``, equal values in their order (merge
    sort)."""
    order = np.arange(count)
    other = np.empty(count, np.int64)
    width = 1
    while width < count:
        for low in range(0, count, 2 * width):
            mid, high = min(low + width, count), min(low + 2 * width, count)
            i, j = low, mid
            for k in range(low, high):
                if j < high and (i >= mid or f[peaks[order[j], 0], peaks[order[j], 1]]
                                 > f[peaks[order[i], 0], peaks[order[i], 1]]):
                    other[k] = order[j]
                    j += 1
                else:
                    other[k] = order[i]
                    i += 1
        order, other = other, order
        width *= 2
    return order


@njit(nogil=True, cache=True)
def _regions(deep):  # pragma: no cover - compiled by Numba
    """8-connected regions of ``deep``, numbered from 1 (0: not in a region)."""
    h, w = deep.shape
    regions = np.zeros((h, w), np.int64)
    stack = np.empty(h * w, np.int64)
    count = 0
    for start in range(h * w):
        if not deep[start // w, start % w] or regions[start // w, start % w]:
            continue
        count += 1
        regions[start // w, start % w] = count
        stack[0], size = start, 1
        while size:
            size -= 1
            y, x = stack[size] // w, stack[size] % w
            for yy in range(max(y - 1, 0), min(y + 2, h)):
                for xx in range(max(x - 1, 0), min(x + 2, w)):
                    if deep[yy, xx] and not regions[yy, xx]:
                        regions[yy, xx] = count
                        stack[size] = yy * w + xx
                        size += 1
    return regions


@njit(nogil=True, cache=True)
def _markers(distance, components, boxes, m, threshold, depth, resolution,
             seeds):  # pragma: no cover - compiled by Numba
    """Watershed markers of every component, numbered from 1 into ``seeds``: one per h-maximum
    region that holds a peak (its first peak), else one at the first deepest pixel. Returns
    the number of markers of each component."""
    counts = np.zeros(boxes.shape[0], np.int64)
    next_seed = 1
    for k in range(1, boxes.shape[0]):
        if boxes[k, 1] == 0:
            continue
        y0, x0 = boxes[k, 0], boxes[k, 2]
        h, w = boxes[k, 1] - y0, boxes[k, 3] - x0
        inside = np.empty((h, w), np.bool_)
        f = np.empty((h, w), np.float64)
        local = np.zeros((h, w), np.float64)  # distance inside, 0 outside: h_maxima's image
        deepest_y, deepest_x, low, high = 0, 0, np.inf, -np.inf
        for y in range(h):
            for x in range(w):
                inside[y, x] = components[y0 + y, x0 + x] == k
                f[y, x] = distance[y0 + y, x0 + x] if inside[y, x] else _FLOAT_MIN
                if inside[y, x]:
                    local[y, x] = f[y, x]
                    if local[y, x] > high:
                        deepest_y, deepest_x = y, x
                low, high = min(low, local[y, x]), max(high, local[y, x])
        peaks = np.empty((h * w, 2), np.int64)
        n_peaks = _component_peaks(f, inside, m, threshold, peaks)
        count = 0
        if n_peaks >= 2 and depth <= high - low:
            # h_maxima: where local minus the reconstruction under local of
            # local - depth - resolution * |local| is at least depth; framed images for
            # reconstruct_framed, the frame at the lowest value
            fw = w + 2
            seed = np.empty((h + 2) * fw, np.float64)
            under = np.empty((h + 2) * fw, np.float64)
            lowest = np.inf
            for y in range(h):
                for x in range(w):
                    i = (y + 1) * fw + x + 1
                    seed[i] = (local[y, x] - depth) - resolution * abs(local[y, x])
                    under[i] = local[y, x]
                    lowest = min(lowest, seed[i])
            for i in range(seed.size):
                y, x = i // fw, i % fw
                if y == 0 or x == 0 or y == h + 1 or x == w + 1:
                    seed[i] = under[i] = lowest
            reconstruct_framed(seed, under, fw, np.empty(seed.size, np.int64),
                               np.zeros(seed.size, np.bool_))
            deep = np.empty((h, w), np.bool_)
            for y in range(h):
                for x in range(w):
                    deep[y, x] = (local[y, x] - seed[(y + 1) * fw + x + 1] >= depth
                                  and inside[y, x])
            regions = _regions(deep)
            claimed = np.zeros(h * w + 1, np.bool_)
            for i in range(n_peaks):
                r = regions[peaks[i, 0], peaks[i, 1]]
                if r > 0 and not claimed[r]:
                    claimed[r] = True
                    seeds[y0 + peaks[i, 0], x0 + peaks[i, 1]] = next_seed + count
                    count += 1
        if count == 0:
            seeds[y0 + deepest_y, x0 + deepest_x] = next_seed
            count = 1
        counts[k] = count
        next_seed += count
    return counts


def watershed_split(mask, components, n, min_distance: int, split_depth: float) -> np.ndarray:
    """Watershed split of the components of ``mask`` (see the module docstring).

    Parameters
    ----------
    mask : (H, W) ndarray of bool
    components : (H, W) ndarray of int32
        8-connected components of ``mask``, numbered ``1..n``.
    n : int
    min_distance : int
    split_depth : float
        > 0.

    Returns
    -------
    (H, W) ndarray of int32
        ``components`` itself when no component has two markers, else the watershed's labels.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    if mask.all():  # no background: the transform has no zero to measure from
        distance = ndi.distance_transform_edt(mask)
    else:
        distance = _distance_transform(mask)
    boxes = bounding_boxes(components, n)
    seeds = np.zeros(mask.shape, np.int32)
    counts = _markers(distance, components, boxes, int(min_distance), float(distance.min()),
                      float(split_depth), 2 * np.finfo(np.float64).resolution, seeds)
    if counts.max() < 2:
        return components
    return watershed(-distance, seeds, mask=mask, connectivity=2)
