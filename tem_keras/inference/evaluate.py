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

from ..errors import TEMInputError
from ..validation import check_bool, check_choice
from .masks import foreground_probability
from .options import PredictOptions
from .output import plot_threshold_curve
from .predict import open_model, predict_stack

__all__ = ["evaluate"]


def evaluate(model_or_run, dataset_dir, *, options: PredictOptions | None = None,
             split: str | None = None, metric: str = "f1", plot=None, progress: bool = False,
             **keywords):
    """Score a model on a labelled dataset folder, per image and overall.

    Parameters
    ----------
    model_or_run : keras.Model, Run or path
        As :func:`~tem_keras.inference.predict`.
    dataset_dir : str or Path
        ``images/`` + ``masks/`` (or the other layouts of :func:`tem_keras.data.datasets.discover`).
    options : PredictOptions, optional
        How to predict (or its fields as keywords, as :func:`~tem_keras.inference.predict`):
        ``threshold`` for the masks scored (None: the run's tuned threshold, ``thresholds.json``,
        if any, else 0.5), ``tile_size``, ``batch_size``, ``tta``, ...
    split : {None, "train", "val", "test"}
        With a run: only the images of that split of the run (``split.json``); None: all.
    metric : str
        Metric maximised by the ``best_threshold`` reported (``"f1"`` by default).
    plot : str or Path, optional
        Write the threshold curve (precision, recall, F1 against threshold) there.

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
    A trained run is scored on its test images with ``evaluate("runs/unet_seed0",
    "data/particles", split="test")``; here an untrained network on two synthetic images:

    >>> from tem_keras.data.synthetic import make_dataset
    >>> from tem_keras.models import unet
    >>> folder = make_dataset("data", n_images=2, size=64, seed=0, progress=False)
    >>> per_image, overall = evaluate(unet(depth=2, base_filters=4), folder, threshold=0.5)
    >>> len(per_image), overall["n_images"], overall["threshold"], 0 <= overall["best_threshold"] <= 1
    (2, 2, 0.5, True)
    """
    import pandas as pd

    from ..analysis.metrics import mean_and_std
    from ..data.datasets import discover

    options = PredictOptions.build(options, **keywords)
    column = {"f1": "f1", "dice": "f1", "iou": "iou"}.get(metric)
    if column is None:
        raise ValueError(f"metric must be 'f1', 'dice' or 'iou', got {metric!r}")
    check_choice("split", split, ("train", "val", "test"), optional=True)
    check_bool("progress", progress)
    bundle = open_model(model_or_run)
    ds = discover(dataset_dir)
    samples = _samples(ds, bundle, split, dataset_dir)
    thresholds = np.linspace(0.0, 1.0, 101)
    rows, curve = [], None
    results = predict_stack(bundle, [s.image for s in samples], options=options,
                            return_probabilities=True, progress=progress)
    for sample, result in zip(samples, results):
        row, counts = _score(sample, result, ds.num_classes, thresholds)
        rows.append(row)
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


def _samples(ds, bundle, split, dataset_dir) -> list:
    """The labelled samples of ``ds`` to score: those of the run's ``split`` (all for None)."""
    samples = list(ds.labelled)
    if split is not None:
        if bundle.run is None or split not in (bundle.run.split or {}):
            raise TEMInputError(f"split={split!r} needs a run whose split.json lists it", dataset_dir)
        wanted = set(bundle.run.split[split])
        samples = [s for s in samples if s.stem in wanted]
    if not samples:
        raise TEMInputError("no labelled images (image + mask pairs) to evaluate", dataset_dir)
    return samples


def _score(sample, result, num_classes: int, thresholds) -> tuple:
    """One image's row of scores and its pixel counts (tp, fp, fn) at each threshold."""
    from ..analysis.metrics import segmentation_scores, threshold_curve
    from ..data.datasets import read_mask

    n_classes = max(2, int(result.probabilities.shape[-1]), num_classes)
    truth = read_mask(sample.mask, range(n_classes))
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
    row = {"image": sample.stem, "threshold": result.threshold,
           **segmentation_scores(result.mask > 0, t, probabilities=fg)}
    return row, threshold_curve(fg, t, thresholds)[["tp", "fp", "fn"]]


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
