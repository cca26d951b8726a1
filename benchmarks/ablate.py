"""Ablations of fit's defaults: one setting changed at a time, the same steps, the same test images.

Each variant trains with ``tem_keras.fit`` for a fixed number of optimiser steps (``--epochs`` ×
``--steps``, not a time budget, so a loaded machine changes the wall time but not the result) and
is scored by per-image dice of the particle class on the test split of the data set, predicted
whole with ``tem_keras.predict``. Otsu (σ = 1, oracle polarity per image) is printed beside.

::

    python benchmarks/ablate.py DATA_DIR --variants default no_photometric no_affine
    python benchmarks/ablate.py /tmp/insitu_clean --make-insitu-clean --epochs 12 --steps 12 \
        --variants default dihedral_only no_photometric unet16 float32 bfloat16
    python benchmarks/ablate.py DATA_DIR --epochs 12 --steps 10 --out results/ablate_insitu.json

A variant is a name in :data:`VARIANTS`: the keyword arguments it gives to ``fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402


def _augmentation(**changes):
    from tem_keras.data.augment import Augmentation

    return Augmentation(**changes)


def _preprocessing(**changes):
    from tem_keras.data.preprocess import Preprocessing

    return Preprocessing(**changes)


#: variant name → (keyword arguments of fit, as a function so imports stay lazy)
VARIANTS = {
    "default": lambda: {},
    "no_augment": lambda: {"augment": False},
    "dihedral_only": lambda: {"augment": _augmentation(rotate_degrees=0.0, p=0.0)},
    "no_photometric": lambda: {"augment": _augmentation(p=0.0)},
    "no_affine": lambda: {"augment": _augmentation(rotate_degrees=0.0)},
    "no_blur": lambda: {"augment": _augmentation(blur_sigma=(0.0, 0.0))},
    "no_outliers": lambda: {"preprocessing": _preprocessing(remove_outliers=False)},
    "percentile_norm": lambda: {"preprocessing": _preprocessing(normalization="percentile",
                                                                percentiles=(0.5, 99.5))},
    "random_init": lambda: {"pretrained": None},
    "patch_128": lambda: {"patch_size": 128, "batch_size": 32},
    "patch_512": lambda: {"patch_size": 512, "batch_size": 2},
    "cross_entropy": lambda: {"loss": "cross_entropy"},
    "dice": lambda: {"loss": "dice"},
    "unet16": lambda: {"model": {"name": "unet", "depth": 4, "base_filters": 16}},
    "float32": lambda: {"mixed_precision": "float32"},
    "bfloat16": lambda: {"mixed_precision": "bfloat16"},
}


def make_insitu_clean(folder: Path) -> Path:
    """Ten clean in-situ frames 369² with ~750 particles of 5–8 px each, where Otsu (σ = 1) reaches
    0.93 dice as on real frames of that kind (``insitu_tiny`` of ``accuracy_sets.py`` is noisier:
    Otsu 0.71). Seeds 5000–5009."""
    from tem_keras.data.synthetic import make_image
    from tem_keras.io import write_image, write_mask

    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(10):
        sample = make_image(369, "bright-field", seed=5000 + i, particle_diameter_nm=(3.2, 0.5), coverage=0.2,
                            touching_fraction=0.1, ellipticity=0.2, irregularity=0.03, low_contrast_fraction=0.05,
                            contrast=0.7, dose=400, blur_sigma_px=0.8, illumination_gradient=0.1,
                            background_texture=0.03)
        write_image(folder / "images" / f"f{i:02d}.tif", sample.image, sample.pixel_size_nm, overwrite=True)
        write_mask(folder / "masks" / f"f{i:02d}.png", sample.mask, overwrite=True)
    return folder


def otsu_scores(data_dir: Path, stems) -> list[float]:
    """Per-image dice of Otsu σ = 1 with the better polarity of each image."""
    import tem_keras
    from tem_keras.analysis.baselines import otsu_segment
    from tem_keras.data.datasets import discover, read_mask
    from tem_keras.analysis.metrics import segmentation_scores

    samples = {s.stem: s for s in discover(data_dir)}
    out = []
    for stem in stems:
        image = np.asarray(tem_keras.read_image(samples[stem].image).data, np.float32)
        truth = read_mask(samples[stem].mask) == 1
        out.append(max(float(segmentation_scores(otsu_segment(image, sigma=1.0, particles=p),
                                                 truth)["dice"]) for p in ("dark", "bright")))
    return out


def run_variant(name: str, data_dir: Path, work: Path, epochs: int, steps: int, seed: int) -> dict:
    import tem_keras
    from tem_keras.data.datasets import discover, read_mask
    from tem_keras.analysis.metrics import segmentation_scores

    run_dir = work / f"{data_dir.name}-{name}-s{seed}"
    t0 = time.perf_counter()
    run = tem_keras.fit(data_dir, run_dir=run_dir, overwrite=True, epochs=epochs, steps_per_epoch=steps,
                        seed=seed, verbose=0, **VARIANTS[name]())
    wall = time.perf_counter() - t0
    samples = {s.stem: s for s in discover(data_dir)}
    stems = run.split["test"]
    preds = tem_keras.predict(str(run_dir), [str(samples[s].image) for s in stems])
    dice = [float(segmentation_scores(p.mask == 1, read_mask(samples[s].mask) == 1)["dice"])
            for p, s in zip(preds, stems)]
    history = run.history
    return {"variant": name, "seed": seed, "dice": dice, "mean": float(np.mean(dice)),
            "std": float(np.std(dice, ddof=1)) if len(dice) > 1 else 0.0, "wall_s": round(wall, 1),
            "best_val_dice": float(history["val_dice"].max()) if "val_dice" in history else None,
            "threshold": preds[0].threshold, "test_stems": stems, "plan": run.config["plan"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / ".accuracy_data" / "ablate")
    parser.add_argument("--out", type=Path, help="JSON file for the results (appended by variant)")
    parser.add_argument("--make-insitu-clean", action="store_true",
                        help="first write the clean in-situ set (make_insitu_clean) into DATA_DIR")
    args = parser.parse_args(argv)
    if args.make_insitu_clean:
        make_insitu_clean(args.data_dir)
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else []
    load = os.getloadavg()[0]
    for seed in args.seeds:
        for name in args.variants:
            r = run_variant(name, args.data_dir, args.work, args.epochs, args.steps, seed)
            r.update(data_dir=str(args.data_dir), epochs=args.epochs, steps=args.steps,
                     load_before=load, load_after=os.getloadavg()[0])
            if "otsu" not in locals():
                otsu = otsu_scores(args.data_dir, r["test_stems"])
            r["otsu_mean"] = float(np.mean(otsu))
            print(f"{args.data_dir.name:>20} {name:>16} seed {seed}: dice {r['mean']:.3f} ± {r['std']:.3f} "
                  f"(best val {r['best_val_dice'] or float('nan'):.3f}, threshold {r['threshold']}) "
                  f"Otsu {r['otsu_mean']:.3f}; {r['wall_s']:.0f} s, load {load:.2f}", flush=True)
            results.append(r)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
            load = os.getloadavg()[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
