"""From a dataset folder to reproducible ``tf.data`` pipelines of patches.

Source images are read, checked and preprocessed once (whole images, so the normalisation matches
inference), split by image with :func:`~tem_keras.data.datasets.split_samples`, cut into patches and
kept in memory. The ``tf.data`` pipeline then shuffles patch indices, augments in parallel with
per-element seeds (so results do not depend on thread timing), batches and prefetches. Batches are
``[B, H, W, 1]`` float32 images and ``[B, H, W]`` int32 masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from .augment import Augmentation, Augmenter
from .datasets import Dataset, discover, load_pair, split_samples
from .preprocess import Preprocessing, extract_patches, foreground_patches

#: patches sampled and augmented in parallel by the training pipelines (fixed: see _finish)
_LOADERS = max(1, min(8, os.cpu_count() or 1))

SPLITS = ("train", "val", "test")


@dataclass
class PatchSet:
    """Patches of one split, in memory.

    Attributes
    ----------
    images : ndarray ``[N, P, P]`` float32 (preprocessed)
    masks : ndarray ``[N, P, P]`` uint8
    sources : list of str
        Stem of the source image of each patch.
    origins : ndarray ``[N, 2]``
        Row and column of each patch in its source image.
    """

    images: np.ndarray
    masks: np.ndarray
    sources: list[str] = field(default_factory=list)
    origins: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))
    pixel_sizes_nm: dict[str, float | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels per class, e.g. for class weights."""
        return np.bincount(self.masks.ravel(), minlength=num_classes)[:num_classes]


def load_images(dataset: Dataset, stems, *, preprocessing: Preprocessing | None = None,
                progress: bool = False, desc: str = "reading images"):
    """Read, check and preprocess whole images and their masks.

    Returns
    -------
    images : list of ndarray ``[H, W]`` float32 (preprocessed)
    masks : list of ndarray ``[H, W]`` uint8
    pixel_sizes_nm : dict
        Stem → pixel size (None when the file has none).
    """
    from tqdm.auto import tqdm

    preprocessing = preprocessing or Preprocessing()
    by_stem = {s.stem: s for s in dataset.labelled}
    images, masks, pixel_sizes = [], [], {}
    for stem in tqdm(list(stems), desc=desc, unit="image", disable=not progress):
        sample = by_stem[stem]
        micrograph, mask = load_pair(sample, dataset.num_classes)
        pixel_sizes[stem] = micrograph.pixel_size_nm
        try:
            images.append(preprocessing(micrograph.data))
        except TEMInputError as err:
            raise TEMInputError(err.problem, sample.image) from None
        masks.append(mask.astype(np.uint8))
    return images, masks, pixel_sizes


def load_patches(dataset: Dataset, stems, patch_size: int, *, stride: int | None = None,
                 preprocessing: Preprocessing | None = None, min_foreground_pixels: int = 0,
                 progress: bool = False) -> PatchSet:
    """Read, check and preprocess the images ``stems`` of ``dataset`` and cut them into patches.

    Parameters
    ----------
    dataset : Dataset
    stems : iterable of str
    patch_size, stride : int
        See :func:`~tem_keras.data.preprocess.extract_patches`.
    preprocessing : Preprocessing, optional
        Applied to each whole image before cutting.
    min_foreground_pixels : int
        Drop patches with fewer non-background pixels (0 keeps all patches).
    progress : bool
        Show a progress bar.
    """
    stems = list(stems)
    by_stem = {s.stem: s for s in dataset.labelled}
    whole, whole_masks, pixel_sizes = load_images(dataset, stems, preprocessing=preprocessing,
                                                  progress=progress)
    images, masks, sources, origins = [], [], [], []
    for stem, data, mask in zip(stems, whole, whole_masks):
        patches, mask_patches, where = extract_patches(data, mask, patch_size, stride,
                                                       source=str(by_stem[stem].image))
        if min_foreground_pixels:
            keep = foreground_patches(mask_patches, min_foreground_pixels)
            patches, mask_patches, where = patches[keep], mask_patches[keep], where[keep]
        images.append(patches)
        masks.append(mask_patches)
        sources += [stem] * len(patches)
        origins.append(where)
    if not images:
        empty = np.zeros((0, patch_size, patch_size), np.float32)
        return PatchSet(empty, empty.astype(np.uint8))
    return PatchSet(np.concatenate(images).astype(np.float32), np.concatenate(masks).astype(np.uint8),
                    sources, np.concatenate(origins), pixel_sizes)


