"""Whole held-out images: their prediction during training, per-image scores, and the threshold.

Validation and test images are judged whole, as ``predict`` sees them, and image by image: the
per-image mean dice is the figure checkpoints and early stopping follow and the headline of
``metrics.json``. The probability threshold of a 2-class model is chosen on held-out predictions
(validation images, or out-of-fold predictions of a k-fold run) and never on the test images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HeldOut", "predict_whole", "scores", "mean_dice", "cross_entropy", "choose_threshold",
           "test_metrics", "MIN_IMAGES_FOR_THRESHOLD"]

#: fewer held-out images than this and the threshold stays at 0.5 (one frame misleads, issue data)
MIN_IMAGES_FOR_THRESHOLD = 3
#: a threshold must beat 0.5 by this much mean dice on the held-out images to be used
_MIN_GAIN = 0.005
#: larger images are predicted in tiles by :func:`tem_keras.inference.predict_image`
_WHOLE_PIXELS = 2048 * 2048


def predict_whole(model, image: np.ndarray, factor: int) -> np.ndarray:
    """Class probabilities ``[H, W, C]`` of one preprocessed image in one model call.

    The image is reflect-padded to a multiple of the model's down-sampling ``factor`` (at least
    one step) and the padding cropped off; images over 2048² px go through the tiled
    :func:`tem_keras.inference.predict_image` instead.
    """
    h, w = image.shape
    if h * w > _WHOLE_PIXELS:
        from ..data.preprocess import Preprocessing
        from ..inference import predict_image

        identity = Preprocessing(remove_outliers=False)  # the image is standardised already
        return predict_image(model, image, preprocessing=identity)
    ph, pw = (-h) % factor, (-w) % factor
    x = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    out = model(x[None, ..., None].astype(np.float32), training=False)
    return np.asarray(out, np.float32)[0, :h, :w]


@dataclass
class HeldOut:
    """Preprocessed whole images (validation or test) with their masks and stems."""

    stems: list
    images: list
    masks: list

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: int, seed: int = 0) -> "HeldOut":
        """At most ``n`` of the images, a reproducible random choice (all when there are fewer)."""
        if len(self) <= n:
            return self
        keep = sorted(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return HeldOut([self.stems[i] for i in keep], [self.images[i] for i in keep],
                       [self.masks[i] for i in keep])

    def predict(self, model, factor: int) -> list:
        """Probabilities of every image (list of ``[H, W, C]``)."""
        return [predict_whole(model, image, factor) for image in self.images]


def _labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    if probabilities.shape[-1] == 2:
        return (probabilities[..., 1] >= threshold).astype(np.uint8)
    return probabilities.argmax(-1).astype(np.uint8)


def scores(probabilities, masks, threshold: float = 0.5) -> dict:
    """Per-image and pooled scores of the foreground (2 classes) or of each foreground class.

    Returns
    -------
    dict
        For 2 classes: :func:`tem_keras.analysis.metrics.per_image_scores` of the particle class at
        ``threshold``. For more: ``{"classes": {c: ...}}`` of each class on the argmax, and at the
        top level the class-mean of the per-image means (``per_image``) so that rare classes count
        as much as common ones.
    """
    from ..analysis.metrics import per_image_scores

    labels = [_labels(p, threshold) for p in probabilities]
    num_classes = probabilities[0].shape[-1]
    if num_classes == 2:
        return per_image_scores(labels, masks)
    classes = {str(c): per_image_scores(labels, masks, class_index=c) for c in range(1, num_classes)}
    keys = ("dice", "iou", "precision", "recall")
    mean = {k: {"mean": float(np.mean([s["per_image"][k]["mean"] for s in classes.values()])),
                "std": float(np.mean([s["per_image"][k]["std"] for s in classes.values()]))} for k in keys}
    pooled = {k: float(np.mean([s["pooled"][k] for s in classes.values()])) for k in keys}
    return {"per_image": mean, "pooled": pooled, "classes": classes, "n_images": len(labels)}


def mean_dice(probabilities, masks, threshold: float = 0.5) -> float:
    """The monitored figure: mean over images (and foreground classes) of the hard dice."""
    return scores(probabilities, masks, threshold)["per_image"]["dice"]["mean"]


def cross_entropy(probabilities, masks) -> float:
    """Mean pixel cross-entropy over the images (each image weighted equally)."""
    values = []
    for p, m in zip(probabilities, masks):
        picked = np.take_along_axis(p, np.asarray(m, np.int64)[..., None], -1)[..., 0]
        values.append(float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0)))))
    return float(np.mean(values))


def choose_threshold(probabilities, masks) -> dict:
    """The particle-probability threshold with the best mean per-image dice on held-out images.

    Kept at 0.5 for multi-class models, for fewer than :data:`MIN_IMAGES_FOR_THRESHOLD` images,
    and when no threshold beats 0.5 by at least 0.005 dice (a tie is not evidence).

    Returns
    -------
    dict
        ``threshold``, ``source`` (why), ``n_images``, ``dice_at_threshold``, ``dice_at_0.5``.
    """
    n = len(probabilities)
    if not n or probabilities[0].shape[-1] != 2:
        return {"threshold": 0.5, "source": "default: multi-class, argmax", "n_images": n}
    at_half = mean_dice(probabilities, masks, 0.5)
    if n < MIN_IMAGES_FOR_THRESHOLD:
        return {"threshold": 0.5, "source": f"default: {n} held-out image(s) are too few to choose one",
                "n_images": n, "dice_at_0.5": at_half}
    grid = np.round(np.arange(0.1, 0.91, 0.05), 2)
    dice = np.array([mean_dice(probabilities, masks, t) for t in grid])
    best = float(grid[int(np.argmax(dice))])
    if dice.max() < at_half + _MIN_GAIN:
        return {"threshold": 0.5, "source": "held-out images: no threshold beats 0.5", "n_images": n,
                "dice_at_0.5": at_half, "dice_at_threshold": at_half}
    return {"threshold": best, "source": "held-out images", "n_images": n, "dice_at_0.5": at_half,
            "dice_at_threshold": float(dice.max())}


def test_metrics(probabilities, masks, threshold: float) -> dict:
    """Per-image (headline) and pooled test scores at the chosen threshold, at 0.5 and at Otsu."""
    from ..analysis.metrics import otsu_threshold, segmentation_scores

    chosen = scores(probabilities, masks, threshold)
    out = {"per_image": chosen["per_image"], "pooled": chosen["pooled"],
           "images": chosen.get("images"), "n_images": chosen["n_images"]}
    if "classes" in chosen:
        out["classes"] = {c: {"per_image": s["per_image"], "pooled": s["pooled"]}
                          for c, s in chosen["classes"].items()}
    if probabilities[0].shape[-1] == 2:
        p = np.concatenate([q[..., 1].ravel() for q in probabilities])
        truth = np.concatenate([np.asarray(m).ravel() for m in masks])
        otsu = float(otsu_threshold(p))
        out.update({"at_0.5": segmentation_scores(p >= 0.5, truth, probabilities=p), "otsu_threshold": otsu,
                    "at_otsu": segmentation_scores(p >= otsu, truth, probabilities=p)})
    return out
