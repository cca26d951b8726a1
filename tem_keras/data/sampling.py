"""Random training patches drawn on the fly from whole images, with foreground oversampling.

An epoch is a fixed number of optimiser steps, not a pass over a grid of patches: every step draws
fresh patches at random positions, so a lab's dozen micrographs give as many different patches as
the training budget allows and every pixel, border ones included, can be seen. A fraction of the
patches (a third by default, nnU-Net's rule [1]_) is centred on a pixel of a randomly chosen
foreground class, so rare particles (a few tenths of a percent of the pixels) are seen every batch.

Everything here is NumPy; :func:`tem_keras.data.pipeline.random_patch_pipeline` wraps a sampler
into ``tf.data``.

References
----------
.. [1] Isensee, F., Jaeger, P. F., Kohl, S. A. A., Petersen, J. & Maier-Hein, K. H. nnU-Net: a
   self-configuring method for deep learning-based biomedical image segmentation. Nat. Methods 18,
   203-211 (2021).
"""

from __future__ import annotations

import numpy as np

from .datasets import IGNORE_LABEL

__all__ = ["PatchSampler", "clamp_patch_size"]


def clamp_patch_size(patch_size: int, shapes, multiple: int = 1) -> int:
    """The largest patch side ≤ ``patch_size`` that fits every image and is a multiple of ``multiple``.

    Parameters
    ----------
    patch_size : int
        Wanted side in pixels.
    shapes : iterable of (int, int)
        Image shapes ``(H, W)``.
    multiple : int
        The model's down-sampling factor (patch sides must be multiples of it).

    Raises
    ------
    ValueError
        When the smallest image is smaller than one down-sampling step.
    """
    smallest = min(min(int(h), int(w)) for h, w in shapes)
    side = min(int(patch_size), smallest) // multiple * multiple
    if side < multiple or side <= 0:
        raise ValueError(f"the smallest image is {smallest} px, less than the model's down-sampling "
                         f"factor {multiple}: choose a model with less down-sampling")
    return side


class PatchSampler:
    """Draws ``(image, mask)`` patches of side ``patch_size`` from in-memory images.

    Parameters
    ----------
    images : list of ndarray ``[H, W]`` float32
        Preprocessed images, each at least ``patch_size`` in both directions.
    masks : list of ndarray ``[H, W]`` (integer class indices)
    patch_size : int
    foreground_fraction : float
        Probability that a patch is centred on a foreground pixel (of a class chosen uniformly
        among the foreground classes present in the image); the rest are uniform over all
        positions. Images without foreground always give uniform patches.

    Notes
    -----
    Images are chosen with probability proportional to their number of patch positions, so every
    position of every image is equally likely among uniform patches. A foreground-centred patch is
    shifted inside the image when its centre is near a border.
    """

    def __init__(self, images, masks, patch_size: int, *, foreground_fraction: float = 1 / 3):
        if len(images) != len(masks) or not images:
            raise ValueError("PatchSampler needs the same non-zero number of images and masks")
        if not 0.0 <= float(foreground_fraction) <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
        self.patch_size = int(patch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.images = [np.asarray(i, np.float32) for i in images]
        self.masks = [np.asarray(m) for m in masks]
        for image, mask in zip(self.images, self.masks):
            if image.shape != mask.shape or min(image.shape) < self.patch_size:
                raise ValueError(f"image {image.shape} and mask {mask.shape} must agree and be at "
                                 f"least {self.patch_size} px on each side")
        positions = np.array([(h - self.patch_size + 1) * (w - self.patch_size + 1)
                              for h, w in (i.shape for i in self.images)], float)
        self.weights = positions / positions.sum()
        # flat indices of the pixels of each foreground class, per image (not the ignored ones)
        self.foreground = [{int(c): np.flatnonzero(m.ravel() == c) for c in np.unique(m) if c not in (0, IGNORE_LABEL)}
                           for m in self.masks]

    def __len__(self) -> int:
        return len(self.images)

    def origin(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """``(image index, row, column)`` of the top-left corner of a random patch."""
        p = self.patch_size
        index = int(rng.choice(len(self.images), p=self.weights))
        h, w = self.images[index].shape
        classes = self.foreground[index]
        if classes and rng.random() < self.foreground_fraction:
            pixels = classes[list(classes)[rng.integers(len(classes))]]
            centre = int(pixels[rng.integers(len(pixels))])
            row, col = divmod(centre, w)
            row = int(np.clip(row - p // 2, 0, h - p))
            col = int(np.clip(col - p // 2, 0, w - p))
            return index, row, col
        return index, int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))

    def share(self, selected, fraction: float, *, at_least: bool = False) -> "PatchSampler":
        """Give the ``selected`` images (booleans, one per image) ``fraction`` of the patches, the
        others the rest; within each group images keep their share by patch positions. Returns
        the sampler; nothing changes unless both groups have images, nor with ``at_least`` when
        the selected images already have that share.

        >>> s = PatchSampler([np.zeros((8, 8))] * 4, [np.zeros((8, 8), np.uint8)] * 4, 4)
        >>> s.share([True, False, False, False], 0.5).weights.round(3).tolist()
        [0.5, 0.167, 0.167, 0.167]
        """
        selected = np.asarray(selected, bool)
        if selected.shape != self.weights.shape:
            raise ValueError(f"share needs one flag per image ({len(self.weights)}), got {selected.size}")
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"the share must be between 0 and 1, got {fraction!r}")
        if selected.all() or not selected.any() or (at_least and self.weights[selected].sum() >= fraction):
            return self
        weights = self.weights.copy()
        weights[selected] *= fraction / weights[selected].sum()
        weights[~selected] *= (1.0 - fraction) / weights[~selected].sum()
        self.weights = weights / weights.sum()
        return self

    def sample(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """One patch and its mask, a pure function of ``seed``."""
        index, row, col = self.origin(np.random.default_rng(int(seed) % 2**63))
        window = (slice(row, row + self.patch_size), slice(col, col + self.patch_size))
        return self.images[index][window], self.masks[index][window]

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels per class over all images (for class weights)."""
        counts = sum(np.bincount(m.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
                     for m in self.masks)
        return np.asarray(counts)
