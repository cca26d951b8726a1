"""k-fold cross-validation for small labelled sets, and the ensemble of the fold models.

With a dozen labelled micrographs, one or two validation images say little. ``fit(DIR, folds=5)``
keeps the test images aside, cuts the others into ``k`` folds and trains one model per fold with
that fold as its validation set (``fold0/`` … in the run folder), sharing the time budget. Every
image outside the test split is then predicted once by the model that did not train on it: the
cross-validated per-image dice and the particle threshold are taken from these out-of-fold
predictions [1]_. The run's ``best.keras`` is the ensemble — one Keras model averaging the fold
models' probabilities — so ``predict``, ``evaluate`` and the exports use the mean of the folds.

References
----------
.. [1] Isensee, F. et al. nnU-Net: a self-configuring method for deep learning-based biomedical
   image segmentation. Nat. Methods 18, 203-211 (2021) — five-fold cross-validation and ensembling.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import TrainingConfig

__all__ = ["fold_splits", "ensemble", "fit_folds"]


def fold_splits(stems, folds: int, *, test=(), seed: int = 0) -> list[dict]:
    """``folds`` train/val splits of ``stems`` minus ``test``: the val parts are disjoint and cover them.

    Returns
    -------
    list of dict
        ``{"train": [...], "val": [...], "test": [...]}`` per fold, stems in sorted order.
    """
    test = sorted(test)
    pool = sorted(set(stems) - set(test))
    if len(pool) < folds:
        raise ValueError(f"folds={folds} needs at least {folds} images outside the test split, "
                         f"there are {len(pool)}")
    order = np.random.default_rng(seed).permutation(len(pool))
    parts = np.array_split(np.asarray(pool, dtype=object)[order], folds)
    out = []
    for part in parts:
        val = set(part.tolist())
        out.append({"train": [s for s in pool if s not in val], "val": sorted(val), "test": list(test)})
    return out


def ensemble(models, name: str = "ensemble"):
    """One Keras model whose output is the mean of ``models``' outputs (each renamed ``fold<i>``)."""
    import keras

    inputs = keras.Input((None, None, models[0].input_shape[-1]))
    for i, model in enumerate(models):
        model.name = f"fold{i}"
    outputs = keras.layers.Average(name="mean_of_folds")([m(inputs) for m in models])
    return keras.Model(inputs, outputs, name=name)


def fit_folds(dataset_dir, model=None, *, folds: int, time_limit=None, run_dir=None, overwrite=False,
              verbose: int = 1, **fit_kwargs):
    """Train one model per fold and return the ensemble's :class:`~tem_keras.training.Run`.

    Takes the arguments of :func:`~tem_keras.training.fit`; ``time_limit`` (default: the one
    ``fit`` would choose) is shared by the folds.
    """
    from ..data.datasets import discover, split_samples
    from ..data.pipeline import load_images
    from .fitting import _default_run_dir, _prepare_run_dir, _test_metrics, fit
    from .heldout import HeldOut, choose_threshold, scores
    from .plan import default_time_limit
    from ..artifacts import Run

    started = time.monotonic()
    base = TrainingConfig(time_limit=time_limit, folds=folds, seed=fit_kwargs.get("seed", 0),
                          split=fit_kwargs.get("split", (0.7, 0.1, 0.2)), epochs=fit_kwargs.get("epochs"))
    discover_kwargs = {k: fit_kwargs[k] for k in ("pairing", "images", "masks") if k in fit_kwargs}
    dataset = discover(Path(dataset_dir), **discover_kwargs)
    stems = [s.stem for s in dataset.labelled]
    train, val, test = base.split
    test_stems = (dataset.split or {}).get("test") if dataset.split else \
        split_samples(stems, (train + val, 0.0, test), seed=base.seed)["test"]
    splits = fold_splits(stems, folds, test=test_stems, seed=base.seed)
    run_dir = Path(run_dir) if run_dir else _default_run_dir(dataset_dir, model, base.seed).with_name(
        _default_run_dir(dataset_dir, model, base.seed).name + f"-{folds}fold")
    request = {**base.to_dict(), "model": model if isinstance(model, (str, dict, type(None))) else repr(model),
               **{k: v for k, v in fit_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    _prepare_run_dir(run_dir, json.loads(json.dumps(request, default=str)), resume=True, overwrite=overwrite)
    budget = base.time_limit or (None if base.epochs else default_time_limit("cpu"))

    runs, oof_probabilities, oof_masks, factor = [], [], [], 1
    for i, split in enumerate(splits):
        share = None if budget is None else (budget - (time.monotonic() - started) - 10.0) / (folds - i)
        if verbose:
            print(f"fold {i + 1}/{folds}: validation images {', '.join(split['val'])}", flush=True)
        run = fit(dataset_dir, model, time_limit=share if share is None else max(share, 1.0),
                  run_dir=run_dir / f"fold{i}", overwrite=overwrite, verbose=verbose,
                  split_override=split, **fit_kwargs)
        runs.append(run)
        from ..models.receptive_field import downsampling_factor

        factor = downsampling_factor(run.model)
        preprocessing = run.preprocessing
        images, masks, _ = load_images(dataset, split["val"], preprocessing=preprocessing)
        oof_probabilities += HeldOut(split["val"], images, masks).predict(run.model, factor)
        oof_masks += masks

    threshold = choose_threshold(oof_probabilities, oof_masks)
    threshold["source"] = f"out-of-fold predictions of {folds} folds"
    cross_validated = scores(oof_probabilities, oof_masks, threshold["threshold"])
    net = ensemble([r.model for r in runs], name=f"ensemble{folds}_{runs[0].model.name}")
    net.save(run_dir / "best.keras")
    metrics = {"threshold": threshold["threshold"],
               "cross_validation": {"per_image": cross_validated["per_image"],
                                    "pooled": cross_validated["pooled"], "n_images": len(oof_masks)}}
    if test_stems:
        images, masks, _ = load_images(dataset, test_stems, preprocessing=runs[0].preprocessing)
        probabilities = HeldOut(test_stems, images, masks).predict(net, factor)
        metrics.update(_test_metrics(probabilities, masks, threshold["threshold"], scores), stems=test_stems)
    config = dict(runs[0].config, request=request, folds={"k": folds, "splits": splits},
                  model={"name": net.name, "ensemble_of": runs[0].config["model"], "folds": folds})
    split = {"train": sorted(set(stems) - set(test_stems)), "val": [], "test": list(test_stems)}
    for name, value in (("config.json", config), ("split.json", split), ("thresholds.json", threshold),
                        ("metrics.json", metrics)):
        (run_dir / name).write_text(json.dumps(value, indent=2, default=str))
    import pandas as pd

    history = pd.concat([r.history.assign(fold=i) for i, r in enumerate(runs) if r.history is not None])
    history.to_csv(run_dir / "history.csv", index=False)
    result = Run(run_dir, net, config, history, metrics, split)
    if verbose:
        cv = cross_validated["per_image"]["dice"]
        line = f"cross-validated dice {cv['mean']:.3f} ± {cv['std']:.3f} per image over {len(oof_masks)} images"
        if "per_image" in metrics:
            line += f"; test (mean of {folds} folds) {metrics['per_image']['dice']['mean']:.3f} ± " \
                    f"{metrics['per_image']['dice']['std']:.3f}"
        print(f"{line}; threshold {threshold['threshold']:.2f}; {(time.monotonic() - started) / 60:.1f} min; "
              f"{run_dir}", flush=True)
    return result


def _unused(config: TrainingConfig) -> TrainingConfig:  # pragma: no cover - keeps replace imported
    return replace(config)
