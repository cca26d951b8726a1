"""The TensorFlow twin of :mod:`tem_keras.data.preprocess`: the same preprocessing as graph ops.

The exported SavedModel and ONNX graphs (:mod:`tem_keras.export`) run these functions so that
colleagues can feed raw intensities; each function gives :mod:`tem_keras.data.preprocess`'s
result on every image of a batch ``[N, H, W]`` (``tests/test_preprocess_tf.py`` checks it):

1. outlier removal (:func:`remove_outliers_tf`, Horwath et al. 2020): the 3×3 median (scipy's
   ``reflect`` border, i.e. ``SYMMETRIC`` padding) is the 5th of the 9 neighbours, selected by
   a network of 19 min/max exchanges (Paeth 1990; exact, and about ten times faster than
   ``tf.math.top_k`` in onnxruntime); the threshold is ``outlier_sigma × 1.4826 × MAD`` of the
   image minus its median (medians of the pixels as ``np.median``, the mean of the two middle
   values for even counts, found by an unsorted ``top_k`` of half the pixels rather than a
   sort); hot pixels are replaced by the mean of their non-hot 8 neighbours (sums in float64 as
   NumPy does, gathered at the hot pixels only);
2. per-image standardisation (:func:`standardize_tf`; ``"standard"``: mean and standard deviation
   in float64, then float32 arithmetic as NumPy; ``"percentile"``: linear-interpolated
   percentiles in float64);
3. padding at the bottom and right to a multiple of the model's down-sampling factor
   (:func:`pad_to_multiple_tf`), reflect, or symmetric when the pad is not smaller than the image.

Whoever changes a function here must change its NumPy twin in :mod:`tem_keras.data.preprocess`
the same way (and the reverse): exported models must compute what ``tem_keras.predict`` computes.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, npj Comput. Mater. 6, 108 (2020).
A. W. Paeth, "Median finding on a 3×3 grid", Graphics Gems (1990) — the median-of-9 network
(as ordered in N. Devillard, "Fast median search: an ANSI C implementation", 1998).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pad_to_multiple_tf", "remove_outliers_tf", "standardize_tf", "preprocess_tf",
           "MEDIAN9_NETWORK"]


def _fold_indices(length, target, symmetric):
    """Indices ``0..target-1`` into an axis of ``length`` extended as ``np.pad`` reflect/symmetric."""
    import tensorflow as tf

    i = tf.range(target)
    if symmetric:
        period = 2 * length
        j = tf.math.floormod(i, period)
        return tf.where(j < length, j, period - 1 - j)
    period = tf.maximum(2 * (length - 1), 1)
    j = tf.math.floormod(i, period)
    return tf.where(j < length, j, period - j)


def pad_to_multiple_tf(images, multiple: int):
    """``[N, H, W, C]`` padded at the bottom and right to multiples of ``multiple``.

    The same as :func:`tem_keras.data.preprocess.pad_to_multiple`: ``reflect`` when both pads are
    smaller than the image, otherwise ``symmetric`` (repeated) on both axes.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    # (m - h % m) % m, not (-h) % m: ONNX's Mod of a negative number is C's, not Python's
    ph = tf.math.floormod(multiple - tf.math.floormod(h, multiple), multiple)
    pw = tf.math.floormod(multiple - tf.math.floormod(w, multiple), multiple)
    symmetric = tf.logical_not(tf.logical_and(ph < h, pw < w))
    rows = tf.cond(symmetric, lambda: _fold_indices(h, h + ph, True),
                   lambda: _fold_indices(h, h + ph, False))
    cols = tf.cond(symmetric, lambda: _fold_indices(w, w + pw, True),
                   lambda: _fold_indices(w, w + pw, False))
    return tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)


def _pad1(x):
    """``[N, H, W]`` padded by one pixel on every side with its border pixels: scipy's ``reflect``
    (TensorFlow's ``SYMMETRIC``) for a 1-pixel pad, by concatenation (a symmetric ``tf.pad``
    becomes a pad and two compressions in ONNX)."""
    import tensorflow as tf

    x = tf.concat([x[:, :1], x, x[:, -1:]], axis=1)
    return tf.concat([x[:, :, :1], x, x[:, :, -1:]], axis=2)


def _shifts(x):
    """The 9 shifted copies of ``[N, H, W]`` holding the 3×3 neighbours of every pixel, row by
    row (the centre is the 5th); border as :func:`_pad1`."""
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    p = _pad1(x)
    return [p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]


