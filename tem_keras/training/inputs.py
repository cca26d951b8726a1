"""What training reads: the split, the labels (hand-drawn or pseudo) and the preprocessed images,
and the data's fingerprint.

:func:`read_training_inputs` is the first named step of :func:`~tem_keras.training.fit` (and of
:func:`~tem_keras.training.planning.plan`): images are decoded once, here. :func:`fingerprint`
summarises what the plan is derived from, as nnU-Net's dataset fingerprint does [1]_.

References
----------
.. [1] Isensee, F. et al. nnU-Net: a self-configuring method for deep learning-based biomedical
   image segmentation. Nat. Methods 18, 203-211 (2021).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from ..validation import check_mask_contents
from .config import TrainingConfig
from .labels import edge_radius, ignore_edges, route, split_with_pseudo_labels

__all__ = ["TrainingInputs", "read_training_inputs", "split_images", "fingerprint"]


@dataclass
class TrainingInputs:
    """The images of each split, read and preprocessed, with where their labels came from.

    ``read[name]`` is ``(images, masks, pixel sizes by stem)`` of split ``name`` (absent when the
    split is empty); training masks of pseudo-labelled images have their edges ignored.
    """

    dataset: object
    split: dict
    read: dict
    hand: list = field(default_factory=list)
    pseudo: list = field(default_factory=list)
    pseudo_dir: Path | None = None
    edge_px: int | None = None

    @property
    def labels(self) -> str:
        """The plan line saying which labels train (:func:`~tem_keras.training.labels.route`)."""
        return route(len(self.hand), len(self.pseudo), self.edge_px,
                     hand_training=len(set(self.hand) & set(self.split.get("train", []))))


def read_training_inputs(dataset_dir, config: TrainingConfig, *, labels: str = "masks", particles: str = "auto",
                         discover_kwargs=None, preprocessing=None, split: dict | None = None,
                         verbose: int = 1) -> TrainingInputs:
    """Discover ``dataset_dir``, pseudo-label its unlabelled images when ``labels="auto"``, split
    it and read every image once.

    ``split`` fixes the images of each split (default: ``dataset.json``'s, or hand-drawn masks for
    validation and test with pseudo-labels in training, or ``config.split`` of all of them).
    """
    from ..data.datasets import discover
    from ..data.pipeline import load_images
    from ..data.preprocess import Preprocessing

    dataset_dir = Path(dataset_dir)
    dataset = discover(dataset_dir, include_unlabelled=labels == "auto", **(discover_kwargs or {}))
    hand = [s.stem for s in dataset.labelled]
    pseudo_dir = None
    if labels == "auto" and len(dataset.labelled) < len(dataset):
        from ..data.labelling import pseudo_label_dataset

        pseudo_dir = Path(tempfile.mkdtemp(prefix="tem_keras_pseudo_labels_"))
        dataset = pseudo_label_dataset(dataset, pseudo_dir, particles=particles, progress=verbose > 0)
    pseudo = sorted({s.stem for s in dataset.labelled} - set(hand))
    if split is None and pseudo and hand:  # hand-drawn masks judge, pseudo-labels train
        split = split_with_pseudo_labels(hand, pseudo, config.split, fixed=dataset.split, seed=config.seed)
    split = split or split_images(dataset, config, dataset_dir)
    preprocessing = preprocessing or Preprocessing()
    read = {name: load_images(dataset, split[name], preprocessing=preprocessing, progress=verbose > 0,
                              desc=f"reading {name} images") for name in ("train", "val", "test") if split[name]}
    mask_files = {s.stem: s.mask.name for s in dataset.labelled}
    note = check_mask_contents(((mask_files.get(stem, stem), mask) for name in read
                                for stem, mask in zip(split[name], read[name][1])), dataset_dir)
    if note:
        warnings.warn(note, UserWarning, stacklevel=3)
    inputs = TrainingInputs(dataset, split, read, hand, pseudo, pseudo_dir)
    if pseudo:  # pixels near pseudo-label edges carry no loss
        masks = read["train"][1]
        inputs.edge_px = edge_radius([m for s, m in zip(split["train"], masks) if s in set(pseudo)])
        for i, stem in enumerate(split["train"]):
            if stem in set(pseudo):
                masks[i] = ignore_edges(masks[i], inputs.edge_px)
    return inputs


def split_images(dataset, config: TrainingConfig, dataset_dir: Path) -> dict:
    """Train/val/test stems: ``dataset.json``'s split or ``config.split`` of the labelled images;
    a warning when fewer than 3 images validate."""
    from ..data.datasets import split_samples

    labelled = [s.stem for s in dataset.labelled]
    if not labelled:
        raise TEMInputError("no labelled images: every image needs a mask to train on", dataset_dir)
    chosen = dataset.split or split_samples(labelled, config.split, seed=config.seed)
    split = {k: list(chosen.get(k, [])) for k in ("train", "val", "test")}
    if not split["train"]:
        raise TEMInputError("the split leaves no image for training", dataset_dir)
    if dataset.split and not split["val"] and len(split["train"]) > 1 and config.split[1] > 0:
        # a fixed split without validation images (e.g. train/ and test/ folders): carve them
        # out of the training images in the proportion of config.split
        share = config.split[1] / (config.split[0] + config.split[1])
        carved = split_samples(split["train"], (1 - share, share, 0.0), seed=config.seed)
        split["train"], split["val"] = carved["train"], carved["val"]
    if not split["val"]:
        raise TEMInputError(_no_validation(len(labelled), dataset.split, config.split), dataset_dir)
    if len(split["val"]) < 3:
        warnings.warn(f"only {len(split['val'])} validation image(s): the best epoch is chosen on "
                      "them and the threshold stays at 0.5; label more images or use folds=5",
                      UserWarning, stacklevel=4)
    return split


def _no_validation(n: int, fixed, fractions) -> str:
    """Why no image validates, and advice that differs from what was asked."""
    head = "no image is left for validation, on which the checkpoints are chosen"
    if n < 2:
        return f"{head}: {n} labelled image cannot be trained on and validated on; label at least one more"
    if fixed:
        return f"{head}: dataset.json's split lists none under \"val\"; add some there"
    if fractions[1] > 0:
        return (f"{head}: the split {tuple(fractions)} of {n} labelled images gives none to validation; "
                "label more images, or give one to validation, e.g. split=(0.5, 0.5, 0.0) "
                "(--split 0.5 0.5 0)")
    return (f"{head}: the split {tuple(fractions)} gives none to validation; give it a share, e.g. "
            "split=(0.7, 0.1, 0.2) (--split 0.7 0.1 0.2)")


def _spread(values) -> dict:
    v = np.asarray(values, float)
    if not v.size:
        return {"count": 0}
    p10, median, p90 = np.percentile(v, (10, 50, 90))
    return {"count": int(v.size), "min": float(v.min()), "p10": float(p10), "median": float(median),
            "p90": float(p90), "max": float(v.max())}


def fingerprint(inputs: TrainingInputs, raw_intensities=None) -> dict:
    """What the plan is derived from: images per split, image sizes, pixel sizes, particle
    diameters and class fractions of the training masks, and (given ``raw_intensities``, one
    ``(p1, median, p99)`` per image) the stored intensities."""
    from .plan import particle_diameters

    images, masks, pixel_sizes = inputs.read["train"]
    known = [p for name in inputs.read for p in inputs.read[name][2].values() if p]
    counts = np.bincount(np.concatenate([np.asarray(m).ravel() for m in masks]).astype(np.int64))
    labelled = counts[:255].sum() if counts.size > 255 else counts.sum()
    out = {
        "images": {name: len(inputs.split[name]) for name in ("train", "val", "test")},
        "labels": {"hand_drawn": len(inputs.hand), "pseudo_labelled": len(inputs.pseudo),
                   "ignored_edge_px": inputs.edge_px},
        "image_height_px": _spread([i.shape[0] for name in inputs.read for i in inputs.read[name][0]]),
        "image_width_px": _spread([i.shape[1] for name in inputs.read for i in inputs.read[name][0]]),
        "pixel_size_nm": _spread(known) if known else None,
        "particle_diameter_px": _spread(particle_diameters(masks)),
        "class_fractions": {str(c): round(float(n) / max(float(labelled), 1.0), 5)
                            for c, n in enumerate(counts[:255]) if n},
    }
    if raw_intensities is not None:
        raw = np.asarray(raw_intensities, float).reshape(-1, 3)
        out["intensity"] = {"p1": _spread(raw[:, 0]), "median": _spread(raw[:, 1]), "p99": _spread(raw[:, 2])}
    return out
