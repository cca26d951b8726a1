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