def patch_pipeline(patches: PatchSet, batch_size: int, *, shuffle: bool = False,
                   augmentation: Augmentation | None = None, seed: int = 0,
                   drop_remainder: bool = False):
    """A ``tf.data.Dataset`` of ``([B, P, P, 1] float32, [B, P, P] int32)`` batches.

    Shuffling and augmentation are reproducible for ``seed`` and differ from epoch to epoch.
    Patches are fetched by index, so no array is embedded in the graph (no 2 GB limit).
    ``drop_remainder`` keeps every batch full (needed when a batch is split across replicas); a
    split with fewer patches than one batch then repeats them to fill it.
    """
    import tensorflow as tf

    if len(patches) == 0:
        raise ValueError("no patches to make a pipeline from")
    size = patches.images.shape[1:]
    augmenter = Augmenter(augmentation) if augmentation is not None else None

    def fetch(index, element_seed):
        image, mask = patches.images[index], patches.masks[index]
        if augmenter is not None:
            image, mask = augmenter(image, mask, element_seed)
        return image, mask.astype(np.int32)

    def load(index, element_seed):
        image, mask = tf.numpy_function(fetch, [index, element_seed], [tf.float32, tf.int32],
                                        stateful=False)
        image = tf.ensure_shape(image, size)[..., tf.newaxis]
        return image, tf.ensure_shape(mask, size)

    ds = tf.data.Dataset.range(len(patches))
    if drop_remainder and len(patches) < batch_size:  # fewer patches than one batch: repeat them
        ds = ds.repeat(-(-batch_size // len(patches))).take(batch_size)
    if shuffle:
        ds = ds.shuffle(len(patches), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, seeds))
    ds = ds.map(load, num_parallel_calls=_LOADERS, deterministic=True)
    return _finish(ds.batch(batch_size, drop_remainder=drop_remainder))


def random_patch_pipeline(sampler, batch_size: int, *, augmentation: Augmentation | None = None,
                          seed: int = 0):
    """An endless ``tf.data.Dataset`` of random ``([B, P, P, 1] float32, [B, P, P] int32)`` batches.

    Each element is drawn by ``sampler`` (a :class:`~tem_keras.data.sampling.PatchSampler`) and
    augmented from its own seed, so the stream is reproducible for ``seed`` whatever the thread
    timing. Train with ``steps_per_epoch`` to cut it into epochs.
    """
    import tensorflow as tf

    size = (sampler.patch_size, sampler.patch_size)
    augmenter = Augmenter(augmentation) if augmentation is not None else None

    def fetch(element_seed):
        image, mask = sampler.sample(element_seed)
        if augmenter is not None:
            image, mask = augmenter(image, mask, element_seed)
        return np.asarray(image, np.float32), np.asarray(mask, np.int32)

    def load(element_seed):
        image, mask = tf.numpy_function(fetch, [element_seed], [tf.float32, tf.int32], stateful=False)
        return tf.ensure_shape(image, size)[..., tf.newaxis], tf.ensure_shape(mask, size)

    ds = tf.data.Dataset.random(seed=seed).map(load, num_parallel_calls=_LOADERS, deterministic=True)
    return _finish(ds.batch(batch_size, drop_remainder=True))


def _finish(ds):
    """Deterministic, sharded by data across workers, two batches prefetched, no autotuning.

    tf.data's autotuning thread sleeps up to 60 s between rounds once training has run for a
    while, and the iterator's destructor waits for it: ``fit`` sat idle for a minute after its
    last epoch. The parallelism is therefore fixed (:data:`_LOADERS`).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(2)


@dataclass
class TrainingData:
    """What :func:`training_data` prepared: the split, the patches and their pipelines."""

    dataset: Dataset
    split: dict[str, list[str]]
    patches: dict[str, PatchSet]
    pipelines: dict[str, object]
    patch_size: int
    batch_size: int
    preprocessing: Preprocessing
    augmentation: Augmentation | None
    pixel_size_nm: float | None

    def summary(self) -> str:
        parts = [f"{name}: {len(self.split[name])} images, {len(self.patches[name])} patches"
                 for name in SPLITS if name in self.patches]
        return f"{self.patch_size}² px patches, batch {self.batch_size} — " + "; ".join(parts)


def training_data(dataset, *, patch_size: int = 256, batch_size: int = 8, split=(0.7, 0.1, 0.2),
                  stride: int | None = None, augment: bool | Augmentation = True, seed: int = 0,
                  preprocessing: Preprocessing | None = None, min_foreground_pixels: int = 1,
                  replicas: int = 1, progress: bool = False, **discover_kwargs) -> TrainingData:
    """Split a data set by image and build the train/val/test pipelines.

    Parameters
    ----------
    dataset : str, Path or Dataset
        A dataset folder (passed to :func:`~tem_keras.data.datasets.discover` with
        ``discover_kwargs``) or a discovered :class:`Dataset`.
    patch_size : int
        Side of the square training patches (Sytwu et al. use 512, Horwath et al. 512 and 1024).
    batch_size : int
        Global batch size.
    split : tuple of 3 floats
        Train/val/test fractions of the images; a fixed split in ``dataset.json`` wins.
    stride : int, optional
        Patch stride (``patch_size`` by default: no overlap).
    augment : bool or Augmentation
        Augment the training patches (never validation or test).
    seed : int
        Controls the split, the shuffling and the augmentation.
    preprocessing : Preprocessing, optional
    min_foreground_pixels : int
        Training patches with fewer particle pixels are dropped (background-only patches, Sytwu et
        al. 2022); validation and test keep all patches.
    replicas : int
        Devices a batch is split across; with more than one, validation batches are kept full too.
    progress : bool
        Show a progress bar while reading.
    """
    if not isinstance(dataset, Dataset):
        dataset = discover(Path(dataset), **discover_kwargs)
    labelled = [s.stem for s in dataset.labelled]
    if not labelled:
        raise TEMInputError("no labelled images: every image needs a mask to train on", dataset.root)
    chosen = dataset.split or split_samples(labelled, split, seed=seed)
    preprocessing = preprocessing or Preprocessing()
    augmentation = (augment if isinstance(augment, Augmentation)
                    else Augmentation() if augment else None)
    patches, pipelines = {}, {}
    for offset, name in enumerate(SPLITS):
        stems = chosen.get(name, [])
        if not stems:
            continue
        patches[name] = load_patches(
            dataset, stems, patch_size, stride=stride, preprocessing=preprocessing,
            min_foreground_pixels=min_foreground_pixels if name == "train" else 0, progress=progress)
        if len(patches[name]) == 0:
            raise TEMInputError(f"no {name} patch has {min_foreground_pixels} or more particle "
                                "pixels; lower min_foreground_pixels or check the masks", dataset.root)
        training = name == "train"
        pipelines[name] = patch_pipeline(patches[name], batch_size, shuffle=training,
                                         augmentation=augmentation if training else None,
                                         seed=seed + offset, drop_remainder=training or replicas > 1)
    if "train" not in patches:
        raise TEMInputError("the split leaves no image for training", dataset.root)
    calibrated = [p for ps in patches.values() for p in ps.pixel_sizes_nm.values() if p]
    pixel_size = dataset.pixel_size_nm or (float(np.median(calibrated)) if calibrated else None)
    return TrainingData(dataset=dataset, split={k: list(chosen.get(k, [])) for k in SPLITS},
                        patches=patches, pipelines=pipelines, patch_size=patch_size,
                        batch_size=batch_size, preprocessing=preprocessing,
                        augmentation=augmentation, pixel_size_nm=pixel_size)
