"""Segmentation scores on NumPy arrays: dice, IoU, precision, recall, threshold curves.

Plain functions on predicted and true masks (or class-label maps, or probability maps) of any
shape, ``[H, W]`` or a batch ``[N, H, W]``; pixels are pooled over the whole array. They do not
import TensorFlow (the Keras training metrics live with the models).

Conventions
-----------
* A *mask* is a boolean or integer array. Without ``class_index`` every non-zero pixel is
  foreground; with ``class_index=k`` the foreground is ``array == k`` (multi-class label maps,
  0 = background, 1..K = classes).
* A prediction may also be given per class with a trailing class axis (``[..., K]``, one-hot or
  probabilities, one more dimension than the truth); it is turned into labels by ``argmax``.
* Probabilities are the foreground probability ``[...]`` (same shape as the truth) or per class
  ``[..., K]`` (one more dimension; ``class_index`` picks the channel, default 1). They must be
  finite and in [0, 1].
* A pixel is predicted foreground at threshold ``t`` when ``probability >= t``.
* Empty cases: when prediction and truth are both empty, dice, IoU, precision, recall and F1 are
  1.0 (nothing to find, nothing found). When exactly one of them is empty all of these are 0.0
  (e.g. the precision of an empty prediction against a non-empty truth).

References
----------
.. [1] K. Sytwu, C. Groschner, M. C. Scott, "Understanding the influence of receptive field and
       network complexity in neural network-guided TEM image analysis", Microscopy and
       Microanalysis 28, 1896-1904 (2022) -- hard and soft dice (eq. 2), missed area (Fig. 7).
.. [2] J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features
       of deep learning models for segmentation of high-resolution transmission electron
       microscopy images", npj Computational Materials 6, 108 (2020) -- precision, recall and
       F1 against threshold (Fig. 6), Otsu's threshold on the softmax output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import TEMInputError

__all__ = ["confusion_counts", "dice", "soft_dice", "iou", "precision", "recall", "f1",
           "precision_recall_f1", "segmentation_scores", "threshold_curve",
           "plot_threshold_curve", "best_threshold", "otsu_threshold", "missed_area",
           "missed_area_dice", "per_image_scores", "mean_and_std"]


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------

def _array(x, name):
    data = getattr(x, "data", x) if not isinstance(x, np.ndarray) else x
    try:
        return np.asarray(data)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TEMInputError(f"{name} cannot be read as an array: {exc}") from None


def _foreground(mask: np.ndarray, class_index, name: str) -> np.ndarray:
    if mask.dtype == bool:
        if class_index is None or class_index == 1:
            return mask
        return ~mask if class_index == 0 else np.zeros(mask.shape, bool)
    if np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all():
            raise TEMInputError(f"{name} holds NaN or infinite values")
        if not np.all(mask == np.round(mask)):
            raise TEMInputError(
                f"{name} holds non-integer values; pass a mask or label map (threshold "
                "probabilities first, or use soft_dice / threshold_curve for probabilities)")
    elif not np.issubdtype(mask.dtype, np.integer):
        raise TEMInputError(f"{name} must be a boolean or integer mask; got dtype {mask.dtype}")
    if class_index is None:
        return mask != 0
    return mask == class_index


def _hard_pair(pred, truth, class_index):
    """Boolean (pred, truth) of equal shape; a per-class prediction is arg-maxed."""
    pred = _array(pred, "pred")
    truth = _array(truth, "truth")
    if pred.ndim == truth.ndim + 1 and pred.shape[:-1] == truth.shape:
        if not np.isfinite(pred).all():
            raise TEMInputError("pred holds NaN or infinite values")
        pred = np.argmax(pred, axis=-1)
    if pred.shape != truth.shape:
        raise TEMInputError(f"pred and truth have different shapes: pred {pred.shape}, "
                            f"truth {truth.shape}")
    return _foreground(pred, class_index, "pred"), _foreground(truth, class_index, "truth")


def _probability_pair(probabilities, truth, class_index):
    """Float foreground probability and boolean truth of equal shape, validated."""
    prob = _array(probabilities, "probabilities")
    truth = _array(truth, "truth")
    if prob.ndim == truth.ndim + 1 and prob.shape[:-1] == truth.shape:
        k = 1 if class_index is None else int(class_index)
        if not 0 <= k < prob.shape[-1]:
            raise TEMInputError(f"class_index {k} is outside the {prob.shape[-1]} class channels "
                                f"of probabilities {prob.shape}")
        prob = prob[..., k]
        truth_fg = _foreground(truth, k, "truth")
    elif prob.shape == truth.shape:
        truth_fg = _foreground(truth, class_index, "truth")
    else:
        raise TEMInputError(f"probabilities and truth have different shapes: probabilities "
                            f"{prob.shape}, truth {truth.shape}")
    if prob.dtype == bool:
        prob = prob.astype(np.float32)
    if not np.issubdtype(prob.dtype, np.number):
        raise TEMInputError(f"probabilities must be numeric; got dtype {prob.dtype}")
    if not np.isfinite(prob).all():
        raise TEMInputError("probabilities hold NaN or infinite values")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise TEMInputError(f"probabilities must lie in [0, 1]; got range "
                            f"[{float(prob.min()):g}, {float(prob.max()):g}]")
    return prob, truth_fg


def _classes(class_index):
    return isinstance(class_index, Sequence) and not isinstance(class_index, (str, bytes))


# --------------------------------------------------------------------------------------------
# Counts and hard scores
# --------------------------------------------------------------------------------------------

def confusion_counts(pred, truth, *, class_index=None) -> dict:
    """Pixel counts of true/false positives/negatives.

    Parameters
    ----------
    pred, truth : array_like
        Predicted and true masks or label maps of the same shape (see module conventions).
    class_index : int, optional
        Class scored; default: every non-zero pixel is foreground.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``tn`` (int).
    """
    p, t = _hard_pair(pred, truth, class_index)
    tp = int(np.count_nonzero(p & t))
    n_pred = int(np.count_nonzero(p))
    n_true = int(np.count_nonzero(t))
    fp = n_pred - tp
    fn = n_true - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size) - tp - fp - fn}


def _per_class(func, pred, truth, class_index, **kw):
    return {int(k): func(pred, truth, class_index=int(k), **kw) for k in class_index}


def dice(pred, truth, *, class_index=None):
    """Hard dice coefficient 2|P∩T| / (|P| + |T|) of two masks [1]_.

    Parameters
    ----------
    pred, truth : array_like
        Predicted and true masks or label maps of the same shape; a prediction with a trailing
        class axis is arg-maxed.
    class_index : int or sequence of int, optional
        Class scored (``label == class_index``); a sequence gives a dict ``{class: dice}``.
        Default: every non-zero pixel is foreground.

    Returns
    -------
    float or dict
        In [0, 1]; 1.0 when both masks are empty.

    Raises
    ------
    TEMInputError
        If the shapes differ (the message gives both) or a mask is not a mask.
    """
    if _classes(class_index):
        return _per_class(dice, pred, truth, class_index)
    c = confusion_counts(pred, truth, class_index=class_index)
    den = 2 * c["tp"] + c["fp"] + c["fn"]
    return 1.0 if den == 0 else 2.0 * c["tp"] / den


def iou(pred, truth, *, class_index=None):
    """Intersection over union (Jaccard index) |P∩T| / |P∪T|; 1.0 when both are empty.

    Parameters and errors as :func:`dice`.
    """
    if _classes(class_index):
        return _per_class(iou, pred, truth, class_index)
    c = confusion_counts(pred, truth, class_index=class_index)
    den = c["tp"] + c["fp"] + c["fn"]
    return 1.0 if den == 0 else c["tp"] / den


def precision(pred, truth, *, class_index=None):
    """Precision TP / (TP + FP): the fraction of predicted pixels that are true.

    With an empty prediction it is 1.0 if the truth is empty too, else 0.0.
    Parameters and errors as :func:`dice`.
    """
    if _classes(class_index):
        return _per_class(precision, pred, truth, class_index)
    return precision_recall_f1(pred, truth, class_index=class_index)["precision"]


def recall(pred, truth, *, class_index=None):
    """Recall (sensitivity) TP / (TP + FN): the fraction of true pixels that are found.

    With an empty truth it is 1.0 if the prediction is empty too, else 0.0.
    Parameters and errors as :func:`dice`.
    """
    if _classes(class_index):
        return _per_class(recall, pred, truth, class_index)
    return precision_recall_f1(pred, truth, class_index=class_index)["recall"]


def f1(pred, truth, *, class_index=None):
    """F1 score, the harmonic mean of precision and recall (equal to the hard dice).

    1.0 when both masks are empty. Parameters and errors as :func:`dice`.
    """
    if _classes(class_index):
        return _per_class(f1, pred, truth, class_index)
    return precision_recall_f1(pred, truth, class_index=class_index)["f1"]


def scores_from_counts(tp, fp, fn):
    """Precision, recall, F1 (= dice) and IoU from pixel counts, vectorised.

    Parameters
    ----------
    tp, fp, fn : array_like
        True positive, false positive and false negative counts (any matching shapes).

    Returns
    -------
    precision, recall, f1, iou : ndarray
        float64, with the conventions of this module for empty masks: an empty prediction of an
        empty truth scores 1, an empty prediction of a non-empty truth scores 0.
    """
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    n_pred, n_true = tp + fp, tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(n_pred > 0, tp / np.where(n_pred > 0, n_pred, 1),
                        np.where(n_true > 0, 0.0, 1.0))
        rec = np.where(n_true > 0, tp / np.where(n_true > 0, n_true, 1),
                       np.where(n_pred > 0, 0.0, 1.0))
        den = 2 * tp + fp + fn
        f = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)
        den_iou = tp + fp + fn
        j = np.where(den_iou > 0, tp / np.where(den_iou > 0, den_iou, 1), 1.0)
    return prec, rec, f, j


def precision_recall_f1(pred, truth, *, class_index=None) -> dict:
    """Precision, recall and F1 in one pass.

    Parameters
    ----------
    pred, truth, class_index
        As :func:`dice` (a sequence of classes gives ``{class: dict}``).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (floats, empty conventions as the single functions).
    """
    if _classes(class_index):
        return _per_class(precision_recall_f1, pred, truth, class_index)
    c = confusion_counts(pred, truth, class_index=class_index)
    p, r, f, _ = scores_from_counts(c["tp"], c["fp"], c["fn"])
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def soft_dice(probabilities, truth, *, class_index=None):
    """Soft dice 2 Σ p q / (Σ p + Σ q) of a probability map against a true mask [1]_ (eq. 2).

    Parameters
    ----------
    probabilities : array_like
        Foreground probability (same shape as ``truth``) or per-class probabilities with a
        trailing class axis (``class_index`` picks the channel, default 1). Finite, in [0, 1].
    truth : array_like
        True mask or label map.
    class_index : int or sequence of int, optional
        Class scored; a sequence gives ``{class: soft dice}``.

    Returns
    -------
    float or dict
        In [0, 1]; 1.0 when ``Σ p + Σ q == 0`` (empty truth, all-zero probabilities).

    Raises
    ------
    TEMInputError
        On shape mismatch, NaN/inf or values outside [0, 1].
    """
    if _classes(class_index):
        return {int(k): soft_dice(probabilities, truth, class_index=int(k)) for k in class_index}
    p, t = _probability_pair(probabilities, truth, class_index)
    p = p.astype(np.float64, copy=False)
    inter = float(p[t].sum())
    den = float(p.sum()) + float(np.count_nonzero(t))
    return 1.0 if den == 0 else 2.0 * inter / den


def segmentation_scores(pred, truth, probabilities=None, *, class_index=None) -> dict:
    """All scores of one prediction.

    Parameters
    ----------
    pred : array_like
        Predicted mask or label map (or per-class scores ``[..., K]``, arg-maxed).
    truth : array_like
        True mask or label map.
    probabilities : array_like, optional
        Probability map for :func:`soft_dice`.
    class_index : int, optional
        Class scored; default every non-zero pixel is foreground.

    Returns
    -------
    dict
        ``dice``, ``iou``, ``precision``, ``recall``, ``f1``, ``accuracy``, ``tp``, ``fp``,
        ``fn``, ``tn``, ``pred_fraction``, ``true_fraction`` and, with probabilities,
        ``soft_dice``.
    """
    c = confusion_counts(pred, truth, class_index=class_index)
    p, r, f, j = scores_from_counts(c["tp"], c["fp"], c["fn"])
    total = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    out = {"dice": float(f), "iou": float(j), "precision": float(p), "recall": float(r),
           "f1": float(f), "accuracy": (c["tp"] + c["tn"]) / total if total else 1.0, **c,
           "pred_fraction": (c["tp"] + c["fp"]) / total if total else 0.0,
           "true_fraction": (c["tp"] + c["fn"]) / total if total else 0.0}
    if probabilities is not None:
        out["soft_dice"] = soft_dice(probabilities, truth, class_index=class_index)
    return out


def per_image_scores(preds, truths, *, class_index=None) -> dict:
    """Scores of each image, their mean ± std over images, and the pooled scores beside them.

    The per-image mean is what a user meets (each micrograph judged on its own, as in
    Horwath et al. 2020 and Sytwu et al. 2022); pooling all pixels first lets large or crowded
    images dominate.

    Parameters
    ----------
    preds, truths : sequences of array_like
        Predicted and true masks or label maps, image by image (sizes may differ between images).
    class_index : int, optional
        Class scored; default every non-zero pixel is foreground.

    Returns
    -------
    dict
        ``per_image``: ``{score: {"mean", "std"}}`` for dice, IoU, precision and recall (std with
        ``ddof=0``); ``pooled``: the same scores from the summed pixel counts; ``images``: one dict
        of scores per image; ``n_images``.
    """
    rows = [segmentation_scores(p, t, class_index=class_index) for p, t in zip(preds, truths)]
    if not rows:
        raise ValueError("per_image_scores needs at least one image")
    keys = ("dice", "iou", "precision", "recall")
    summary = mean_and_std(rows, keys)
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    p, r, f, j = scores_from_counts(tp, fp, fn)
    pooled = {"dice": float(f), "iou": float(j), "precision": float(p), "recall": float(r)}
    images = [{k: r[k] for k in (*keys, "tp", "fp", "fn")} for r in rows]
    return {"per_image": summary, "pooled": pooled, "images": images, "n_images": len(rows)}


def mean_and_std(rows, keys=("dice", "iou", "precision", "recall")) -> dict:
    """``{key: {"mean", "std"}}`` of per-image scores over images (std with ``ddof=0``), as
    :func:`per_image_scores` and ``evaluate`` report them.

    >>> mean_and_std([{"dice": 0.9}, {"dice": 0.5}], ["dice"])
    {'dice': {'mean': 0.7, 'std': 0.2}}
    """
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in keys}


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

def threshold_curve(probabilities, truth, thresholds=None, *, class_index=None):
    """Precision, recall, F1 (= dice) and IoU as functions of the probability threshold.

    Horwath et al. 2020 [2]_ (Fig. 6). One pass over the pixels whatever the number of
    thresholds: each pixel is put in the bin of thresholds it passes (``searchsorted``), the
    foreground and background pixels are counted per bin (``bincount``) and the counts above each
    threshold are reverse cumulative sums.

    Parameters
    ----------
    probabilities : array_like
        Foreground probability (or per-class ``[..., K]``, see module conventions).
    truth : array_like
        True mask or label map.
    thresholds : array_like, optional
        Thresholds; a pixel is foreground when ``p >= threshold``. Default 101 values
        0, 0.01, ..., 1.
    class_index : int, optional
        Class scored.

    Returns
    -------
    pandas.DataFrame
        One row per threshold (in increasing order): ``threshold``, ``precision``, ``recall``,
        ``f1``, ``iou``, ``tp``, ``fp``, ``fn``.
    """
    import pandas as pd

    p, t = _probability_pair(probabilities, truth, class_index)
    if thresholds is None:
        thresholds = np.linspace(0.0, 1.0, 101)
    thresholds = np.unique(np.asarray(thresholds, dtype=np.float64).ravel())
    if thresholds.size == 0 or not np.isfinite(thresholds).all():
        raise TEMInputError("thresholds must be a non-empty list of finite numbers")
    p = p.ravel()
    t = t.ravel()
    m = thresholds.size
    # number of thresholds <= p: the pixel is foreground for thresholds[:bin]
    bins = np.searchsorted(thresholds, p.astype(np.float64), side="right")
    pos = np.bincount(bins[t], minlength=m + 1)
    neg = np.bincount(bins[~t], minlength=m + 1)
    # foreground at threshold j <=> bin > j: counts of bins j+1..m
    tp = np.cumsum(pos[::-1])[::-1][1:]
    fp = np.cumsum(neg[::-1])[::-1][1:]
    fn = int(np.count_nonzero(t)) - tp
    prec, rec, f, j = scores_from_counts(tp, fp, fn)
    return pd.DataFrame({"threshold": thresholds, "precision": prec, "recall": rec, "f1": f,
                         "iou": j, "tp": tp.astype(np.int64), "fp": fp.astype(np.int64),
                         "fn": fn.astype(np.int64)})


def best_threshold(probabilities, truth, metric: str = "f1", *, thresholds=None,
                   class_index=None):
    """Threshold that maximises a score on a probability map.

    Parameters
    ----------
    probabilities, truth, thresholds, class_index
        As :func:`threshold_curve`.
    metric : {"f1", "dice", "iou"}
        Score to maximise (``"dice"`` is the same as ``"f1"``).

    Returns
    -------
    threshold : float
        The smallest threshold reaching the best score.
    score : float
        The best score.
    """
    column = {"f1": "f1", "dice": "f1", "iou": "iou"}.get(metric)
    if column is None:
        raise TEMInputError(f"metric must be 'f1', 'dice' or 'iou'; got {metric!r}")
    curve = threshold_curve(probabilities, truth, thresholds, class_index=class_index)
    i = int(np.argmax(curve[column].to_numpy()))
    return float(curve["threshold"].iloc[i]), float(curve[column].iloc[i])


def otsu_threshold(probabilities, *, class_index=None, nbins: int = 256) -> float:
    """Otsu's threshold of a probability map (Horwath et al. 2020 [2]_).

    Choosing the threshold from the distribution of the network's output needs no labels; for
    well-trained models the probabilities are bimodal and the Otsu level sits between the modes.

    Parameters
    ----------
    probabilities : array_like
        Foreground probability ``[...]``, or per-class ``[..., K]`` with ``class_index``
        choosing the channel (required then).
    class_index : int, optional
        Channel of a per-class probability map.
    nbins : int
        Histogram bins.

    Returns
    -------
    float
        The threshold (use ``probabilities >= threshold``); 0.5 if the map is constant.
    """
    from skimage.filters import threshold_otsu

    p = _array(probabilities, "probabilities")
    if class_index is not None:
        if p.ndim < 1 or not 0 <= int(class_index) < p.shape[-1]:
            raise TEMInputError(f"class_index {class_index} is outside the class axis of "
                                f"probabilities {p.shape}")
        p = p[..., int(class_index)]
    if not np.issubdtype(p.dtype, np.number) or p.size == 0:
        raise TEMInputError("probabilities must be a non-empty numeric array")
    if not np.isfinite(p).all():
        raise TEMInputError("probabilities hold NaN or infinite values")
    if p.min() < 0 or p.max() > 1:
        raise TEMInputError(f"probabilities must lie in [0, 1]; got range "
                            f"[{float(p.min()):g}, {float(p.max()):g}]")
    if p.min() == p.max():
        return 0.5
    return float(threshold_otsu(p.astype(np.float64, copy=False), nbins=nbins))


# --------------------------------------------------------------------------------------------
# Missed area (Sytwu et al. 2022, Fig. 7)
# --------------------------------------------------------------------------------------------

def missed_area(pred, truth, *, class_index=None) -> np.ndarray:
    """Map of the true pixels a prediction missed (false negatives).

    Parameters
    ----------
    pred, truth, class_index
        As :func:`dice`.

    Returns
    -------
    ndarray of bool
        ``truth & ~pred``.
    """
    p, t = _hard_pair(pred, truth, class_index)
    return t & ~p


def missed_area_dice(missed_a, missed_b) -> float:
    """Dice overlap of the missed areas of two models [1]_ (Fig. 7).

    Near 1: the two models fail on the same pixels (the hard regions of the image); near 0: they
    fail in different places.

    Parameters
    ----------
    missed_a, missed_b : array_like of bool
        Outputs of :func:`missed_area` for two predictions against the same truth.

    Returns
    -------
    float
        In [0, 1]; 1.0 when neither missed anything.
    """
    return dice(missed_a, missed_b)


def plot_threshold_curve(curve, ax=None, *, mark_best: bool = True):
    """Plot precision, recall and F1 against threshold (Horwath et al. 2020, Fig. 6).

    Parameters
    ----------
    curve : pandas.DataFrame
        Output of :func:`threshold_curve`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    mark_best : bool
        Mark the threshold of the best F1.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    missing = {"threshold", "precision", "recall", "f1"} - set(getattr(curve, "columns", []))
    if missing:
        raise TEMInputError(f"curve lacks columns {sorted(missing)}; pass threshold_curve(...)")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    for column, style in (("precision", "-"), ("recall", "--"), ("f1", "-")):
        ax.plot(curve["threshold"], curve[column], style, label=column if column != "f1" else "F1",
                lw=2 if column == "f1" else 1.5)
    if mark_best and len(curve):
        i = int(np.argmax(curve["f1"].to_numpy()))
        ax.axvline(curve["threshold"].iloc[i], color="0.5", lw=1, ls=":")
        ax.annotate(f"best F1 {curve['f1'].iloc[i]:.3f}\nat {curve['threshold'].iloc[i]:.2f}",
                    (curve["threshold"].iloc[i], curve["f1"].iloc[i]), textcoords="offset points",
                    xytext=(5, -30), fontsize=8)
    ax.set_xlabel("threshold")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    return ax
