"""Scoring a model on a labelled dataset folder: :func:`evaluate`.

Scores follow Horwath et al. (2020): precision, recall and F1 (= dice) of the particle pixels
against threshold, pooled over all images; the threshold that maximises F1 (or IoU) on a
labelled set (``best_threshold``) is reported, to be stored with
:func:`tem_keras.artifacts.write_threshold` and used by :func:`tem_keras.predict` on new images.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, npj Comput. Mater. 6, 108 (2020).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import load
from ..errors import TEMInputError
from .masks import foreground_probability
from .output import plot_threshold_curve
from .predict import predict_stack
from ..validation import check_choice, check_predict_arguments

__all__ = ["evaluate"]


def evaluate(model_or_run, dataset_dir, *, threshold=None, split: str | None = None,
             metric: str = "f1", tile_size: int | None = None, overlap="auto", batch_size: int = 4,
             mixed_precision: str = "float32", plot=None, progress: bool = False, tta: bool = False):
    """Score a model on a labelled dataset folder, per image and overall.

    Parameters
    ----------
    model_or_run : keras.Model, Run or path
        As :func:`~tem_keras.inference.predict`.
    dataset_dir : str or Path
        ``images/`` + ``masks/`` (or the other layouts of :func:`tem_keras.data.datasets.discover`).
    threshold : None, float or "otsu"
        Threshold of the particle probability for the masks scored (see :func:`predict`); None:
        the run's tuned threshold (``thresholds.json``) if any, else 0.5.
    split : {None, "train", "val", "test"}
        With a run: only the images of that split of the run (``split.json``); None: all.
    metric : str
        Metric maximised by the ``best_threshold`` reported (``"f1"`` by default).
    plot : str or Path, optional
        Write the threshold curve (precision, recall, F1 against threshold) there.
    tta : bool
        Test-time augmentation (see :func:`~tem_keras.inference.predict`).

    Returns
    -------
    per_image : pandas.DataFrame
        One row per image: ``image`` and the scores of
        :func:`tem_keras.analysis.metrics.segmentation_scores` (plus ``threshold``).
    overall : dict
        ``n_images``; ``threshold`` used; ``per_image``: the headline, ``{score: {"mean",
        "std"}}`` of dice, IoU, precision and recall over the images (each judged on its own);
        ``scores`` over all pixels pooled (sums of the per-image counts); ``mean`` of every
        per-image score; ``best_threshold`` for ``metric``
        on the pooled pixels (thresholds 0, 0.01, ..., 1) and the scores there (``at_best``);
        ``curve``, the pooled threshold curve (DataFrame: threshold, tp, fp, fn, precision,
        recall, f1, iou). Binary (particle vs background) scores; for multi-class models the
        particle probability is ``1 - p(background)``. Memory stays that of one image.

    Examples
    --------
    >>> per_image, overall = evaluate("runs/unet_seed0", "data/particles", split="test")  # doctest: +SKIP
    >>> overall["best_threshold"], overall["at_best"]["f1"]                               # doctest: +SKIP
    (0.46, 0.912)
    """
    import pandas as pd

    from ..data.datasets import discover, read_mask
    from ..analysis.metrics import mean_and_std, segmentation_scores, threshold_curve

    thresholds = np.linspace(0.0, 1.0, 101)
    column = {"f1": "f1", "dice": "f1", "iou": "iou"}.get(metric)
    if column is None:
        raise ValueError(f"metric must be 'f1', 'dice' or 'iou', got {metric!r}")
    check_predict_arguments(tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            mixed_precision=mixed_precision, progress=progress)
    check_choice("split", split, ("train", "val", "test"), optional=True)
    bundle = load(model_or_run)
    ds = discover(dataset_dir)
    samples = list(ds.labelled)
    if split is not None:
        if bundle.run is None or split not in (bundle.run.split or {}):
            raise TEMInputError(f"split={split!r} needs a run whose split.json lists it", dataset_dir)
        wanted = set(bundle.run.split[split])
        samples = [s for s in samples if s.stem in wanted]
    if not samples:
        raise TEMInputError("no labelled images (image + mask pairs) to evaluate", dataset_dir)
    rows, curve = [], None
    results = predict_stack(bundle, [s.image for s in samples], threshold=threshold,
                            tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            return_probabilities=True, mixed_precision=mixed_precision,
                            progress=progress, tta=tta)
    for sample, result in zip(samples, results):
        truth = read_mask(sample.mask)
        n_classes = max(2, int(result.probabilities.shape[-1]), ds.num_classes)
        if truth.max(initial=0) >= n_classes:
            raise TEMInputError(f"mask holds class {int(truth.max())} but the model and data set "
                                f"have {n_classes} classes (0..{n_classes - 1}); list the classes "
                                "in dataset.json", sample.mask)
        if truth.shape != result.mask.shape:
            raise TEMInputError(f"mask is {truth.shape[0]}×{truth.shape[1]} px but its image "
                                f"{Path(sample.image).name} is {result.mask.shape[0]}×"
                                f"{result.mask.shape[1]} px", sample.mask)
        fg = foreground_probability(result.probabilities)
        t = truth > 0
        rows.append({"image": sample.stem, "threshold": result.threshold,
                     **segmentation_scores(result.mask > 0, t, probabilities=fg)})
        counts = threshold_curve(fg, t, thresholds)[["tp", "fp", "fn"]]
        curve = counts if curve is None else curve + counts
    per_image = pd.DataFrame(rows)
    # pooled over all pixels: sums of the per-image counts (memory stays one image)
    curve.insert(0, "threshold", thresholds)
    for key, value in _scores_from_counts(curve["tp"], curve["fp"], curve["fn"]).items():
        curve[key] = value
    best = int(np.argmax(curve[column].to_numpy()))
    sums = {k: int(per_image[k].sum()) for k in ("tp", "fp", "fn", "tn")}
    pooled = {k: float(v) for k, v in _scores_from_counts(*(np.array([sums[k]]) for k in ("tp", "fp", "fn"))).items()}
    numeric = per_image.drop(columns=["image"]).select_dtypes("number")
    overall = {"n_images": len(rows), "threshold": rows[0]["threshold"] if len(
                   {r["threshold"] for r in rows}) == 1 else "per image",
               "per_image": mean_and_std(rows),
               "scores": {**pooled, **sums},
               "mean": {k: float(v) for k, v in numeric.mean().items() if k not in sums},
               "metric": metric, "best_threshold": float(curve["threshold"].iloc[best]),
               "at_best": {k: float(curve[k].iloc[best]) for k in ("precision", "recall", "f1", "iou")},
               "curve": curve}
    if plot is not None:
        plot_threshold_curve(curve, plot, best=overall["best_threshold"])
    return per_image, overall


def _scores_from_counts(tp, fp, fn) -> dict:
    """Precision, recall, F1 (= dice) and IoU from pixel counts, with the conventions of
    :mod:`tem_keras.analysis.metrics` for empty masks."""
    from ..analysis.metrics import scores_from_counts

    precision, recall, f1, iou = scores_from_counts(tp, fp, fn)
    out = {"precision": precision, "recall": recall, "f1": f1, "iou": iou}
    if np.ndim(precision) and np.size(precision) == 1:
        out = {k: np.asarray(v).ravel()[0] for k, v in out.items()}
        out["dice"] = out["f1"]
    return out
