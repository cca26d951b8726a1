"""Where the training labels come from: hand-drawn masks, pseudo-labels, or both.

With ``fit(DIR, labels="auto")`` the images without a mask get pseudo-labels from the classical
labeller (Horwath et al. [1]_ label thousands of in-situ frames that way). Pseudo-labels are right
in the middle of particles and of the background and unsure at the edges, so the pixels within a
few pixels of a pseudo-label's edge carry no loss (:data:`~tem_keras.data.datasets.IGNORE_LABEL`,
as the ignore index of semi-supervised segmentation [2]_). Hand-drawn masks are the better judge:
when a folder has some, validation (checkpoint and threshold) and test images are drawn from them
only, and every pseudo-labelled image trains. The masked images that train give at least
:data:`HAND_SHARE` of the patches however many pseudo-labelled images there are, as
semi-supervised training draws a fixed share of each batch from the labelled images [3]_.

References
----------
.. [1] Horwath, J. P., Zakharov, D. N., Mégret, R. & Stach, E. A. Understanding important features
   of deep learning models for segmentation of high-resolution transmission electron microscopy
   images. npj Comput. Mater. 6, 108 (2020).
.. [2] Xie, Q., Luong, M.-T., Hovy, E. & Le, Q. V. Self-training with noisy student improves
   ImageNet classification. CVPR (2020).
.. [3] Sohn, K. et al. FixMatch: simplifying semi-supervised learning with consistency and
   confidence. NeurIPS (2020).
"""

from __future__ import annotations

import numpy as np

from ..data.datasets import IGNORE_LABEL, split_samples

__all__ = ["HAND_SHARE", "edge_radius", "ignore_edges", "split_with_pseudo_labels", "route"]

#: share of the training patches drawn from the hand-masked images when pseudo-labelled ones
#: train beside them
HAND_SHARE = 0.5


def edge_radius(masks) -> int:
    """Half-width (px) of the ignored band around pseudo-label edges: a tenth of the median
    equivalent diameter of their particles, at least 1 px (so 5 px particles keep their core).

    >>> yy, xx = np.mgrid[:64, :64]
    >>> edge_radius([((yy - 32) ** 2 + (xx - 32) ** 2 <= 20 ** 2).astype(np.uint8)])
    4
    """
    from .plan import particle_diameters

    d = particle_diameters(masks)
    return max(1, int(round(0.1 * float(np.median(d))))) if d.size else 1


def ignore_edges(mask: np.ndarray, radius: int) -> np.ndarray:
    """A copy of ``mask`` whose pixels within ``radius`` px (city-block) of a foreground edge, on
    either side, are :data:`IGNORE_LABEL`."""
    from scipy import ndimage

    foreground = np.asarray(mask) > 0
    grown = ndimage.binary_dilation(foreground, iterations=radius)
    shrunk = ndimage.binary_erosion(foreground, iterations=radius, border_value=1)
    out = np.array(mask, dtype=np.uint8, copy=True)
    out[grown & ~shrunk] = IGNORE_LABEL
    return out


def split_with_pseudo_labels(hand, pseudo, fractions, *, fixed: dict | None = None, seed: int = 0) -> dict:
    """Train/val/test stems when ``hand`` stems have drawn masks and ``pseudo`` stems pseudo-labels.

    Test images are ``fixed["test"]`` (a ``dataset.json`` split) or, with three or more hand
    masks, the ``fractions[2]`` share of them; of the other hand-masked images the
    ``fractions[1] / (fractions[0] + fractions[1])`` share, at least one, validates; the rest and
    every pseudo-labelled image train. One hand mask validates and trains nothing.

    >>> split_with_pseudo_labels(["a", "b"], ["c", "d", "e"], (0.7, 0.1, 0.2))
    {'train': ['b', 'c', 'd', 'e'], 'val': ['a'], 'test': []}
    """
    hand, pseudo = sorted(hand), sorted(pseudo)
    if fixed and fixed.get("test"):
        test = [s for s in hand if s in set(fixed["test"])]
    elif len(hand) >= 3 and fractions[2] > 0:
        test = split_samples(hand, (1.0 - fractions[2], 0.0, fractions[2]), seed=seed)["test"]
    else:
        test = []
    rest = [s for s in hand if s not in set(test)]
    n_val = max(1, int(round(len(rest) * fractions[1] / max(fractions[0] + fractions[1], 1e-9))))
    order = np.random.default_rng(seed).permutation(len(rest))
    val = sorted(rest[i] for i in order[:n_val])
    train = sorted(set(rest) - set(val)) + pseudo
    return {"train": train, "val": val, "test": test}


def route(n_hand: int, n_pseudo: int, radius: int | None, hand_training: int = 0) -> str:
    """The plan line that says where the labels come from (``hand_training``: how many masked
    images train).

    >>> route(2, 5, 1, hand_training=1).split("; ")[-1]
    'the 1 masked training image(s) give at least 50 % of the patches'
    """
    if not n_pseudo:
        return f"labels: the {n_hand} masks of the data set"
    edges = f"pixels within {radius} px of their edges carry no loss" if radius else "edges kept"
    if not n_hand:
        return (f"labels: no mask; {n_pseudo} pseudo-labelled images ({edges}); validation "
                "and test scores measure agreement with the labeller, not accuracy")
    share = (f"; the {hand_training} masked training image(s) give at least {100 * HAND_SHARE:.0f} % of the patches"
             if hand_training else "")
    return (f"labels: {n_hand} masks (validation and test only on them) + {n_pseudo} "
            f"pseudo-labelled images in training ({edges}){share}")