#: compare-exchanges ``(i, j)`` (``p[i], p[j] = min, max``) after which ``p[4]`` is the median
#: of 9 values (Paeth's network; correct on all 2⁹ inputs of 0 and 1, hence on all inputs)
MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
                   (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median3(x):
    """3×3 median filter: the 5th of the 9 neighbours by min/max exchanges (exact, no arithmetic)."""
    import tensorflow as tf

    p = _shifts(x)
    for i, j in MEDIAN9_NETWORK:
        p[i], p[j] = tf.minimum(p[i], p[j]), tf.maximum(p[i], p[j])
    return p[4]


#: the 8 neighbours ``(dy, dx)`` in the order :func:`tem_keras.data.preprocess.remove_outliers`
#: sums them
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _fill_outliers(x, med, hot):
    """``x`` with each ``hot`` pixel replaced by the mean of its non-hot neighbours (sums in
    float64, neighbour by neighbour, as NumPy), or by ``med`` when all 8 are hot; only the hot
    pixels are gathered and scattered back, so the cost follows their number."""
    import tensorflow as tf

    where = tf.where(hot)  # [K, 3]: image, row, column
    values, good = _pad1(x), _pad1(tf.cast(tf.logical_not(hot), tf.float32))
    sums = tf.zeros(tf.shape(where)[:1], tf.float64)
    counts = tf.zeros(tf.shape(where)[:1], tf.float64)
    for dy, dx in _NEIGHBOURS:
        at = where + tf.constant([0, 1 + dy, 1 + dx], tf.int64)
        g = tf.gather_nd(good, at)
        sums += tf.cast(g * tf.gather_nd(values, at), tf.float64)
        counts += tf.cast(g, tf.float64)
    sums, counts = tf.cast(sums, tf.float32), tf.cast(counts, tf.float32)
    fill = tf.where(counts > 0, sums / tf.maximum(counts, 1.0), tf.gather_nd(med, where))
    return tf.tensor_scatter_nd_update(x, where, fill)


def _median_flat(x):
    """``np.median`` of each image of ``[N, H, W]`` (float32; mean of the middle two for even sizes)."""
    import tensorflow as tf

    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    n = tf.shape(flat)[1]
    # the n // 2 + 1 largest values, unsorted, hold the sorted s[(n - 1) // 2:]; their two
    # smallest are the middle values s[(n - 1) // 2] and s[n // 2] (the same one for odd n)
    upper = tf.math.top_k(flat, k=n // 2 + 1, sorted=False).values
    smallest = -tf.math.top_k(-upper, k=tf.minimum(2, n // 2 + 1), sorted=True).values
    lo = smallest[:, 0]
    hi = tf.gather(smallest, (n + 1) % 2, axis=1)
    return (lo + hi) / 2.0  # equal middles give the middle itself, as np.median


def remove_outliers_tf(x, n_sigma: float = 6.0):
    """:func:`tem_keras.data.preprocess.remove_outliers` of each image of ``[N, H, W]`` float32."""
    import tensorflow as tf

    med = _median3(x)
    excess = x - med
    centre = _median_flat(excess)[:, None, None]
    mad = _median_flat(tf.abs(excess - centre))
    threshold = tf.where(mad > 0, tf.constant(n_sigma * 1.4826, tf.float32) * mad,
                         tf.constant(np.inf, tf.float32))
    return _fill_outliers(x, med, excess > threshold[:, None, None])


def _percentile(x, q: float):
    """``np.percentile(image, q)`` (linear) of each image of ``[N, H, W]``, float64."""
    import tensorflow as tf

    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    n = tf.shape(flat)[1]
    s = tf.cast(tf.sort(flat, axis=-1), tf.float64)
    index = (q / 100.0) * tf.cast(n - 1, tf.float64)
    below = tf.floor(index)
    gamma = index - below
    i = tf.cast(below, tf.int32)
    a = tf.gather(s, i, axis=1)
    b = tf.gather(s, tf.minimum(i + 1, n - 1), axis=1)
    diff = b - a
    return tf.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def standardize_tf(x, method: str = "standard", percentiles=(1.0, 99.0)):
    """:func:`tem_keras.data.preprocess.standardize` of each image of ``[N, H, W]`` float32."""
    import tensorflow as tf

    if method == "standard":
        x64 = tf.cast(x, tf.float64)
        center = tf.reduce_mean(x64, axis=[1, 2], keepdims=True)
        scale = tf.sqrt(tf.reduce_mean(tf.square(x64 - center), axis=[1, 2], keepdims=True))
        tf.debugging.assert_positive(scale, message="image is constant: it cannot be normalised")
        # NumPy 2: float32 array minus a Python float is float32 arithmetic
        return (x - tf.cast(center, tf.float32)) / tf.cast(scale, tf.float32)
    if method == "percentile":
        center = _percentile(x, percentiles[0])[:, None, None]
        scale = _percentile(x, percentiles[1])[:, None, None] - center
        tf.debugging.assert_positive(scale, message="image is constant: it cannot be normalised")
        return tf.cast((tf.cast(x, tf.float64) - center) / scale, tf.float32)
    raise ValueError(f"normalization must be 'standard' or 'percentile', got {method!r}")


def preprocess_tf(images, preprocessing):
    """The :class:`~tem_keras.data.preprocess.Preprocessing` of each image of ``[N, H, W, 1]``."""
    import tensorflow as tf

    x = images[..., 0]
    tf.debugging.assert_all_finite(x, "image has NaN or infinite pixels")
    if preprocessing.remove_outliers:
        x = remove_outliers_tf(x, preprocessing.outlier_sigma)
    x = standardize_tf(x, preprocessing.normalization, preprocessing.percentiles)
    return x[..., None]
