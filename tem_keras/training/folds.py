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

from ..artifacts import Run
from .config import TrainingConfig
from .heldout import HeldOut, choose_threshold, scores, test_metrics
from .plan import default_time_limit
from .rundir import default_run_dir, prepare_run_dir
from .trainer import train

__all__ = ["fold_splits", "ensemble", "fit_folds"]

#: seconds kept for the ensemble, the out-of-fold threshold and the test images
_RESERVE_S = 15.0


def fold_splits(stems, folds: int, *, test=(), seed: int = 0) -> list[dict]:
    """``folds`` train/val splits of ``stems`` minus ``test``: the val parts are disjoint and cover them.

    Returns
    -------
    list of dict
        ``{"train": [...], "val": [...], "test": [...]}`` per fold, stems in sorted order.
    """
    test = sorted(test)
    pool = sorted(set(stems) - set(test))
    if len(pool) < max(folds, 2):
        raise ValueError(f"folds={folds} needs at least {max(folds, 2)} images outside the test split, "
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


def _test_stems(dataset, config: TrainingConfig) -> list:
    from ..data.datasets import split_samples

    if dataset.split:
        return list(dataset.split.get("test", []))
    train, val, test = config.split
    if not test:
        return []
    return split_samples([s.stem for s in dataset.labelled], (train + val, 0.0, test), seed=config.seed)["test"]


def fit_folds(dataset_dir, config: TrainingConfig, *, run_dir=None, overwrite: bool = False,
              discover_kwargs=None, verbose: int = 1, started: float | None = None, **train_kwargs) -> Run:
    """Train one model per fold of ``config.folds`` and return the ensemble's run.

    Called by :func:`~tem_keras.training.fit` with ``folds=k``; ``train_kwargs`` go to
    :func:`~tem_keras.training.trainer.train` for each fold. The time limit (``fit``'s default
    when unset and no epochs are given) is shared by the folds.
    """
    from ..data.datasets import discover
    from ..data.pipeline import load_images
    from ..models.receptive_fields import downsampling_factor

    started = time.monotonic() if started is None else started
    discover_kwargs = discover_kwargs or {}
    dataset = discover(Path(dataset_dir), **discover_kwargs)
    test = _test_stems(dataset, config)
    splits = fold_splits([s.stem for s in dataset.labelled], config.folds, test=test, seed=config.seed)
    run_dir = Path(run_dir) if run_dir else default_run_dir(dataset_dir, config.model, config.seed,
                                                            f"-{config.folds}fold")
    request = config.to_dict()
    if (run_dir / "config.json").is_file() or not any((run_dir / f"fold{i}").is_dir() for i in range(config.folds)):
        prepare_run_dir(run_dir, request, resume=False, overwrite=overwrite,  # a fresh k-fold run
                        entries=[f"fold{i}" for i in range(config.folds)])
    budget = config.time_limit or (None if config.epochs else default_time_limit("cpu", len(dataset.labelled) - len(test)))

    runs, oof_probabilities, oof_masks = [], [], []
    for i, split in enumerate(splits):
        share = None
        if budget is not None:
            share = max(1.0, (budget - (time.monotonic() - started) - _RESERVE_S) / (config.folds - i))
        if verbose:
            print(f"fold {i + 1}/{config.folds}: validation images {', '.join(split['val'])}", flush=True)
        fold_dir = run_dir / f"fold{i}"
        if (fold_dir / "metrics.json").is_file():  # finished before an interruption: kept
            run = Run.load(fold_dir)
        else:
            run = train(dataset_dir, replace(config, folds=None, time_limit=share), run_dir=fold_dir,
                        overwrite=overwrite, discover_kwargs=discover_kwargs, verbose=verbose,
                        split=dict(split, test=[]),
                        **train_kwargs)
        runs.append(run)
        images, masks, _ = load_images(dataset, split["val"], preprocessing=run.preprocessing)
        oof_probabilities += HeldOut(split["val"], images, masks).predict(run.model, downsampling_factor(run.model))
        oof_masks += masks

    threshold = choose_threshold(oof_probabilities, oof_masks)
    threshold["source"] = f"out-of-fold predictions of {config.folds} folds: {threshold['source']}"
    cross_validated = scores(oof_probabilities, oof_masks, threshold["threshold"])
    net = ensemble([r.model for r in runs], name=f"ensemble{config.folds}_{runs[0].model.name}")
    net.save(run_dir / "best.keras")
    metrics = {"threshold": threshold["threshold"],
               "cross_validation": {"per_image": cross_validated["per_image"],
                                    "pooled": cross_validated["pooled"], "n_images": len(oof_masks)}}
    if test:
        images, masks, _ = load_images(dataset, test, preprocessing=runs[0].preprocessing)
        probabilities = HeldOut(test, images, masks).predict(net, downsampling_factor(runs[0].model))
        metrics.update(test_metrics(probabilities, masks, threshold["threshold"]), stems=list(test))
    config_json = dict(runs[0].config, request=request, folds={"k": config.folds, "splits": splits},
                       model={"name": net.name, "ensemble_of": runs[0].config["model"], "folds": config.folds})
    split = {"train": sorted(s for f in splits for s in f["val"]), "val": [], "test": list(test)}
    import pandas as pd

    history = pd.concat([r.history.assign(fold=i) for i, r in enumerate(runs) if r.history is not None])
    history.to_csv(run_dir / "history.csv", index=False)
    for name, value in (("config.json", config_json), ("split.json", split), ("thresholds.json", threshold),
                        ("metrics.json", metrics)):
        (run_dir / name).write_text(json.dumps(value, indent=2, default=str))
    if verbose:
        cv = cross_validated["per_image"]["dice"]
        line = f"cross-validated dice {cv['mean']:.3f} ± {cv['std']:.3f} per image over {len(oof_masks)} images"
        if "per_image" in metrics:
            dice = metrics["per_image"]["dice"]
            line += f"; test (mean of {config.folds} folds) {dice['mean']:.3f} ± {dice['std']:.3f}"
        print(f"{line}; threshold {threshold['threshold']:.2f}; {(time.monotonic() - started) / 60:.1f} min "
              f"in all; {run_dir}", flush=True)
    return Run(run_dir, net, config_json, history, metrics, split)
