"""Per-image dice of the automatic labeller against Otsu with oracle polarity and Horwath et al.

Issue 26, item 1: a classical labeller at least as good as Otsu with no oracle. For every image
of every set, at full resolution, against its mask:

* ``auto`` -- :func:`tem_keras.autolabel.auto_labels`, nothing given (polarity, particle size,
  smoothing, phases all estimated from the image);
* ``otsu oracle`` -- Gaussian sigma = 1 + Otsu with the better of dark / bright for that image
  (the polarity read from the mask). On sets whose particle class is the third phase
  (pt-alumina: Pt, class 2) the two-level Otsu of ``accuracy.py`` (sigma = 1, Otsu, Otsu again
  on the pixels above) with the known bright polarity, since a 2-class Otsu cannot isolate it;
* ``horwath`` -- :func:`tem_keras.analysis.baselines.pseudo_labels` (defaults) with the polarity known
  from the imaging mode (bright-field dark, HAADF and SEM bright).

Sets: the real development sets under ``../shared/data/real-dev`` (all images, both splits;
skipped when absent) and synthetic sets of :mod:`accuracy_sets` (fixed seeds): bright-field
faceted ~24 px, large ~70 px, in-situ frames 369² with 5-8 px particles, HAADF ~16 px, a mixed
set (HAADF and bright-field, 6-50 px, varying illumination) and an uncalibrated collection
(bright-field / HAADF / SEM-like, 5-200 px, 500-1100 px images).

Printed: per set the mean ± std of each column, how many images the labeller loses to the oracle
by more than 0.01 and its worst loss, the median confidence and the time per megapixel; then the
Spearman correlation of the labeller's confidence with its dice over all images. Written to
``benchmarks/results/labeller.json`` (``--out``).

Run::

    python benchmarks/labeller.py                  # every set (about 3 minutes on one core)
    python benchmarks/labeller.py --quick          # 4 images per set
    python benchmarks/labeller.py --sets real      # one part; --update keeps the others
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

import accuracy_sets  # noqa: E402
from common import RESULTS  # noqa: E402

REAL = ("tem-sinter-tiles", "tem-soot-aggregates", "pt-alumina-haadf-tomo")
#: synthetic sets: name (of accuracy_sets, but "haadf": :data:`HAADF`) -> (what, images)
SYNTHETIC = {"bf_tetrahedra": ("bright-field ~24 px", 12),
             "bf_prisms": ("large ~70 px", 12),
             "insitu_tiny": ("369², 5-8 px", 16),
             "haadf": ("512², ~16 px", 8),
             "mixed": ("HAADF / bright-field, 6-50 px", 16),
             "mixed_collection": ("BF / HAADF / SEM-like, 5-200 px", 18)}
GROUPS = {"real": REAL, "synthetic": tuple(SYNTHETIC)}
HAADF = dict(size=512, mode="haadf", particle_diameter_nm=(8.0, 2.0), coverage=0.15,
             touching_fraction=0.15, contrast=1.0, dose=40, illumination_gradient=0.15,
             background_texture=0.05)


def dice(pred, truth) -> float:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(pred & truth) / total


def two_level_otsu(image, sigma: float = 1.0) -> np.ndarray:
    """As ``accuracy.py``: Gaussian, Otsu, Otsu again on the pixels above the first threshold."""
    from skimage.filters import gaussian, threshold_otsu

    smoothed = gaussian(np.asarray(image, np.float32), sigma=sigma, preserve_range=True)
    upper = smoothed[smoothed > threshold_otsu(smoothed)]
    return smoothed > threshold_otsu(upper) if upper.size > 1 else np.zeros(smoothed.shape, bool)


# --------------------------------------------------------------------------------------------
# sets: lists of (stem, image, truth, mode)
# --------------------------------------------------------------------------------------------

def real_set(name: str, limit: int | None):
    """``[(stem, image, truth, mode)]`` of a real set (all images, both splits); None if absent."""
    from tem_keras.data.datasets import read_mask

    if name == "pt-alumina-haadf-tomo":
        if not accuracy_sets.PT_ALUMINA.is_dir():
            return None
        stems, pairs = accuracy_sets.pt_alumina_sources()
        return [(s, accuracy_sets.read_gray(pairs[s][0]), read_mask(pairs[s][1], (0, 1, 2)) == 2, "haadf")
                for s in stems[:limit]]
    folder = accuracy_sets.REAL_DEV / name
    if not folder.is_dir():
        return None
    return [(p.stem, accuracy_sets.read_gray(p), read_mask(folder / "masks" / p.name) == 1,
             "bright-field") for p in sorted((folder / "images").iterdir())[:limit]]


def synthetic_set(name: str, limit: int | None):
    """``[(stem, image, truth, mode)]`` of a synthetic set, generated with fixed seeds."""
    from tem_keras.data.synthetic import make_image

    n = min(SYNTHETIC[name][1], limit or SYNTHETIC[name][1])
    items = []
    with warnings.catch_warnings():              # "not all particles placed": recipes cap them
        warnings.simplefilter("ignore")
        if name == "haadf":
            for i in range(n):
                s = make_image(seed=np.random.SeedSequence(1726, spawn_key=(i,)), **HAADF)
                items.append((f"haadf_{i:03d}", s.image, s.mask > 0, "haadf"))
        else:
            for recipe in accuracy_sets.recipes(name)[:n]:
                image, s = accuracy_sets.render(recipe)
                items.append((recipe["stem"], image, s.mask > 0, recipe["mode"]))
    return items


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------

def score_set(name: str, particle_class: int, items) -> dict:
    from tem_keras.autolabel import auto_labels
    from tem_keras.analysis.baselines import otsu_segment, pseudo_labels

    rows, seconds, megapixels = [], 0.0, 0.0
    for stem, image, truth, mode in items:
        image = np.asarray(image, np.float32)
        t0 = time.perf_counter()
        mask, record = auto_labels(image)
        seconds += time.perf_counter() - t0
        megapixels += image.size / 1e6
        if particle_class == 2:
            oracle, oracle_rule = dice(two_level_otsu(image), truth), "two-level Otsu"
        else:
            oracle = max(dice(otsu_segment(image, sigma=1.0, particles=p), truth)
                         for p in ("dark", "bright"))
            oracle_rule = "Otsu oracle"
        known = "dark" if mode == "bright-field" else "bright"
        rows.append({"stem": stem, "mode": mode, "auto": dice(mask, truth), "otsu_oracle": oracle,
                     "horwath": dice(pseudo_labels(image, particles=known), truth),
                     "confidence": record.confidence, "polarity": record.polarity,
                     "polarity_right": record.polarity == known, "phases": record.phases,
                     "scale_px": record.scale_px, "sigma_px": record.sigma_px,
                     "pipeline": record.pipeline})
    auto = np.array([r["auto"] for r in rows])
    base = np.array([r["otsu_oracle"] for r in rows])
    summary = {"name": name, "n_images": len(rows), "baseline": oracle_rule,
               "seconds_per_megapixel": seconds / max(megapixels, 1e-9)}
    for key in ("auto", "otsu_oracle", "horwath"):
        v = np.array([r[key] for r in rows])
        summary[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    summary.update(
        auto_minus_oracle=float((auto - base).mean()),
        images_worse_than_oracle=int(np.sum(auto < base - 0.01)),
        worst_loss=float(np.min(auto - base)),
        polarity_right=int(sum(r["polarity_right"] for r in rows)),
        three_phase_images=int(sum(r["phases"] == 3 for r in rows)),
        median_confidence=float(np.median([r["confidence"] for r in rows])),
        goal_met=bool(auto.mean() >= base.mean()))
    return {"summary": summary, "images": rows}


def spearman(x, y) -> float:
    rx, ry = (np.argsort(np.argsort(v)).astype(float) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


def print_table(results: list[dict]) -> None:
    head = (f"{'set':46s} {'n':>3s} {'auto':>13s} {'Otsu oracle':>13s} {'Horwath':>13s} "
            f"{'worse':>6s} {'worst':>6s} {'pol.':>6s} {'conf.':>5s} {'s/Mpx':>5s}")
    print(head)
    print("-" * len(head))
    for r in results:
        s = r["summary"]
        cell = (lambda k: f"{s[k]['mean']:.3f}±{s[k]['std']:.3f}")
        mark = "²" if s["baseline"] == "two-level Otsu" else " "
        print(f"{s['name'][:46]:46s} {s['n_images']:3d} {cell('auto'):>13s} {cell('otsu_oracle') + mark:>13s} "
              f"{cell('horwath'):>13s} {s['images_worse_than_oracle']:>6d} {s['worst_loss']:+6.3f} "
              f"{s['polarity_right']:>3d}/{s['n_images']:<2d} {s['median_confidence']:5.2f} "
              f"{s['seconds_per_megapixel']:5.2f}")
    print("² two-level Otsu (the particle class is the third phase); 'worse': images where auto "
          "loses more than 0.01 dice to the oracle; 'pol.': polarity right")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 images per set")
    parser.add_argument("--sets", nargs="+", default=["real", "synthetic"],
                        help=f"sets or groups (real, synthetic): {', '.join((*REAL, *SYNTHETIC))}")
    parser.add_argument("--update", action="store_true",
                        help="keep the other sets already in the output file (run sets in parts)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default benchmarks/results/labeller.json; "
                             "labeller_quick.json with --quick)")
    args = parser.parse_args(argv)
    limit = 4 if args.quick else None
    out = args.out or RESULTS / ("labeller_quick.json" if args.quick else "labeller.json")
    names = []
    for item in args.sets:
        for name in GROUPS.get(item, (item,)):
            if name not in (*REAL, *SYNTHETIC):
                parser.error(f"unknown set {name!r}")
            if name not in names:
                names.append(name)
    t0 = time.time()
    results = []
    for name in names:
        items = real_set(name, limit) if name in REAL else synthetic_set(name, limit)
        if items is None:
            print(f"[{name}] skipped: not in {accuracy_sets.REAL_DEV}")
            continue
        label = name if name in REAL else f"{name} ({SYNTHETIC[name][0]})"
        results.append(score_set(label, 2 if name == "pt-alumina-haadf-tomo" else 1, items))
        results[-1]["summary"]["set"] = name
        s = results[-1]["summary"]
        print(f"[{name}] auto {s['auto']['mean']:.3f}, {s['baseline']} {s['otsu_oracle']['mean']:.3f}, "
              f"Horwath {s['horwath']['mean']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    if args.update and out.is_file():
        kept = [r for r in json.loads(out.read_text())["sets"] if r["summary"]["set"] not in names]
        order = {n: i for i, n in enumerate((*REAL, *SYNTHETIC))}
        results = sorted(kept + results, key=lambda r: order.get(r["summary"]["set"], 99))
    print()
    print_table(results)
    rows = [r for res in results for r in res["images"]]
    rho = spearman([r["confidence"] for r in rows], [r["auto"] for r in rows])
    print(f"\nconfidence vs dice over {len(rows)} images: Spearman {rho:.2f}")
    met = [r["summary"]["name"] for r in results if r["summary"]["goal_met"]]
    print(f"goal (mean auto >= mean oracle) met on {len(met)} of {len(results)} sets")
    import tem_keras

    record = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "tem_keras": tem_keras.__version__,
              "quick": args.quick, "wall_s": round(time.time() - t0, 1),
              "load_average": list(os.getloadavg()), "confidence_dice_spearman": rho,
              "sets": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
