"""Masks in, numbers out: particle labelling and watershed splitting, region properties, particle
tables, counting and tracking, segmentation metrics, and the classical baselines.

NumPy, SciPy and Numba only: nothing here imports TensorFlow, so tables and scores can be made from
masks on any machine.

- :mod:`~tem_keras.analysis.particles` — :func:`measure_particles`, :func:`count_particles`,
  :func:`size_distribution`, :func:`track_particles`;
- :mod:`~tem_keras.analysis.regions`, :mod:`~tem_keras.analysis.watershed` — connected components,
  their properties, and touching particles split by the watershed of the distance transform;
- :mod:`~tem_keras.analysis.metrics` — dice, IoU, precision/recall/F1, threshold curves, per-image
  scores;
- :mod:`~tem_keras.analysis.baselines` — Otsu, Horwath et al.'s pseudo-labels, the Fourier (Bragg)
  filter of Sytwu et al.; :mod:`~tem_keras.analysis.reconstruction` — the grey-level
  reconstruction they use.
"""

from .baselines import fourier_filter, otsu_segment, otsu_split, pseudo_labels, radial_power_spectrum
from .metrics import (best_threshold, dice, iou, mean_and_std, per_image_scores, precision_recall_f1,
                      segmentation_scores, threshold_curve, otsu_threshold)
from .particles import (MEASUREMENT_COLUMNS, count_particles, label_particles, measure_particles,
                        particle_mask, size_distribution, track_particles)

__all__ = [
    "MEASUREMENT_COLUMNS", "best_threshold", "count_particles", "dice", "fourier_filter", "iou",
    "label_particles", "mean_and_std", "measure_particles", "otsu_segment", "otsu_split",
    "otsu_threshold", "particle_mask", "per_image_scores", "precision_recall_f1", "pseudo_labels",
    "radial_power_spectrum", "segmentation_scores", "size_distribution", "threshold_curve",
    "track_particles",
]
