"""Training losses for softmax segmentation outputs ``[B, H, W, C]`` against integer masks ``[B, H, W]``.

Cross-entropy is the papers' default (Horwath et al. 2020; Sytwu et al. 2022); class weights help
very unbalanced data (a few per cent of particle pixels); the soft dice loss optimises the overlap
directly (Milletari et al. 2016) and focal loss down-weights easy pixels (Lin et al. 2017).
All are registered Keras objects, so models compiled with them reload from ``.keras`` files.

Pixels whose mask value is :data:`IGNORE_LABEL` carry no loss and no metric: the uncertain edges of
pseudo-labels (:mod:`tem_keras.training.labels`), as in semi-supervised segmentation with an
ignore index (e.g. PyTorch's ``ignore_index``, nnU-Net's ignore label).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["IGNORE_LABEL", "WeightedCrossEntropy", "DiceLoss", "CrossEntropyDiceLoss", "FocalLoss",
           "get_loss", "inverse_frequency_weights"]

from ..data.datasets import IGNORE_LABEL

_EPS = 1e-7


def _prepare(y_true, y_pred):
    """One-hot truth (all zeros at ignored pixels), clipped probabilities and the valid-pixel mask."""
    y_pred = ops.cast(y_pred, "float32")
    num_classes = ops.shape(y_pred)[-1]
    labels = ops.cast(y_true, "int32")
    valid = ops.cast(ops.not_equal(labels, IGNORE_LABEL), "float32")
    onehot = ops.one_hot(ops.where(labels == IGNORE_LABEL, 0, labels), num_classes, dtype="float32")
    return onehot * valid[..., None], ops.clip(y_pred, _EPS, 1.0 - _EPS), valid


def _valid_mean(values, valid):
    """Mean of per-pixel ``values`` over the valid pixels of each image (0 when none is)."""
    return ops.sum(values * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


@keras.saving.register_keras_serializable(package="tem_keras")
class WeightedCrossEntropy(keras.losses.Loss):
    """Pixel-wise cross-entropy, each pixel weighted by the weight of its true class.

    Parameters
    ----------
    class_weights : sequence of float, optional
        One weight per class; None gives plain cross-entropy.
    """

    def __init__(self, class_weights=None, name="weighted_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        onehot, y_pred, valid = _prepare(y_true, y_pred)
        ce = -ops.sum(onehot * ops.log(y_pred), axis=-1)
        if self.class_weights is not None:
            ce = ce * ops.sum(onehot * ops.convert_to_tensor(self.class_weights, "float32"), axis=-1)
        return _valid_mean(ce, valid)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="tem_keras")
class DiceLoss(keras.losses.Loss):
    """1 − soft dice of the foreground classes (1..C−1), per image.

    Soft dice = 2 Σ p q / (Σ p + Σ q) with p the predicted probability and q the one-hot truth
    (Sytwu et al. 2022, eq. 2); an image without the class and without predictions scores 1.
    """

    def __init__(self, smooth=1.0, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        onehot, y_pred, valid = _prepare(y_true, y_pred)
        onehot, y_pred = onehot[..., 1:], y_pred[..., 1:] * valid[..., None]
        intersection = ops.sum(onehot * y_pred, axis=(1, 2))
        total = ops.sum(onehot, axis=(1, 2)) + ops.sum(y_pred, axis=(1, 2))
        dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
        return 1.0 - ops.mean(dice, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="tem_keras")
class CrossEntropyDiceLoss(keras.losses.Loss):
    """Cross-entropy (optionally class-weighted) plus ``dice_weight`` × dice loss."""

    def __init__(self, class_weights=None, dice_weight=1.0, name="cross_entropy_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.dice_weight = float(dice_weight)
        self._ce = WeightedCrossEntropy(self.class_weights)
        self._dice = DiceLoss()

    def call(self, y_true, y_pred):
        return self._ce.call(y_true, y_pred) + self.dice_weight * self._dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights,
                "dice_weight": self.dice_weight}


@keras.saving.register_keras_serializable(package="tem_keras")
class FocalLoss(keras.losses.Loss):
    """Focal loss −α_c (1 − p_t)^γ log p_t (Lin et al. 2017), α per class or uniform."""

    def __init__(self, gamma=2.0, class_weights=None, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        onehot, y_pred, valid = _prepare(y_true, y_pred)
        p_t = ops.sum(onehot * y_pred, axis=-1) + (1.0 - valid)  # 1 at ignored pixels: no loss
        loss = -ops.power(1.0 - p_t, self.gamma) * ops.log(ops.minimum(p_t, 1.0))
        if self.class_weights is not None:
            loss = loss * ops.sum(onehot * ops.convert_to_tensor(self.class_weights, "float32"), axis=-1)
        return _valid_mean(loss, valid)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "class_weights": self.class_weights}


LOSSES = {
    "cross_entropy": lambda class_weights=None: WeightedCrossEntropy(None, name="cross_entropy"),
    "weighted_cross_entropy": lambda class_weights=None: WeightedCrossEntropy(class_weights),
    "dice": lambda class_weights=None: DiceLoss(),
    "cross_entropy_dice": lambda class_weights=None: CrossEntropyDiceLoss(class_weights),
    "focal": lambda class_weights=None: FocalLoss(class_weights=class_weights),
}


def get_loss(loss, class_weights=None) -> keras.losses.Loss:
    """A loss by name (``cross_entropy``, ``weighted_cross_entropy``, ``dice``,
    ``cross_entropy_dice``, ``focal``) or a Keras loss object, returned as is."""
    if not isinstance(loss, str):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[loss](class_weights)


def inverse_frequency_weights(class_counts) -> list[float]:
    """Class weights ∝ 1 / pixel frequency, normalised so the pixel-weighted mean weight is 1."""
    import numpy as np

    counts = np.asarray(class_counts, dtype=np.float64)
    freq = counts / counts.sum()
    weights = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
    weights /= (weights * freq).sum()
    return weights.tolist()
