"""Keras metrics of the particle class(es), accumulated over a whole epoch.

Dice and IoU are ratios of sums: averaging per-batch ratios would weight a batch with one small
particle like a batch full of them, so these metrics keep running sums of intersections and sizes
and divide once (the same numbers as :mod:`tem_keras.analysis.metrics` on the concatenated data).
"""

from __future__ import annotations

import keras
from keras import ops


class _OverlapMetric(keras.metrics.Metric):
    """Running sums of intersection, prediction and truth over the foreground classes."""

    def __init__(self, soft=False, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.soft = bool(soft)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.predicted = self.add_variable(shape=(), initializer="zeros", name="predicted")
        self.true = self.add_variable(shape=(), initializer="zeros", name="true")

    def update_state(self, y_true, y_pred, sample_weight=None):
        from ..data.datasets import IGNORE_LABEL

        y_pred = ops.cast(y_pred, "float32")
        num_classes = ops.shape(y_pred)[-1]
        labels = ops.cast(y_true, "int32")
        valid = ops.cast(ops.not_equal(labels, IGNORE_LABEL), "float32")[..., None]  # ignored: not counted
        truth = ops.one_hot(ops.where(labels == IGNORE_LABEL, 0, labels), num_classes, dtype="float32")[..., 1:]
        if self.soft:
            pred = y_pred[..., 1:]
        else:
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), num_classes, dtype="float32")[..., 1:]
        truth, pred = truth * valid, pred * valid
        self.intersection.assign_add(ops.sum(truth * pred))
        self.predicted.assign_add(ops.sum(pred))
        self.true.assign_add(ops.sum(truth))

    def reset_state(self):
        for v in (self.intersection, self.predicted, self.true):
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "soft": self.soft}


@keras.saving.register_keras_serializable(package="tem_keras")
class Dice(_OverlapMetric):
    """Dice of the foreground classes: hard (argmax) by default, soft (Sytwu et al. eq. 2) with
    ``soft=True``. 1 when neither truth nor prediction has foreground."""

    def __init__(self, soft=False, name=None, **kwargs):
        super().__init__(soft=soft, name=name or ("soft_dice" if soft else "dice"), **kwargs)

    def result(self):
        total = self.predicted + self.true
        return ops.where(total > 0, 2.0 * self.intersection / ops.maximum(total, 1e-12), 1.0)


@keras.saving.register_keras_serializable(package="tem_keras")
class IoU(_OverlapMetric):
    """Intersection over union (Jaccard) of the foreground classes from the argmax prediction."""

    def __init__(self, name="iou", **kwargs):
        kwargs.pop("soft", None)
        super().__init__(soft=False, name=name, **kwargs)

    def result(self):
        union = self.predicted + self.true - self.intersection
        return ops.where(union > 0, self.intersection / ops.maximum(union, 1e-12), 1.0)


def default_metrics():
    """The metrics ``fit`` tracks: hard dice, soft dice and IoU of the particle class(es)."""
    return [Dice(), Dice(soft=True), IoU()]
