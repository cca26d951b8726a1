"""The TensorFlow twin of the preprocessing (:mod:`tem_keras.data.preprocess_tf`, run inside exported
graphs) gives the NumPy preprocessing's numbers (:mod:`tem_keras.data.preprocess`)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def test_graph_preprocessing_equals_numpy():
    import tensorflow as tf

    from tem_keras.data.preprocess import pad_to_multiple, remove_outliers, standardize
    from tem_keras.data.preprocess_tf import pad_to_multiple_tf, remove_outliers_tf, standardize_tf

    rng = np.random.default_rng(0)
    for h, w in [(37, 50), (8, 9), (64, 64)]:
        x = (rng.normal(size=(h, w)) * 10 + 100).astype(np.float32)
        x[rng.random((h, w)) < 0.02] += 500
        x[3, 3] += 400
        x[3, 4] += 400  # a cluster of two hot pixels
        cleaned = remove_outliers(x)
        assert np.array_equal(cleaned, remove_outliers_tf(tf.constant(x[None])).numpy()[0])
        for method in ("standard", "percentile"):
            np.testing.assert_allclose(standardize_tf(tf.constant(cleaned[None]), method).numpy()[0],
                                       standardize(cleaned, method), atol=1e-6)
    for h, w, d in [(5, 7, 4), (3, 3, 8), (1, 9, 4), (9, 2, 4), (30, 31, 16)]:
        x = rng.random((h, w)).astype(np.float32)
        expected, _ = pad_to_multiple(x, d)
        assert np.array_equal(pad_to_multiple_tf(tf.constant(x[None, ..., None]), d).numpy()[0, ..., 0],
                              expected)


def test_graph_preprocessing_object_equals_numpy():
    import tensorflow as tf

    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.data.preprocess_tf import preprocess_tf

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(33, 47)) * 5 + 50).astype(np.float32)
    x[10, 11] += 300
    for preprocessing in (Preprocessing(), Preprocessing(remove_outliers=False, normalization="percentile")):
        got = preprocess_tf(tf.constant(x[None, ..., None]), preprocessing).numpy()[0, ..., 0]
        np.testing.assert_allclose(got, preprocessing(x), atol=1e-5)


def test_median_network_selects_the_median():
    import itertools

    from tem_keras.data.preprocess_tf import MEDIAN9_NETWORK

    def median9(values):
        p = list(values)
        for i, j in MEDIAN9_NETWORK:
            p[i], p[j] = min(p[i], p[j]), max(p[i], p[j])
        return p[4]

    # a network that sorts every 0/1 input right is right on every input (the 0-1 principle)
    for values in itertools.product((0, 1), repeat=9):
        assert median9(values) == sorted(values)[4], values


def test_graph_medians_with_ties_and_odd_even_sizes():
    import tensorflow as tf

    from tem_keras.data.preprocess import remove_outliers
    from tem_keras.data.preprocess_tf import remove_outliers_tf

    rng = np.random.default_rng(2)
    for h, w in [(1, 1), (1, 2), (2, 3), (7, 7), (16, 21)]:  # odd and even pixel counts
        x = rng.poisson(3.0, size=(h, w)).astype(np.float32)  # counts: many equal values
        x[0, 0] += 40
        assert np.array_equal(remove_outliers_tf(tf.constant(x[None])).numpy()[0], remove_outliers(x)), (h, w)
