"""Known-answer tests of tem_keras.analysis.metrics (hand-counted small cases)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tem_keras.analysis import metrics
from tem_keras.errors import TEMInputError

# 4x4 case, counted by hand:
#   pred        truth
#   1 1 0 0     1 1 1 0
#   1 1 0 0     1 1 1 0
#   0 0 0 0     0 0 0 0
#   0 0 0 1     0 0 0 0
# TP = 4 (top-left 2x2), FP = 1 (bottom-right), FN = 2 (column 2, rows 0-1), TN = 9
PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
TRUTH = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_counts_and_scores_by_hand():
    assert metrics.confusion_counts(PRED, TRUTH) == {"tp": 4, "fp": 1, "fn": 2, "tn": 9}
    assert metrics.dice(PRED, TRUTH) == pytest.approx(2 * 4 / (5 + 6))      # 8/11
    assert metrics.iou(PRED, TRUTH) == pytest.approx(4 / 7)                # TP/(TP+FP+FN)
    assert metrics.precision(PRED, TRUTH) == pytest.approx(4 / 5)
    assert metrics.recall(PRED, TRUTH) == pytest.approx(4 / 6)
    p, r = 4 / 5, 4 / 6
    assert metrics.f1(PRED, TRUTH) == pytest.approx(2 * p * r / (p + r))
    assert metrics.f1(PRED, TRUTH) == pytest.approx(metrics.dice(PRED, TRUTH))
    prf = metrics.precision_recall_f1(PRED.astype(bool), TRUTH.astype(bool))
    assert prf == pytest.approx({"precision": 0.8, "recall": 2 / 3, "f1": 8 / 11})
    scores = metrics.segmentation_scores(PRED, TRUTH)
    assert scores["accuracy"] == pytest.approx(13 / 16)
    assert scores["iou"] == pytest.approx(4 / 7)
    assert "soft_dice" not in scores


def test_empty_conventions():
    empty = np.zeros((4, 4), bool)
    for fn in (metrics.dice, metrics.iou, metrics.precision, metrics.recall, metrics.f1):
        assert fn(empty, empty) == 1.0
        assert fn(empty, TRUTH) == 0.0
        assert fn(PRED, empty) == 0.0
    assert metrics.soft_dice(np.zeros((4, 4)), empty) == 1.0
    assert metrics.missed_area_dice(empty, empty) == 1.0


def test_multiclass_label_maps():
    # classes: 0 background, 1 support, 2 particle
    truth = np.array([[0, 1, 1, 2],
                      [0, 1, 2, 2]])
    pred = np.array([[0, 1, 2, 2],
                     [0, 0, 2, 2]])
    # class 2: truth {(0,3),(1,2),(1,3)}, pred {(0,2),(0,3),(1,2),(1,3)}: TP 3, FP 1, FN 0
    assert metrics.dice(pred, truth, class_index=2) == pytest.approx(6 / 7)
    # class 1: truth {(0,1),(0,2),(1,1)}, pred {(0,1)}: TP 1, FP 0, FN 2
    assert metrics.dice(pred, truth, class_index=1) == pytest.approx(2 / 4)
    per_class = metrics.iou(pred, truth, class_index=[1, 2])
    assert per_class == pytest.approx({1: 1 / 3, 2: 3 / 4})
    # any non-zero class is foreground by default: truth 6 px, pred 5 px, overlap 5
    assert metrics.dice(pred, truth) == pytest.approx(10 / 11)
    # one-hot prediction [..., K] is arg-maxed
    onehot = np.eye(3)[pred]
    assert metrics.dice(onehot, truth, class_index=2) == pytest.approx(6 / 7)


def test_soft_dice_formula():
    prob = np.array([[0.9, 0.8], [0.2, 0.0]])
    truth = np.array([[1, 1], [1, 0]])
    # 2 * (0.9 + 0.8 + 0.2) / (1.9 + 3) = 3.8 / 4.9
    assert metrics.soft_dice(prob, truth) == pytest.approx(3.8 / 4.9)
    # per-class probabilities: channel 1 is the particle channel
    two = np.stack([1 - prob, prob], axis=-1)
    assert metrics.soft_dice(two, truth) == pytest.approx(3.8 / 4.9)
    # soft dice of a hard 0/1 map equals the hard dice
    assert metrics.soft_dice(PRED.astype(float), TRUTH) == pytest.approx(8 / 11)
    scores = metrics.segmentation_scores(prob > 0.5, truth, prob)
    assert scores["soft_dice"] == pytest.approx(3.8 / 4.9)


def test_input_validation():
    with pytest.raises(TEMInputError, match=r"\(4, 4\).*\(3, 4\)"):
        metrics.dice(PRED, TRUTH[:3])
    bad = np.full((4, 4), 0.5)
    bad[0, 0] = np.nan
    with pytest.raises(TEMInputError, match="NaN"):
        metrics.soft_dice(bad, TRUTH)
    with pytest.raises(TEMInputError, match="NaN"):
        metrics.threshold_curve(bad, TRUTH)
    with pytest.raises(TEMInputError, match=r"\[0, 1\]"):
        metrics.soft_dice(np.full((4, 4), 1.5), TRUTH)
    with pytest.raises(TEMInputError, match="non-integer"):
        metrics.dice(np.full((4, 4), 0.3), TRUTH)
    with pytest.raises(TEMInputError):
        metrics.best_threshold(np.full((4, 4), 0.5), TRUTH, metric="accuracy")
    with pytest.raises(TEMInputError, match="NaN"):
        metrics.otsu_threshold(bad)


def test_threshold_curve_matches_direct_computation():
    rng = np.random.default_rng(0)
    truth = rng.random((64, 48)) < 0.3
    prob = np.clip(0.35 * truth + 0.65 * rng.random(truth.shape), 0, 1)
    prob[0, :5] = [0.0, 0.25, 0.5, 0.75, 1.0]            # values exactly on thresholds
    curve = metrics.threshold_curve(prob, truth, thresholds=[0.0, 0.25, 0.5, 0.6, 0.75, 1.0])
    assert isinstance(curve, pd.DataFrame)
    assert list(curve.columns[:4]) == ["threshold", "precision", "recall", "f1"]
    for _, row in curve.iterrows():
        pred = prob >= row["threshold"]
        assert row["precision"] == pytest.approx(metrics.precision(pred, truth))
        assert row["recall"] == pytest.approx(metrics.recall(pred, truth))
        assert row["f1"] == pytest.approx(metrics.f1(pred, truth))
        assert row["iou"] == pytest.approx(metrics.iou(pred, truth))
    # at threshold 0 everything is foreground: recall 1, precision = truth fraction
    assert curve["recall"].iloc[0] == 1.0
    assert curve["precision"].iloc[0] == pytest.approx(truth.mean())
    default = metrics.threshold_curve(prob, truth)
    assert len(default) == 101 and default["threshold"].iloc[-1] == 1.0


def test_best_threshold_and_otsu():
    # particles have probability 0.7, background 0.2 and 0.4: any threshold in (0.4, 0.7]
    # separates them perfectly; the smallest grid threshold above 0.4 is returned
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True
    prob = np.where(truth, 0.7, 0.2)
    prob[8:, :] = 0.4
    thr, score = metrics.best_threshold(prob, truth, thresholds=np.linspace(0, 1, 11))
    assert score == pytest.approx(1.0)
    assert thr == pytest.approx(0.5)
    thr_iou, score_iou = metrics.best_threshold(prob, truth, metric="iou")
    assert score_iou == 1.0 and 0.4 < thr_iou <= 0.7
    # Otsu on a bimodal probability map falls in the gap between the two modes
    rng = np.random.default_rng(1)
    bimodal = np.clip(np.where(truth, 0.9, 0.1) + rng.normal(0, 0.03, truth.shape), 0, 1)
    level = metrics.otsu_threshold(bimodal)
    assert bimodal[~truth].max() < level < bimodal[truth].min()
    assert metrics.dice(bimodal >= level, truth) == 1.0
    assert metrics.otsu_threshold(np.full((4, 4), 0.3)) == 0.5


def test_missed_area_and_its_dice():
    truth = np.zeros((6, 6), bool)
    truth[1:5, 1:5] = True                                  # 16 px
    model_a = truth.copy()
    model_a[1, 1:5] = False                                 # misses row 1: 4 px
    model_b = truth.copy()
    model_b[1:3, 1:3] = False                               # misses a 2x2 block: 4 px
    missed_a = metrics.missed_area(model_a, truth)
    missed_b = metrics.missed_area(model_b, truth)
    assert missed_a.sum() == 4 and missed_b.sum() == 4
    assert not (missed_a & ~truth).any()
    # overlap of the missed areas: (1,1), (1,2) -> dice 2*2/(4+4)
    assert metrics.missed_area_dice(missed_a, missed_b) == pytest.approx(0.5)
    assert metrics.missed_area_dice(missed_a, missed_a) == 1.0


def test_plot_threshold_curve():
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(2)
    truth = rng.random((20, 20)) < 0.5
    prob = np.clip(0.5 * truth + 0.5 * rng.random(truth.shape), 0, 1)
    ax = metrics.plot_threshold_curve(metrics.threshold_curve(prob, truth))
    assert len(ax.lines) >= 3
    with pytest.raises(TEMInputError):
        metrics.plot_threshold_curve(pd.DataFrame({"x": [1]}))
