"""Training augmentation with albumentations, applied identically to image and mask.

The 8 dihedral transforms (Sytwu et al. 2022), small rotations and scalings with reflected borders,
and, on request (``p > 0``), the variations of real micrographs: blur (defocus, drift), Gaussian
read noise, Poisson (dose) noise, brightness/contrast and an illumination gradient (Horwath et al.
2020). The photometric ones are off by default: for the same number of steps they cost test dice
on held-out images of the same acquisition (in-situ frames of 5–8 px particles: 0.969 → 0.972 and
0.913 → 0.917 without them; ``benchmarks/ablate.py``), where blur and noise mostly hide the edges
of the small particles the masks draw.

Images reaching this module are standardised floats. albumentations' photometric transforms work on
the 0..1 range, so each patch is mapped to 0..1 by its own minimum and maximum, transformed and
mapped back: the augmentations act on the patch's own contrast range.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import numpy as np

from .. import _env  # noqa: F401  (NO_ALBUMENTATIONS_UPDATE before albumentations is imported)


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations to apply and how strongly (stored in the run's ``config.json``).

    Attributes
    ----------
    dihedral : bool
        Random choice among the 8 symmetries of the square (rotations by 90° and flips).
    rotate_degrees : float
        Maximum extra rotation; borders are reflected. 0 disables it (and the scaling).
    scale : tuple of float
        Range of zoom factors applied with the rotation.
    blur_sigma : tuple of float
        Range of the Gaussian blur's sigma in pixels; ``(0, 0)``: no blur.
    gaussian_noise : tuple of float
        Range of the Gaussian noise's standard deviation, as a fraction of the patch's range.
    dose_noise : tuple of float
        Range of albumentations' ShotNoise scale (Poisson noise; larger is a lower dose).
    brightness_contrast : float
        Maximum relative brightness and contrast change.
    illumination : float
        Maximum strength of a linear illumination gradient.
    p : float
        Probability of each photometric augmentation (0, the default: none of them; the papers'
        set-up is 0.3).
    """

    dihedral: bool = True
    rotate_degrees: float = 15.0
    scale: tuple = (0.9, 1.1)
    blur_sigma: tuple = (0.3, 1.5)
    gaussian_noise: tuple = (0.01, 0.05)
    dose_noise: tuple = (0.01, 0.05)
    brightness_contrast: float = 0.2
    illumination: float = 0.15
    p: float = 0.0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, config: dict) -> "Augmentation":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def _compose(aug: Augmentation):
    import albumentations as A
    import cv2

    geometric, photometric = [], []
    if aug.dihedral:
        geometric.append(A.D4(p=1.0))
    if aug.rotate_degrees:
        geometric.append(A.Affine(rotate=(-aug.rotate_degrees, aug.rotate_degrees), scale=aug.scale,
                                  border_mode=cv2.BORDER_REFLECT_101, p=0.5))
    p = aug.p
    if p:
        if max(aug.blur_sigma) > 0:
            photometric.append(A.GaussianBlur(blur_limit=0, sigma_limit=aug.blur_sigma, p=p))
        photometric += [
            A.ShotNoise(scale_range=aug.dose_noise, p=p),
            A.GaussNoise(std_range=aug.gaussian_noise, p=p),
            A.RandomBrightnessContrast(brightness_limit=aug.brightness_contrast,
                                       contrast_limit=aug.brightness_contrast, p=p),
            A.Illumination(mode="linear", intensity_range=(0.01, max(aug.illumination, 0.01)), p=p),
        ]
    return A.Compose(geometric), A.Compose(photometric)


class Augmenter:
    """Callable ``(image, mask, seed) -> (image, mask)``, reproducible for a seed and thread-safe.

    Each thread keeps its own albumentations pipelines (they hold a random state) and reseeds them
    per call, so a ``tf.data`` map with parallel calls gives the same result for the same seeds.
    """

    def __init__(self, augmentation: Augmentation | None = None):
        self.augmentation = augmentation or Augmentation()
        self._local = threading.local()

    def _pipelines(self):
        if not hasattr(self._local, "pipelines"):
            self._local.pipelines = _compose(self.augmentation)
        return self._local.pipelines

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int):
        geometric, photometric = self._pipelines()
        seed = int(seed) % (2**32)
        geometric.set_random_seed(seed)
        photometric.set_random_seed(seed + 1)
        image = np.asarray(image, dtype=np.float32)
        out = geometric(image=image, mask=np.asarray(mask))
        image, mask = out["image"], out["mask"]
        if photometric.transforms:
            lo, hi = float(image.min()), float(image.max())
            span = hi - lo if hi > lo else 1.0
            unit = (image - lo) / span
            unit = photometric(image=unit)["image"]
            image = unit.astype(np.float32) * span + lo
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask)
