"""Accuracy of default training against classical thresholding, on every labelled set at hand.

What is measured
----------------
For each set (synthetic imitations of four kinds of real TEM set, made by ``accuracy_sets.py`` with
fixed seeds, and the real development set ``../shared/data/real-dev`` when present):

1. The set is written (or found) in the standard layout ``DIR/images/<stem>.tif`` +
   ``DIR/masks/<stem>.png`` under a scratch folder (``--work``, default
   ``benchmarks/.accuracy_data/``, ignored by git through its own ``.gitignore``).
2. A model is trained exactly as a user would: ``tem-keras fit DIR --run-dir RUN`` with no other
   option — plus ``--time-limit T`` when ``--time-limit`` is given and ``tem-keras fit`` offers it.
   The wall time of that command is recorded, and the configuration it chose is read from the run's
   ``config.json`` (model and its arguments, patch and batch size, steps, epochs, learning rate —
   whichever keys exist) and the images per split from ``split.json``.
3. The test images of that split (stems in ``split.json["test"]``, never seen in training; for
   ``real-dev`` the 15 patches of its ``val`` folder) are segmented whole with
   ``tem_keras.predict(RUN, paths)`` (default threshold), and scored by hard dice of the particle
   class (class 1; class 2 = Pt on ``real-dev``) against the masks, **per image**; the table gives
   the mean ± sample standard deviation over the test images, the pooled dice (all test pixels
   counted together) beside it, and per-image means of IoU, precision and recall.
4. On the same test images, with the same metric, two classical baselines segment "particle vs
   rest":

   * **Otsu**: Gaussian smoothing σ = 1 px, then Otsu's threshold
     (``tem_keras.baselines.otsu_segment``, the histogram and criterion of
     ``skimage.filters.threshold_otsu``), with the polarity chosen by an oracle **per image**
     (the better of particles-dark / particles-bright against the mask). This headline is the
     strictest Otsu (on the mixed set, whose images are bright-field and HAADF, one polarity per
     set would make Otsu fail on half of the images); the JSON also gives Otsu with the one
     polarity per set that is best on average (``otsu_set_polarity``).
   * **pseudo-labels** of Horwath et al. 2020 (``tem_keras.pseudo_labels``, default
     arguments), with ``particles="dark"`` on bright-field and ``"bright"`` on HAADF images (from
     the generator's record; otherwise the polarity the Otsu oracle picked).

5. Per set it prints and writes: images per split, configuration chosen, wall time, per-image
   dice (mean ± std) of fit / Otsu / pseudo-labels, the error ratio
   ``(1 − dice_fit) / (1 − dice_otsu)`` with whether it reaches the goal (≤ 0.5, Otsu's error
   halved) and the floor (< 1, Otsu beaten), and the machine load (``os.getloadavg()`` before
   and after each fit, CPU count). Results go to ``benchmarks/results/accuracy.json`` and the
   markdown table ``benchmarks/results/ACCURACY.md`` (for the README).

How to run
----------
::

    python benchmarks/accuracy.py                              # all sets, fit with its defaults
    python benchmarks/accuracy.py --time-limit 10min           # ... with a 10-minute budget each
    python benchmarks/accuracy.py --sets bf_prisms real-dev    # some sets only
    python benchmarks/accuracy.py --quick --sets bf_prisms     # smoke test: fewer images, tiny budget

``--quick`` uses fewer images per set and a tiny training budget (``--time-limit 1min`` when fit
offers it, else ``--epochs 1``); its results go to ``<work>/accuracy_quick.json`` and
``<work>/ACCURACY_quick.md`` unless ``--out`` / ``--markdown`` say otherwise, so a smoke run never
overwrites the committed results. Run on an otherwise idle machine: the load average before and
after each fit is recorded so that a loaded run can be recognised.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import accuracy_sets  # noqa: E402
from common import QUIET_ENV, RESULTS, cpu_info  # noqa: E402

ROOT = HERE.parent
DEFAULT_WORK = HERE / ".accuracy_data"
TEM_KERAS = Path(sys.executable).with_name("tem-keras")
GOAL, FLOOR = 0.5, 1.0
#: lines of the fit output not echoed (they stay in the log file)
NOISE = re.compile(r"^[IWE]\d{4} |absl::InitializeLog|oneDNN custom operations|"
                   r"floating-point round-off|cuda|reading images|\d+/\d+ \[|^\s*warnings\.warn")
#: config.json keys shown in the printed configuration, in this order (when present)
CONFIG_KEYS = ("model", "patch_size", "batch_size", "steps_per_epoch", "epochs", "time_limit",
               "time_limit_s", "learning_rate", "lr_schedule", "schedule", "warmup_steps",
               "optimizer", "loss", "recipe", "threshold", "folds", "pretrained", "tta",
               "patience", "mixed_precision", "foreground_fraction", "seed")


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------

def scores(pred, truth) -> dict:
    """Hard dice, IoU, precision, recall and pixel counts of two boolean masks of one image
    (``tem_keras.metrics.segmentation_scores``; 1.0 when both are empty)."""
    from tem_keras.metrics import segmentation_scores

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    s = segmentation_scores(pred, truth)
    return {k: (float(s[k]) if k in ("dice", "iou", "precision", "recall") else int(s[k]))
            for k in ("dice", "iou", "precision", "recall", "tp", "fp", "fn")}


def summarise(per_image: list[dict]) -> dict:
    """Per-image means (dice with sample std) and the pooled dice of a list of :func:`scores`."""
    if not per_image:
        return {"n_images": 0}
    out = {"n_images": len(per_image)}
    for k in ("dice", "iou", "precision", "recall"):
        v = np.array([s[k] for s in per_image], float)
        out[k] = float(v.mean())
        if k == "dice":
            out["dice_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            out["dice_min"] = float(v.min())
    tp, fp, fn = (sum(s[k] for s in per_image) for k in ("tp", "fp", "fn"))
    out["pooled_dice"] = 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    # images without any particle pixel score 1 only when nothing is predicted, else 0
    out["n_empty_truth"] = sum(1 for s in per_image if s["tp"] + s["fn"] == 0)
    return out


def check_scores() -> None:
    """Known answers: a mask against itself scores 1, against its complement 0."""
    rng = np.random.default_rng(0)
    m = rng.random((64, 80)) < 0.3
    assert scores(m, m)["dice"] == 1.0 and scores(m, m)["iou"] == 1.0
    assert scores(~m, m)["dice"] == 0.0 and scores(~m, m)["precision"] == 0.0
    half = m.copy()
    half[:32] = False                     # recall = |m in bottom half| / |m|, precision 1
    s = scores(half, m)
    t = m[32:].sum()
    assert abs(s["dice"] - 2 * t / (t + m.sum())) < 1e-12 and s["precision"] == 1.0
    pooled = summarise([scores(m, m), scores(~m, m)])
    assert abs(pooled["dice"] - 0.5) < 1e-12 and pooled["n_images"] == 2


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def fit_options() -> set[str]:
    """The long options ``tem-keras fit --help`` lists."""
    done = subprocess.run([str(TEM_KERAS), "fit", "--help"], capture_output=True, text=True,
                          env={**os.environ, **QUIET_ENV}, timeout=600)
    return set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))


def run_fit(data_dir: Path, run_dir: Path, extra: list[str], log_path: Path,
            timeout: float) -> dict:
    """``tem-keras fit DATA --run-dir RUN [extra]``: wall time, exit code, load, output tail."""
    if run_dir.exists():
        shutil.rmtree(run_dir)            # a fresh run, never a resumed one (our scratch folder)
    cmd = [str(TEM_KERAS), "fit", str(data_dir), "--run-dir", str(run_dir), *extra]
    log("  $ " + " ".join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()
    tail: list[str] = []
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **QUIET_ENV}, bufsize=1)
        try:
            for line in proc.stdout:
                fh.write(line)
                line = line.rstrip("\n")
                if line.strip() and not NOISE.search(line):
                    tail = (tail + [line])[-40:]
                    log("  | " + line.split("\r")[-1][-160:])
                if time.perf_counter() - t0 > timeout:
                    proc.kill()
                    break
            rc = proc.wait(timeout=60)
        except BaseException:
            proc.kill()
            raise
    wall = time.perf_counter() - t0
    return {"command": cmd, "returncode": rc, "wall_s": round(wall, 1),
            "load_before": load_before, "load_after": list(os.getloadavg()),
            "log": str(log_path), "output_tail": tail[-15:]}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "model":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def model_text(model) -> str:
    """``name(kwarg=value, ...)`` from the ``model`` entry of config.json (a dict or a name)."""
    if isinstance(model, dict):
        name = model.get("name") or model.get("model") or model.get("architecture") or "?"
        kw = {k: v for k, v in model.items() if k not in ("name", "model", "architecture")}
        kw = kw.get("kwargs", kw) if isinstance(kw.get("kwargs"), dict) else kw
        return f"{name}(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
    return str(model)


def chosen_config(config: dict | None) -> dict:
    """The configuration chosen, from ``config.json``: ``model`` as ``name(kwargs)``, then every
    scalar or short entry (nested sections flattened to dotted keys), leaving out versions,
    augmentation, classes, preprocessing and paths. Robust to the layout of config.json."""
    if not config:
        return {}
    skip = ("versions", "classes", "strategy", "preprocessing", "data.augmentation",
            "data.dataset_dir", "run_dir", "dataset_dir", "history", "environment")
    out = {}
    if "model" in config:
        out["model"] = model_text(config["model"])
    for k, v in _flatten({k: v for k, v in config.items() if k != "model"}).items():
        if any(k == p or k.startswith(p + ".") for p in skip):
            continue
        if isinstance(v, (int, float, str, bool)) or v is None or (
                isinstance(v, (list, dict)) and len(json.dumps(v, default=str)) <= 200):
            out[k] = v
    return out


def config_value(cfg: dict, leaf: str):
    """The value of the first key of ``cfg`` whose last dotted component is ``leaf``."""
    for k, v in cfg.items():
        if k.split(".")[-1] == leaf:
            return v
    return None


def config_line(cfg: dict) -> str:
    bits = [cfg["model"]] if "model" in cfg else []
    for leaf in CONFIG_KEYS:
        v = config_value(cfg, leaf)
        if v is not None and leaf != "model":
            bits.append(f"{leaf}={json.dumps(v, default=str)}")
    return ", ".join(bits)


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

def evaluate_set(name: str, data_dir: Path, run_dir: Path | None, test_stems: list[str],
                 particle_class: int, modes: dict) -> dict:
    """Scores of fit, Otsu (both polarities) and pseudo-labels on the test images."""
    import tem_keras
    from tem_keras.baselines import otsu_segment, pseudo_labels
    from tem_keras.data.datasets import discover, read_mask

    samples = {s.stem: s for s in discover(data_dir)}
    missing = [s for s in test_stems if s not in samples]
    if missing:
        raise RuntimeError(f"{name}: test stems not in {data_dir}: {missing[:5]}")
    paths = [samples[s].image for s in test_stems]
    preds = None
    if run_dir is not None:
        t0 = time.perf_counter()
        preds = tem_keras.predict(str(run_dir), [str(p) for p in paths])
        if not isinstance(preds, list):
            preds = [preds]
        predict_s = time.perf_counter() - t0
    per = {"fit": [], "otsu_dark": [], "otsu_bright": [], "pseudo_labels": []}
    thresholds, pseudo_pol = set(), {}
    for i, stem in enumerate(test_stems):
        image = np.asarray(tem_keras.read_image(samples[stem].image).data, np.float32)
        if image.ndim == 3:
            image = image[..., 0] if image.shape[-1] == 1 else image.mean(-1)
        truth = read_mask(samples[stem].mask) == particle_class
        if preds is not None:
            p = preds[i]
            per["fit"].append({"stem": stem, **scores(p.mask == particle_class, truth)})
            thresholds.add(p.threshold)
        for pol in ("dark", "bright"):
            per[f"otsu_{pol}"].append(
                {"stem": stem, **scores(otsu_segment(image, sigma=1.0, particles=pol), truth)})
        mode = modes.get(stem)
        if mode in ("haadf", "bright-field"):
            pol = "bright" if mode == "haadf" else "dark"
        else:
            pol = "dark" if per["otsu_dark"][-1]["dice"] >= per["otsu_bright"][-1]["dice"] \
                else "bright"
        pseudo_pol[stem] = pol
        per["pseudo_labels"].append({"stem": stem, **scores(pseudo_labels(image, particles=pol),
                                                            truth)})
    # Otsu, oracle polarity per image (headline) and the one best polarity for the whole set
    per["otsu"] = [dict(max(d, b, key=lambda s: s["dice"]),
                        polarity="dark" if d["dice"] >= b["dice"] else "bright")
                   for d, b in zip(per["otsu_dark"], per["otsu_bright"])]
    set_pol = "dark" if summarise(per["otsu_dark"])["dice"] >= summarise(per["otsu_bright"])["dice"] \
        else "bright"
    per["otsu_set_polarity"] = per[f"otsu_{set_pol}"]
    out = {"test_stems": test_stems, "particle_class": particle_class,
           "summary": {k: summarise(v) for k, v in per.items() if v},
           "per_image": {k: per[k] for k in ("fit", "otsu", "pseudo_labels") if per[k]},
           "otsu_set_polarity": set_pol,
           "otsu_polarities": {s["stem"]: s["polarity"] for s in per["otsu"]},
           "pseudo_label_polarities": pseudo_pol}
    if preds is not None:
        out["predict_s"] = round(predict_s, 1)
        out["fit_thresholds"] = sorted(thresholds, key=lambda t: (t is None, t or 0))
        out["summary"]["fit"]["error_ratio_vs_otsu"] = error_ratio(out["summary"])
        out["summary"]["fit"]["error_ratio_vs_otsu_set_polarity"] = error_ratio(
            out["summary"], "otsu_set_polarity")
    return out


def error_ratio(summary: dict, baseline: str = "otsu") -> float | None:
    if "fit" not in summary:
        return None
    num, den = 1 - summary["fit"]["dice"], 1 - summary[baseline]["dice"]
    return float("inf") if den <= 0 < num else (0.0 if den <= 0 else num / den)


# --------------------------------------------------------------------------------------------
# one set
# --------------------------------------------------------------------------------------------

def run_set(name: str, args, options: set[str]) -> dict | None:
    work = Path(args.work)
    data_dir = accuracy_sets.make_set(name, work, quick=args.quick, log=log)
    if data_dir is None:
        return None
    meta = read_json(data_dir / "dataset.json") or {}
    particle_class = 2 if name == "real-dev" else 1
    run_dir = work / "runs" / (f"{name}-quick" if args.quick else name)
    extra: list[str] = []
    if args.time_limit and "--time-limit" in options:
        extra += ["--time-limit", args.time_limit]
    elif args.time_limit:
        log(f"  note: `tem-keras fit` has no --time-limit yet; {args.time_limit} not applied")
    if args.quick and not args.time_limit:
        extra += ["--time-limit", "1min"] if "--time-limit" in options else ["--epochs", "1"]
    extra += args.fit_args
    result = {"set": name, "data_dir": str(data_dir), "run_dir": str(run_dir),
              "description": accuracy_sets.SYNTHETIC.get(name, {}).get(
                  "description", meta.get("description", "")),
              "n_images": len(list((data_dir / "images").iterdir())),
              "particle_class": particle_class, "quick": args.quick}
    fit = run_fit(data_dir, run_dir, extra, work / "logs" / f"{run_dir.name}.log",
                  args.fit_timeout)
    result["fit"] = fit
    config = read_json(run_dir / "config.json")
    split = read_json(run_dir / "split.json")
    result["config"] = chosen_config(config)
    result["split_sizes"] = {k: len(v) for k, v in (split or {}).items()}
    ok = fit["returncode"] == 0 and split and split.get("test")
    if not ok:
        why = (f"exit {fit['returncode']}" if fit["returncode"] else "no test split in split.json")
        log(f"  fit failed ({why}); baselines only, on the dataset.json test split if any")
        result["error"] = why
        split = split if split and split.get("test") else meta.get("split")
    if split and split.get("test"):
        test = list(split["test"])
    else:                                 # fit failed before splitting: baselines on every image
        from tem_keras.data.datasets import discover

        test = [smp.stem for smp in discover(data_dir)]
        result["baseline_images"] = "all images (fit gave no test split)"
    ev = evaluate_set(name, data_dir, run_dir if ok else None, test,
                      particle_class, meta.get("modes", {}))
    result.update(ev)
    return result


def fmt(s: dict | None) -> str:
    if not s:
        return "—"
    return f"{s['dice']:.3f} ± {s['dice_std']:.3f} (pooled {s['pooled_dice']:.3f})"


def report_set(r: dict) -> None:
    log(f"\n=== {r['set']}  ({r['description']})")
    sz = r.get("split_sizes") or {}
    log(f"  images: {r['n_images']}; split " + ", ".join(f"{k} {v}" for k, v in sz.items()))
    log(f"  configuration: {config_line(r.get('config') or {}) or '(no config.json)'}")
    f = r["fit"]
    log(f"  fit: exit {f['returncode']}, wall {f['wall_s']:.0f} s, load {f['load_before'][0]:.2f}"
        f" -> {f['load_after'][0]:.2f} (1-min avg, {os.cpu_count()} CPUs)")
    s = r.get("summary")
    if not s:
        return
    if r.get("baseline_images"):
        log(f"  baselines on {r['baseline_images']}")
    log(f"  dice of class {r['particle_class']} on {s['otsu']['n_images']} test images "
        "(per-image mean ± std, pooled):")
    if "fit" in s:
        log(f"    fit            {fmt(s['fit'])}  IoU {s['fit']['iou']:.3f} P {s['fit']['precision']:.3f}"
            f" R {s['fit']['recall']:.3f}  threshold {r.get('fit_thresholds')}")
    log(f"    Otsu σ=1       {fmt(s['otsu'])}  (oracle polarity per image; one polarity for the "
        f"set, {r['otsu_set_polarity']}: {s['otsu_set_polarity']['dice']:.3f})")
    log(f"    pseudo-labels  {fmt(s['pseudo_labels'])}")
    if "fit" in s:
        q = s["fit"]["error_ratio_vs_otsu"]
        log(f"    error ratio (1-fit)/(1-Otsu) = {q:.3f}: goal ≤ {GOAL} "
            f"{'MET' if q <= GOAL else 'not met'}; floor < {FLOOR} {'MET' if q < FLOOR else 'not met'}")


def markdown(results: list[dict], header: dict) -> str:
    lines = [
        "<!-- written by benchmarks/accuracy.py; do not edit by hand -->",
        f"Hard dice of the particle class on each set's test images, per-image mean ± std "
        f"(pooled over all test pixels in brackets). `fit` = `tem-keras fit DIR` "
        f"{('with `' + ' '.join(header['fit_extra']) + '`') if header['fit_extra'] else 'with its defaults'}"
        f"; Otsu = Gaussian σ = 1 + Otsu threshold, polarity chosen per image by an oracle; "
        f"pseudo-labels = `tem_keras.pseudo_labels` (Horwath et al. 2020). Error ratio = "
        f"(1 − dice fit) / (1 − dice Otsu): goal ≤ 0.5, floor < 1. "
        f"Machine: {header['machine']['cpu']}, {header['machine']['logical_cpus']} CPUs"
        f"{', QUICK smoke run' if header['quick'] else ''}.",
        "",
        "| set | train / val / test | model chosen | fit wall | fit | Otsu σ=1 | pseudo-labels | error ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sz = r.get("split_sizes") or {}
        cfg = r.get("config") or {}
        bits = [f"`{cfg.get('model', '?')}`"] + [
            f"{k.replace('_', ' ')} {config_value(cfg, k)}" for k in
            ("patch_size", "batch_size", "steps_per_epoch", "epochs", "learning_rate")
            if config_value(cfg, k) is not None]
        if cfg.get("plan.pretrained"):
            bits.append(f"warm start `{cfg['plan.pretrained']}`")
        s = r.get("summary") or {}

        def cell(k):
            return "—" if k not in s else f"{s[k]['dice']:.3f} ± {s[k]['dice_std']:.3f} ({s[k]['pooled_dice']:.3f})"
        q = (s.get("fit") or {}).get("error_ratio_vs_otsu")
        qtxt = "—" if q is None else f"{q:.2f} {'✓ goal' if q <= GOAL else ('✓ floor' if q < FLOOR else '✗')}"
        fitcell = cell("fit") if "fit" in s else f"failed ({r.get('error', '?')})"
        lines.append(f"| {r['set']} | {sz.get('train', '?')} / {sz.get('val', '?')} / "
                     f"{sz.get('test', '?')} | {', '.join(bits)} | {r['fit']['wall_s'] / 60:.1f} min | "
                     f"{fitcell} | {cell('otsu')} | {cell('pseudo_labels')} | {qtxt} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(accuracy_sets.ALL_SETS),
                    choices=list(accuracy_sets.ALL_SETS), metavar="NAME",
                    help=f"sets to run (default all: {', '.join(accuracy_sets.ALL_SETS)})")
    ap.add_argument("--time-limit", default=None,
                    help="training budget passed to `tem-keras fit --time-limit` when it has it")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: fewer images, tiny training budget")
    ap.add_argument("--work", default=str(DEFAULT_WORK),
                    help="scratch folder for data sets, runs and logs (default %(default)s)")
    ap.add_argument("--out", default=None, help="JSON results (default "
                    "benchmarks/results/accuracy.json; quick: <work>/accuracy_quick.json)")
    ap.add_argument("--markdown", default=None, help="markdown table (default "
                    "benchmarks/results/ACCURACY.md; quick: <work>/ACCURACY_quick.md)")
    ap.add_argument("--update", action="store_true",
                    help="keep the other sets' results in --out and replace only the sets run now")
    ap.add_argument("--fit-timeout", type=float, default=4 * 3600,
                    help="kill a fit after this many seconds (default %(default)s)")
    ap.add_argument("--fit-args", nargs=argparse.REMAINDER, default=[],
                    help="extra options for `tem-keras fit` (not for official results)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():
        (work / ".gitignore").write_text("# generated by benchmarks/accuracy.py\n*\n")
    out = Path(args.out) if args.out else (work / "accuracy_quick.json" if args.quick
                                           else RESULTS / "accuracy.json")
    md = Path(args.markdown) if args.markdown else (work / "ACCURACY_quick.md" if args.quick
                                                    else RESULTS / "ACCURACY.md")
    check_scores()
    options = fit_options()
    machine = cpu_info()
    header = {"machine": machine, "cpu_count": os.cpu_count(), "quick": args.quick,
              "time_limit": args.time_limit, "fit_has_time_limit": "--time-limit" in options,
              "fit_extra": [], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "load_start": list(os.getloadavg())}
    try:
        header["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                              capture_output=True, text=True).stdout.strip()
        header["git_dirty"] = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "tem_keras"], cwd=ROOT,
            capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    log(f"accuracy benchmark: sets {args.sets}; {os.cpu_count()} CPUs ({machine['cpu']}); "
        f"load {header['load_start']}; fit --time-limit "
        f"{'available' if header['fit_has_time_limit'] else 'not available'}")
    results = []
    if args.update and out.is_file():  # results of other sets, each with the commit it ran on
        results = [r for r in json.loads(out.read_text())["results"] if r["set"] not in args.sets]
    for name in args.sets:
        log(f"\n--- {name}")
        r = run_set(name, args, options)
        if r is None:
            continue
        header["fit_extra"] = r["fit"]["command"][5:]
        r["git_commit"], r["git_dirty"] = header.get("git_commit"), header.get("git_dirty")
        results.append(r)
        report_set(r)
        payload = {**header, "load_end": list(os.getloadavg()), "results": results}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(markdown(results, header))
    log(f"\nwrote {out} and {md}")
    if results:
        log("\n" + markdown(results, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
