"""From class probabilities to label masks: thresholds (fixed, tuned, Otsu) and the particle map.

For 2-class (or 1-channel sigmoid) models the mask is ``probability(particle) >= threshold`` with
``threshold`` 0.5 by default (the same as argmax), a number, or ``"otsu"`` (Otsu's threshold of the
probability map of each image, Horwath et al. 2020). For ``K > 2`` classes the mask is the argmax
over the classes; with a threshold, a pixel is background unless ``1 - p(background)`` reaches it,
and then gets the most probable foreground class.

:func:`labels_from_probabilities_tf` is the graph twin of :func:`labels_from_probabilities` used
in exported models (the ``serve_mask`` signature); whoever changes one must change the other
(``tests/test_export.py`` checks that they agree). The NumPy rule for a number or None lives in
:mod:`tem_keras.export.predict_script` (with :func:`foreground_probability`), which the standalone ``predict.py``
of export folders is a copy of.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Comput. Mater. 6, 108 (2020) — Otsu thresholds of the softmax map.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..export import predict_script as runtime
from ..export.predict_script import foreground_probability

__all__ = ["foreground_probability", "check_threshold", "labels_from_probabilities",
           "labels_from_probabilities_tf"]


def check_threshold(threshold):
    """``threshold`` as None, ``"otsu"`` or a float in [0, 1] (numbers given as text are parsed).

    Raises
    ------
    TypeError
        A bool or another type.
    ValueError
        A number outside [0, 1] or other text.
    """
    if isinstance(threshold, (bool, np.bool_)):
        raise TypeError(f"threshold must be a number in [0, 1], 'otsu' or None, got {threshold!r} "
                        "(a bool is not a number)")
    if threshold is None or threshold == "otsu":
        return threshold
    if not isinstance(threshold, (str, numbers.Real, np.floating, np.integer)):
        raise TypeError(f"threshold must be a number in [0, 1], 'otsu' or None, got {threshold!r} "
                        f"({type(threshold).__name__})")
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            raise ValueError(f"threshold must be a number in [0, 1], 'otsu' or None, got {threshold!r}") from None
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def labels_from_probabilities(probabilities: np.ndarray, threshold=None) -> tuple[np.ndarray, float | None]:
    """Label mask (uint8) and the threshold used, from class probabilities ``[H, W, C]``.

    Parameters
    ----------
    probabilities : ndarray ``[..., C]``
        Softmax output (``C >= 2``) or a 1-channel sigmoid output.
    threshold : None, float or "otsu"
        None: 0.5 for binary models (the argmax), plain argmax for ``C > 2``. A number: the
        particle probability (``1 - p(background)`` for ``C > 2``) must reach it. ``"otsu"``:
        Otsu's threshold of that probability map (Horwath et al. 2020).

    Notes
    -----
    The rule for a number or None is :func:`tem_keras.export.predict_script.labels_from_probabilities`, the one
    the standalone ``predict.py`` of export folders runs.
    """
    threshold = check_threshold(threshold)
    if threshold == "otsu":
        from ..analysis.metrics import otsu_threshold

        threshold = float(otsu_threshold(foreground_probability(probabilities)))
    return runtime.labels_from_probabilities(probabilities, threshold)


def labels_from_probabilities_tf(probabilities, threshold: float | None):
    """uint8 labels of a probability tensor ``[..., C]``, as :func:`labels_from_probabilities`
    with a number (or None) for ``threshold``, in TensorFlow ops (for exported graphs)."""
    import tensorflow as tf

    c = probabilities.shape[-1]
    if threshold is None:
        if c > 2:
            return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)
        threshold = 0.5
    if c == 1:
        return tf.cast(probabilities[..., 0] >= threshold, tf.uint8)
    if c == 2:
        return tf.cast(probabilities[..., 1] >= threshold, tf.uint8)
    foreground = 1.0 - probabilities[..., 0]
    best = tf.cast(tf.argmax(probabilities[..., 1:], axis=-1) + 1, tf.uint8)
    return tf.where(foreground >= threshold, best, tf.zeros_like(best))
