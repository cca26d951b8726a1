"""Losses and epoch-level Keras metrics against values computed by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tem_keras.training.keras_metrics import IoU, Dice
from tem_keras.training.losses import (CrossEntropyDiceLoss, DiceLoss, FocalLoss, WeightedCrossEntropy,
                              get_loss, inverse_frequency_weights)

# one image of 2×2 pixels: truth [[0, 1], [1, 1]], particle probabilities [[0.2, 0.9], [0.6, 0.3]]
TRUTH = np.array([[[0, 1], [1, 1]]], np.int32)
P1 = np.array([[[0.2, 0.9], [0.6, 0.3]]], np.float32)
PRED = np.stack([1 - P1, P1], -1)


def test_cross_entropy_by_hand():
    expected = -(np.log(0.8) + np.log(0.9) + np.log(0.6) + np.log(0.3)) / 4
    assert float(WeightedCrossEntropy()(TRUTH, PRED)) == pytest.approx(expected, rel=1e-5)
    weighted = -(1 * np.log(0.8) + 3 * (np.log(0.9) + np.log(0.6) + np.log(0.3))) / 4
    assert float(WeightedCrossEntropy([1, 3])(TRUTH, PRED)) == pytest.approx(weighted, rel=1e-5)
    reference = keras.losses.SparseCategoricalCrossentropy()(TRUTH, PRED)
    assert float(get_loss("cross_entropy")(TRUTH, PRED)) == pytest.approx(float(reference), rel=1e-5)


def test_dice_loss_focal_and_combination():
    soft = 2 * (0.9 + 0.6 + 0.3) / ((0.2 + 0.9 + 0.6 + 0.3) + 3)
    assert float(DiceLoss(smooth=0)(TRUTH, PRED)) == pytest.approx(1 - soft, rel=1e-5)
    perfect = np.stack([1 - TRUTH, TRUTH], -1).astype(np.float32)
    assert float(DiceLoss()(TRUTH, perfect)) == pytest.approx(0, abs=1e-5)
    ce = float(WeightedCrossEntropy()(TRUTH, PRED))
    assert float(FocalLoss(gamma=0)(TRUTH, PRED)) == pytest.approx(ce, rel=1e-5)
    p_t = np.array([0.8, 0.9, 0.6, 0.3])
    focal = np.mean(-(1 - p_t) ** 2 * np.log(p_t))
    assert float(FocalLoss(gamma=2)(TRUTH, PRED)) == pytest.approx(focal, rel=1e-5)
    both = float(CrossEntropyDiceLoss(dice_weight=0.5)(TRUTH, PRED))
    assert both == pytest.approx(ce + 0.5 * float(DiceLoss()(TRUTH, PRED)), rel=1e-5)


def test_loss_registry_and_serialisation():
    loss = get_loss("weighted_cross_entropy", [0.5, 2.0])
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, WeightedCrossEntropy) and clone.class_weights == [0.5, 2.0]
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        get_loss("l2")


def test_inverse_frequency_weights():
    w = inverse_frequency_weights([900, 100])
    assert w[1] / w[0] == pytest.approx(9)
    assert 0.9 * w[0] + 0.1 * w[1] == pytest.approx(1)


def test_epoch_metrics_accumulate_sums_not_batch_means():
    dice, soft, iou = Dice(), Dice(soft=True), IoU()
    # batch 1: prediction (>0.5) = [[0,1],[1,0]] vs truth [[0,1],[1,1]] → tp 2, fp 0, fn 1
    # batch 2: an image with one particle pixel, predicted nowhere → tp 0, fp 0, fn 1
    truth2 = np.array([[[1, 0], [0, 0]]], np.int32)
    pred2 = np.stack([np.ones((1, 2, 2)), np.zeros((1, 2, 2))], -1).astype(np.float32)
    for m in (dice, soft, iou):
        m.update_state(TRUTH, PRED)
        m.update_state(truth2, pred2)
    assert float(dice.result()) == pytest.approx(2 * 2 / (2 + 4))  # 2·tp / (pred + truth)
    assert float(iou.result()) == pytest.approx(2 / 4)  # tp / (tp + fp + fn)
    assert float(soft.result()) == pytest.approx(2 * 1.8 / (2.0 + 4), rel=1e-5)
    empty = Dice()
    empty.update_state(np.zeros((1, 2, 2), np.int32), pred2)
    assert float(empty.result()) == 1.0


@pytest.mark.parametrize("loss", [WeightedCrossEntropy(), WeightedCrossEntropy([1, 3]), DiceLoss(),
                                  CrossEntropyDiceLoss(), FocalLoss()], ids=lambda l: l.name)
def test_ignored_pixels_carry_no_loss_and_no_gradient(loss):
    """Pixels marked IGNORE_LABEL (the edges of pseudo-labels) change neither the loss nor, through
    their predictions, the gradient; the loss equals that of the labelled pixels alone."""
    import tensorflow as tf

    from tem_keras.data.datasets import IGNORE_LABEL

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (2, 6, 8)).astype(np.int32)
    p = rng.uniform(0.05, 0.95, (2, 6, 8)).astype(np.float32)
    ignored = truth.copy()
    ignored[:, :, 4:] = IGNORE_LABEL  # the right half of both images is unlabelled
    other = p.copy()
    other[:, :, 4:] = rng.uniform(0.05, 0.95, (2, 6, 4))  # ...and predicted differently
    as_pred = lambda q: np.stack([1 - q, q], -1)  # noqa: E731
    value = float(loss(ignored, as_pred(p)))
    assert float(loss(ignored, as_pred(other))) == pytest.approx(value, rel=1e-6)
    assert value == pytest.approx(float(loss(truth[:, :, :4], as_pred(p[:, :, :4]))), rel=1e-5)
    x = tf.Variable(as_pred(p))
    with tf.GradientTape() as tape:
        out = loss(ignored, x)
    grad = tape.gradient(out, x).numpy()
    assert np.all(grad[:, :, 4:] == 0) and np.any(grad[:, :, :4] != 0)


def test_metrics_skip_ignored_pixels():
    from tem_keras.data.datasets import IGNORE_LABEL

    truth = np.array([[[0, 1, IGNORE_LABEL, IGNORE_LABEL]]], np.int32)
    q = np.array([[[0.1, 0.9, 0.9, 0.1]]], np.float32)  # right on the labelled pixels
    pred = np.stack([1 - q, q], -1)
    assert float(Dice()(truth, pred)) == 1.0 and float(IoU()(truth, pred)) == 1.0
    assert float(Dice(soft=True)(truth, pred)) == pytest.approx(2 * 0.9 / (0.9 + 0.1 + 1))
