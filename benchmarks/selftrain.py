"""Does noisy-student self-training beat its teacher? Zero masks, scored on masks training never sees.

For each set the training images are copied without their masks into a scratch folder and
``fit(DIR, labels="auto")`` trains on them twice with the same budget (time, or optimiser steps
with ``--epochs``): without
self-training (``self_training=0``) and with two rounds (``self_training=2``; the weights of each
round are in ``rounds/``). Every model, the labeller's pseudo-labels and Gaussian σ = 1 + Otsu
with the better polarity (an oracle choice, per set) are scored by per-image dice on the masked
test images at threshold 0.5.

Sets: ``tem-sinter-tiles`` (``../shared/data/real-dev``; the 20 ``train_*`` tiles train, the 20
``test_*`` tiles score; tiles are crops of frames of one experiment, so train and test are not
independent micrographs) and ``insitu_tiny`` (``benchmarks/accuracy_sets.py``: 16 synthetic
in-situ frames 369² with 5–8 px particles; the first 10 train, the last 6 score).

Usage::

    python benchmarks/selftrain.py --epochs 10 --steps 10 --patch-size 128 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_sets import make_set  # noqa: E402


def _pairs(folder: Path):
    masks = {p.stem: p for p in (folder / "masks").iterdir()}
    return {p.stem: (p, masks[p.stem]) for p in sorted((folder / "images").iterdir()) if p.stem in masks}


def split_set(name: str, work: Path):
    """``(unlabelled training folder, [(image path, mask path)] of the test images)``."""
    folder = make_set(name, work, log=print)
    if folder is None:
        return None, None
    pairs = _pairs(folder)
    if name == "tem-sinter-tiles":
        train = [s for s in pairs if s.startswith("train_")]
        test = [s for s in pairs if s.startswith("test_")]
    else:
        stems = sorted(pairs)
        train, test = stems[:10], stems[10:]
    unlabelled = work / f"{name}-unlabelled"
    shutil.rmtree(unlabelled, ignore_errors=True)
    (unlabelled / "images").mkdir(parents=True)
    for s in train:
        image = pairs[s][0]
        shutil.copyfile(os.path.realpath(image), unlabelled / "images" / image.name)
    return unlabelled, [pairs[s] for s in test]


def _dice(pred, truth) -> float:
    from tem_keras.analysis.metrics import dice

    return float(dice(np.asarray(pred) > 0, np.asarray(truth) > 0))


def score_baselines(test) -> dict:
    """Per-image dice of the labeller and of σ = 1 Otsu with the better polarity."""
    from tem_keras.analysis.baselines import otsu_segment
    from tem_keras.autolabel import auto_labels
    from tem_keras.data.datasets import read_mask
    from tem_keras.io import read_image

    images = [read_image(i).data for i, _ in test]
    truths = [read_mask(m) for _, m in test]
    labeller = [_dice(auto_labels(im, references=False)[0], t) for im, t in zip(images, truths)]
    otsu = {p: [_dice(otsu_segment(im, sigma=1.0, particles=p), t) for im, t in zip(images, truths)]
            for p in ("dark", "bright")}
    better = max(otsu, key=lambda p: np.mean(otsu[p]))
    return {"pseudo_labels": labeller, f"otsu_sigma1_{better}": otsu[better]}


def score_model(model_path: Path, config: dict, test) -> list:
    """Per-image dice of a saved model at threshold 0.5, images preprocessed as in training."""
    import keras

    from tem_keras.data.datasets import read_mask
    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.io import read_image
    from tem_keras.models.receptive_fields import downsampling_factor
    from tem_keras.training.heldout import predict_whole

    model = keras.saving.load_model(model_path, compile=False)
    factor = downsampling_factor(model)
    pre = Preprocessing.from_dict(config["preprocessing"])
    out = []
    for image, mask in test:
        p = predict_whole(model, pre(read_image(image).data), factor)[..., 1]
        out.append(_dice(p >= 0.5, read_mask(mask)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["insitu_tiny", "tem-sinter-tiles"])
    parser.add_argument("--time-limit", type=float, default=210.0, help="seconds per fit")
    parser.add_argument("--epochs", type=int, default=None,
                        help="a budget in optimiser steps instead of time: epochs of --steps steps "
                             "(a loaded machine then changes the wall time, not the result)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (with --epochs)")
    parser.add_argument("--patch-size", type=int, default=None, help="default: planned")
    parser.add_argument("--batch-size", type=int, default=None, help="default: planned")
    parser.add_argument("--rounds", type=int, nargs="+", default=[0, 2],
                        help="the fits: 0 (no self-training) and/or a number of rounds")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tem_keras_selftrain"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selftrain.json"))
    args = parser.parse_args(argv)
    from tem_keras.training import fit

    results = {"time_limit_s": None if args.epochs else args.time_limit, "epochs": args.epochs,
               "steps_per_epoch": args.steps, "patch_size": args.patch_size, "batch_size": args.batch_size, "load_average_at_start": os.getloadavg(), "sets": {}}
    for name in args.sets:
        unlabelled, test = split_set(name, args.work)
        if unlabelled is None:
            print(f"[{name}] source absent: skipped")
            continue
        rows = score_baselines(test)
        for rounds in args.rounds:
            start = time.monotonic()
            budget = (dict(epochs=args.epochs, steps_per_epoch=args.steps) if args.epochs
                      else dict(time_limit=args.time_limit))
            run = fit(unlabelled, labels="auto", self_training=rounds, **budget,
                      split=(0.85, 0.15, 0.0), patch_size=args.patch_size, batch_size=args.batch_size,
                      run_dir=args.work / f"{name}-run{rounds}", overwrite=True,
                      mixed_precision="float32", verbose=1)
            wall = time.monotonic() - start
            if rounds == 0:
                rows["fit_no_self_training"] = score_model(run.path / "best.keras", run.config, test)
            else:
                for k in range(rounds + 1):
                    rows[f"round{k}"] = score_model(run.path / "rounds" / f"round{k}.keras", run.config, test)
                results["sets"].setdefault(name, {})["selftrain"] = json.loads(
                    (run.path / "selftrain.json").read_text())
            results["sets"].setdefault(name, {})[f"fit{rounds}_wall_s"] = round(wall, 1)
        summary = {k: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)}
                   for k, v in rows.items()}
        results["sets"][name].update({"n_test": len(test), "per_image_dice": summary,
                                      "images": {k: [round(x, 4) for x in v] for k, v in rows.items()}})
        print(f"[{name}] per-image dice on {len(test)} masked test images:")
        for k, v in summary.items():
            print(f"    {k:28s} {v['mean']:.3f} ± {v['std']:.3f}")
    results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
