"""Accuracy of default training on real and synthetic sets, beside a plain PyTorch peer and Otsu.

What is measured
----------------
For each set (``accuracy_sets.py``: the real sets of ``../shared/data/real-dev`` first, then
synthetic imitations made with fixed seeds):

1. The set is laid out (real: symlinks, with the fixed split of ``dataset.json``) or generated
   under a scratch folder (``--work``, default ``benchmarks/.accuracy_data/``, ignored by git).
2. Each **method** — a named way of producing masks of the set's test images — runs on the same
   split, and its masks are scored the same way (:data:`METHODS`, in this order):

   * ``fit``: ``tem-keras fit DIR --run-dir RUN`` with its defaults (plus ``--time-limit T``
     when given), exactly as a user would; its wall time, configuration (``config.json``) and
     split (``split.json``: the other methods use it) are recorded; the test images are
     segmented whole with ``tem_keras.predict(RUN, paths)``.
   * ``peer``: the plain PyTorch UNet of ``peer_unet.py`` (its recipe is in its docstring),
     trained on the same train/val images for the wall time fit took (or ``--peer-seconds``),
     in a subprocess; it picks its threshold on the val images.
   * ``otsu``: Gaussian σ = 1 px + Otsu's threshold (``tem_keras.analysis.baselines.otsu_segment``), the
     polarity chosen per image by an oracle (the better against the mask); the one polarity
     per set that is best on average is recorded beside it.
   * ``otsu_two_level`` (sets scoring class 2: pt-alumina): σ = 1, Otsu, then Otsu again on the
     pixels above the first threshold; the bright side of the second is the class. It is the
     classical baseline of those sets.
   * ``pseudo_labels``: ``tem_keras.pseudo_labels`` (Horwath et al. 2020, default arguments),
     ``particles="bright"`` on HAADF / SEM-like images, ``"dark"`` on bright-field (from
     ``dataset.json``), else the Otsu oracle's polarity.

   ``fit_earlier_weights`` is not a method: it is a ``fit`` row kept when the shipped
   pre-trained weights changed, so that the warm-start table shows both; every fit row records
   the weights it began from (``info.weights``: key, SHA-256, steps, corpus size), and the
   few-labels table compares its runs with the full-supervision fit from the same weights.

   Adding a method is a function ``f(ctx) -> {"masks": {stem: bool mask}, ...}`` decorated
   with ``@method(name, label)``.
3. Scores: hard dice of the particle class (class 2 = Pt on pt-alumina, class 1 elsewhere)
   against the masks, **per test image**; the headline is the mean ± sample std over the test
   images; pooled dice (all test pixels together), IoU, precision and recall are kept too.
   Derived: error ratio ``(1 − dice fit) / (1 − dice Otsu)`` (goal ≤ 0.5; the two-level Otsu
   where it applies) and ``dice fit − dice peer`` (goal ≥ −0.005).
4. **Leak**: for each test image the highest Pearson correlation of its 128² area-averaged
   thumbnail with that of any train or val image; the row gives the maximum over the test
   images and how many reach 0.95 (a near twin in training makes a score measure memory).
5. The soot folds are also pooled into one row over their 6 test images.

Results go to ``benchmarks/results/accuracy.json`` and ``benchmarks/results/ACCURACY.md``; the
load average before and after each fit is recorded, so that a loaded run can be recognised.

How to run
----------
::

    python benchmarks/accuracy.py                              # every set, fit with its defaults
    python benchmarks/accuracy.py --sets real                  # the real sets only
    python benchmarks/accuracy.py --sets tem-soot-aggregates bf_prisms --update
    python benchmarks/accuracy.py --quick --sets tem-sinter-tiles --time-limit 40s --peer-seconds 30

``--quick`` uses fewer images per set and a tiny budget (``--time-limit 1min`` unless given);
its results go to ``<work>/accuracy_quick.json`` and ``<work>/ACCURACY_quick.md`` unless
``--out`` / ``--markdown`` say otherwise, so a smoke run never overwrites the committed results.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
GOAL, FLOOR, PEER_GOAL, LEAK = 0.5, 1.0, -0.005, 0.95
#: rows made of several sets' test images: name -> sets
POOLED = {"tem-soot-aggregates (3 folds pooled)": accuracy_sets.SOOT_FOLDS}
#: lines of the subprocess output not echoed (they stay in the log file)
NOISE = re.compile(r"^[IWE]\d{4} |absl::InitializeLog|oneDNN custom operations|"
                   r"floating-point round-off|cuda|reading images|\d+/\d+ \[|^\s*warnings\.warn")
#: config.json keys shown in the printed configuration, in this order (when present)
CONFIG_KEYS = ("model", "patch_size", "batch_size", "steps_per_epoch", "epochs", "time_limit",
               "time_limit_s", "learning_rate", "schedule", "loss", "recipe", "threshold",
               "pretrained", "foreground_fraction", "seed")


def log(*a):
    print(*a, flush=True)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------

def scores(pred, truth) -> dict:
    """Hard dice, IoU, precision, recall and pixel counts of two boolean masks of one image
    (``tem_keras.analysis.metrics.segmentation_scores``; 1.0 when both are empty)."""
    from tem_keras.analysis.metrics import segmentation_scores

    s = segmentation_scores(np.asarray(pred, bool), np.asarray(truth, bool))
    return {k: (float(s[k]) if k in ("dice", "iou", "precision", "recall") else int(s[k]))
            for k in ("dice", "iou", "precision", "recall", "tp", "fp", "fn")}


def summarise(per_image: list[dict]) -> dict:
    """Per-image means (dice with sample std and min) and the pooled dice of :func:`scores`."""
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
    out["n_empty_truth"] = sum(1 for s in per_image if s["tp"] + s["fn"] == 0)
    return out


def check_scores() -> None:
    """Known answers: a mask against itself scores 1, against its complement 0, half of it
    the dice of its bottom half; the two-level Otsu isolates the brightest of three levels."""
    rng = np.random.default_rng(0)
    m = rng.random((64, 80)) < 0.3
    assert scores(m, m)["dice"] == 1.0 and scores(m, m)["iou"] == 1.0
    assert scores(~m, m)["dice"] == 0.0 and scores(~m, m)["precision"] == 0.0
    half = m.copy()
    half[:32] = False
    s, t = scores(half, m), m[32:].sum()
    assert abs(s["dice"] - 2 * t / (t + m.sum())) < 1e-12 and s["precision"] == 1.0
    assert abs(summarise([scores(m, m), scores(~m, m)])["dice"] - 0.5) < 1e-12
    levels = np.zeros((64, 64), np.float32)
    levels[:, 20:] = 1.0
    levels[40:50, 40:50] = 3.0
    assert np.array_equal(two_level_otsu(levels + 0.01 * rng.random((64, 64))), levels == 3.0)


# --------------------------------------------------------------------------------------------
# one set: its images, split and the methods that segment its test images
# --------------------------------------------------------------------------------------------

@dataclass
class SetContext:
    """What the methods of one set share: the folder, the split, options and cached images.

    ``split`` is ``dataset.json``'s until ``fit`` replaces it by its ``split.json`` (or a
    default split when fit fails before writing one).
    """

    name: str
    data_dir: Path
    args: argparse.Namespace
    samples: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    split: dict | None = None
    fit: dict | None = None
    _images: dict = field(default_factory=dict)
    _truths: dict = field(default_factory=dict)
    _polarity: dict = field(default_factory=dict)

    def __post_init__(self):
        from tem_keras.data.datasets import discover

        self.samples = {s.stem: s for s in discover(self.data_dir).labelled}
        self.meta = read_json(self.data_dir / "dataset.json") or {}
        self.split = self.meta.get("split")

    @property
    def particle_class(self) -> int:
        return accuracy_sets.particle_class(self.name)

    @property
    def test(self) -> list[str]:
        return list((self.split or {}).get("test", []))

    @property
    def run_name(self) -> str:
        return f"{self.name}-quick" if self.args.quick else self.name

    @property
    def work(self) -> Path:
        return Path(self.args.work)

    def image(self, stem: str) -> np.ndarray:
        if stem not in self._images:
            self._images[stem] = accuracy_sets.read_gray(self.samples[stem].image)
        return self._images[stem]

    def truth(self, stem: str) -> np.ndarray:
        from tem_keras.data.datasets import read_mask

        if stem not in self._truths:
            classes = [int(c) for c in self.meta.get("classes") or (0, 1)]
            self._truths[stem] = read_mask(self.samples[stem].mask, classes) == self.particle_class
        return self._truths[stem]

    def otsu_masks(self, stem: str) -> dict:
        """``{"dark": mask, "bright": mask}`` of Otsu σ = 1 (cached)."""
        from tem_keras.analysis.baselines import otsu_segment

        if stem not in self._polarity:
            self._polarity[stem] = {p: otsu_segment(self.image(stem), sigma=1.0, particles=p)
                                    for p in ("dark", "bright")}
        return self._polarity[stem]

    def oracle_polarity(self, stem: str) -> str:
        m, truth = self.otsu_masks(stem), self.truth(stem)
        return "dark" if scores(m["dark"], truth)["dice"] >= scores(m["bright"], truth)["dice"] \
            else "bright"


@dataclass(frozen=True)
class Method:
    """A named way of producing masks of a set's test images.

    ``run(ctx)`` returns ``{"masks": {stem: bool mask}, ...}``: anything beside the masks
    (wall time, threshold, polarity, ...) is kept as the method's ``info``. ``applies(ctx)``
    says whether the method has a row for that set.
    """

    name: str
    label: str
    run: Callable[[SetContext], dict]
    applies: Callable[[SetContext], bool] = lambda ctx: True


METHODS: dict[str, Method] = {}


def method(name: str, label: str, applies=None):
    """Register the decorated ``f(ctx)`` as method ``name`` (shown as ``label``)."""
    def register(fn):
        METHODS[name] = Method(name, label, fn, applies or (lambda ctx: True))
        return fn
    return register


class MethodSkipped(Exception):
    """A method that cannot run on this set (e.g. the peer without a budget); the reason is shown."""


def run_logged(cmd: list[str], log_path: Path, timeout: float, prefix: str = "  | ") -> dict:
    """Run ``cmd``, echo its output lines (less :data:`NOISE`) and keep all of it in ``log_path``;
    exit code, wall time, load average before and after, output tail."""
    log("  $ " + " ".join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before, t0, tail = list(os.getloadavg()), time.perf_counter(), []
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **QUIET_ENV}, bufsize=1)
        try:
            for line in proc.stdout:
                fh.write(line)
                line = line.rstrip("\n")
                if line.strip() and not NOISE.search(line):
                    tail = (tail + [line])[-40:]
                    log(prefix + line.split("\r")[-1][-160:])
                if time.perf_counter() - t0 > timeout:
                    proc.kill()
                    break
            rc = proc.wait(timeout=60)
        except BaseException:
            proc.kill()
            raise
    return {"command": cmd, "returncode": rc, "wall_s": round(time.perf_counter() - t0, 1),
            "load_before": load_before, "load_after": list(os.getloadavg()),
            "log": str(log_path), "output_tail": tail[-15:]}


def fit_options(args) -> list[str]:
    """The options every fit of this benchmark gets: ``--time-limit`` (quick: 1min unless
    given) and ``--fit-args``."""
    limit = args.time_limit or ("1min" if args.quick else None)
    return (["--time-limit", limit] if limit else []) + list(args.fit_args)


def fit_masks(ctx: SetContext, key: str, extra: list[str] = (), data_dir: Path | None = None,
              particle_class: int | None = None) -> dict:
    """Train with ``tem-keras fit DIR --run-dir <work>/runs/<set>[-key] [options] [extra]``
    (a fresh run) and predict the set's test images whole with the run; its class
    ``particle_class`` (default: the set's) is scored. The run's ``split.json`` becomes the set's
    split when ``key == "fit"``; another run must not train or validate on the set's test
    images."""
    args = ctx.args
    run_dir = ctx.work / "runs" / (ctx.run_name + ("" if key == "fit" else f"-{key}"))
    cmd = [str(TEM_KERAS), "fit", str(data_dir or ctx.data_dir), "--run-dir", str(run_dir), *extra,
           *fit_options(args)]
    done = finished_run(run_dir, cmd) if args.reuse_runs else None
    if done is None:
        if run_dir.exists():
            shutil.rmtree(run_dir)        # a fresh run, never a resumed one (our scratch folder)
        done = run_logged(cmd, ctx.work / "logs" / f"{run_dir.name}.log", args.fit_timeout)
    info = {**done, "run_dir": str(run_dir),
            "config": chosen_config(read_json(run_dir / "config.json"))}
    info["weights"] = weights_used(info["config"])
    split = read_json(run_dir / "split.json")
    if key == "fit":
        ctx.fit = info
        if split and split.get("test"):
            ctx.split = split
    has_test = bool(split and split.get("test"))
    if done["returncode"] or (key == "fit" and not has_test):  # other runs are scored on the set's test images
        raise RuntimeError(f"fit exit {done['returncode']}" + ("" if has_test else ", no test split"))
    split = split or {}
    seen = set(ctx.test) & set(split.get("train", []) + split.get("val", []))
    if seen:
        raise RuntimeError(f"{run_dir} trained on test images: {sorted(seen)[:5]}")
    import tem_keras

    t0 = time.perf_counter()
    stems = ctx.test
    preds = tem_keras.predict(str(run_dir), [str(ctx.samples[s].image) for s in stems])
    preds = preds if isinstance(preds, list) else [preds]
    scored = ctx.particle_class if particle_class is None else particle_class
    return {"masks": {s: p.mask == scored for s, p in zip(stems, preds)},
            **info, "predict_s": round(time.perf_counter() - t0, 1),
            "thresholds": sorted({p.threshold for p in preds}, key=lambda t: (t is None, t or 0))}


def weights_used(config: dict) -> dict | None:
    """The warm start a run began from: the shipped file's key, the first 12 hex digits of its
    SHA-256, and from its record the optimiser steps and corpus images it was trained with
    (None for a random initialisation)."""
    import hashlib

    from tem_keras.models.tem_weights import WEIGHTS_DIR, tem_weights_info

    key = config.get("plan.pretrained")
    if not key or not (WEIGHTS_DIR / f"{key}.npz").is_file():
        return None
    record = tem_weights_info(key).get("record", {})
    return {"key": key, "sha256": hashlib.sha256((WEIGHTS_DIR / f"{key}.npz").read_bytes()).hexdigest()[:12],
            "steps": record.get("steps"), "corpus_images": record.get("corpus_images")}


def weights_text(w: dict | None) -> str:
    """``residual_unet_4b16: 1200 steps on 240 images (sha256 0123456789ab)``, or the random
    initialisation."""
    if not w:
        return "random initialisation"
    corpus = f"{w['corpus_images']} images" if w.get("corpus_images") else "a corpus of unrecorded size"
    return f"{w['key']}: {w.get('steps')} steps on {corpus} (sha256 {w['sha256']})"


def finished_run(run_dir: Path, cmd: list[str]) -> dict | None:
    """``--reuse-runs``: a finished run already in ``run_dir`` (its ``metrics.json`` and log
    written), scored again without training; the caller trusts it was made by ``cmd``."""
    log_path = run_dir.parent.parent / "logs" / f"{run_dir.name}.log"
    if not (run_dir / "metrics.json").is_file() or not log_path.is_file():
        return None
    config = read_json(run_dir / "config.json") or {}
    log(f"  reusing the finished run {run_dir} (--reuse-runs)")
    wall = ((config.get("training") or {}).get("time") or {}).get("wall_s")
    return {"command": cmd, "returncode": 0, "wall_s": wall, "reused": True, "log": str(log_path),
            "output_tail": log_path.read_text().splitlines()[-15:]}


@method("fit", "tem-keras fit (defaults)")
def _fit(ctx: SetContext) -> dict:
    return fit_masks(ctx, "fit")


@method("random_init", "tem-keras fit --pretrained none (random initialisation)",
        applies=lambda ctx: ctx.args.random_init)
def _random_init(ctx: SetContext) -> dict:
    return fit_masks(ctx, "random-init", ["--pretrained", "none"])


@method("peer", "PyTorch peer UNet")
def _peer(ctx: SetContext) -> dict:
    seconds = ctx.args.peer_seconds or (ctx.fit or {}).get("wall_s")
    if not seconds:
        raise MethodSkipped("no budget: fit gave no wall time and --peer-seconds is not set")
    out = ctx.work / "runs" / f"{ctx.run_name}-peer"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "split.json").write_text(json.dumps(ctx.split, indent=1))
    cmd = [sys.executable, str(HERE / "peer_unet.py"), str(ctx.data_dir), "--split",
           str(out / "split.json"), "--particle-class", str(ctx.particle_class),
           "--seconds", f"{seconds:.1f}", "--out", str(out)]
    done = run_logged(cmd, ctx.work / "logs" / f"{out.name}.log", 3 * seconds + 1800)
    record = read_json(out / "record.json")
    if done["returncode"] or not record:
        raise RuntimeError(f"peer exit {done['returncode']}: {' / '.join(done['output_tail'][-3:])}")
    from tem_keras.data.datasets import read_mask

    record.pop("test_dice", None)
    return {"masks": {s: read_mask(out / "masks" / f"{s}.png") > 0 for s in ctx.test},
            **done, **record, "budget_from": "--peer-seconds" if ctx.args.peer_seconds
            else "fit wall time"}


def label_free_folder(ctx: SetContext, n_masks: int) -> Path:
    """The set's training and validation images (never its test images) in a folder of their
    own, with the masks of only the first ``n_masks`` training images: what a lab with few
    masks and many frames has. Symlinks; no dataset.json, so fit splits as it would for a user.
    A multi-class set's masks are written binary (the scored particle class against the rest):
    the label-free route segments particles, so its lab draws particle masks."""
    folder = ctx.work / "label_free" / f"{ctx.run_name}-{n_masks}masks"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    stems = ctx.split["train"] + ctx.split["val"]
    for stem in stems:
        image = ctx.samples[stem].image
        (folder / "images" / image.name).symlink_to(image.resolve())
    for stem in ctx.split["train"][:n_masks]:
        mask = ctx.samples[stem].mask
        if ctx.particle_class == 1:
            (folder / "masks" / f"{stem}{mask.suffix}").symlink_to(mask.resolve())
        else:
            from tem_keras.io import write_mask

            write_mask(folder / "masks" / f"{stem}.png", ctx.truth(stem).astype(np.uint8))
    return folder


def _label_free(ctx: SetContext, n_masks: int) -> dict:
    folder = label_free_folder(ctx, n_masks)
    out = fit_masks(ctx, f"{n_masks}masks", ["--labels", "auto", "--particles", "auto"], data_dir=folder,
                    particle_class=1)  # binary: particles against the rest
    return {**out, "hand_masks": n_masks, "unmasked_images": len(list((folder / "images").iterdir())) - n_masks}


@method("zero_mask", "fit --labels auto, no mask (pseudo-labels only)",
        applies=lambda ctx: ctx.args.label_free)
def _zero_mask(ctx: SetContext) -> dict:
    return _label_free(ctx, 0)


@method("two_mask", "fit --labels auto, 2 binary masks + the other images unmasked",
        applies=lambda ctx: ctx.args.label_free)
def _two_mask(ctx: SetContext) -> dict:
    return _label_free(ctx, 2)


@method("otsu", "Otsu σ=1, oracle polarity per image")
def _otsu(ctx: SetContext) -> dict:
    polarity = {s: ctx.oracle_polarity(s) for s in ctx.test}
    mean = {p: np.mean([scores(ctx.otsu_masks(s)[p], ctx.truth(s))["dice"] for s in ctx.test])
            for p in ("dark", "bright")}
    set_polarity = max(mean, key=mean.get)
    return {"masks": {s: ctx.otsu_masks(s)[polarity[s]] for s in ctx.test},
            "polarity": polarity, "set_polarity": set_polarity,
            "set_polarity_dice": float(mean[set_polarity])}


def two_level_otsu(image, sigma: float = 1.0) -> np.ndarray:
    """Gaussian σ, Otsu's threshold, then Otsu's threshold of the pixels above it: the pixels
    above the second (the brightest of three levels, e.g. Pt on alumina in HAADF)."""
    from skimage.filters import gaussian, threshold_otsu

    smoothed = gaussian(np.asarray(image, np.float32), sigma=sigma, preserve_range=True)
    upper = smoothed[smoothed > threshold_otsu(smoothed)]
    return smoothed > threshold_otsu(upper) if upper.size > 1 else np.zeros(smoothed.shape, bool)


@method("otsu_two_level", "two-level Otsu σ=1 (bright class)",
        applies=lambda ctx: ctx.particle_class == 2)
def _otsu_two_level(ctx: SetContext) -> dict:
    return {"masks": {s: two_level_otsu(ctx.image(s)) for s in ctx.test}}


@method("pseudo_labels", "pseudo-labels (Horwath et al. 2020)")
def _pseudo_labels(ctx: SetContext) -> dict:
    from tem_keras.analysis.baselines import pseudo_labels

    by_mode = {"haadf": "bright", "sem": "bright", "bright-field": "dark"}
    modes = ctx.meta.get("modes", {})
    polarity = {s: by_mode.get(modes.get(s)) or ctx.oracle_polarity(s) for s in ctx.test}
    return {"masks": {s: pseudo_labels(ctx.image(s), particles=polarity[s]) for s in ctx.test},
            "polarity": polarity}


@method("auto_labels", "tem_keras.auto_labels: the labeller the zero-mask route trains on",
        applies=lambda ctx: ctx.args.label_free)
def _auto_labels(ctx: SetContext) -> dict:
    from tem_keras import auto_labels

    return {"masks": {s: auto_labels(ctx.image(s))[0] for s in ctx.test}}


def baseline_of(methods: dict) -> str:
    """The classical baseline of a set: the two-level Otsu where it ran, else Otsu."""
    return "otsu_two_level" if "summary" in methods.get("otsu_two_level", {}) else "otsu"


# --------------------------------------------------------------------------------------------
# leak: near twins of test images among the training images
# --------------------------------------------------------------------------------------------

def leak(test_images, train_images, names_test=(), names_train=()) -> dict:
    """For each test image the highest Pearson correlation of its 128² area-averaged thumbnail
    with any training one: the maximum, how many reach :data:`LEAK`, and per image (with the
    nearest training image)."""
    thumb = accuracy_sets.thumbnail
    c = accuracy_sets.correlations([thumb(i) for i in test_images],
                                   [thumb(i) for i in train_images])
    if not c.size:
        return {"max": None, "n_ge_0.95": 0, "n_test": len(test_images)}
    best = c.max(1)
    names_test = list(names_test) or list(range(len(test_images)))
    names_train = list(names_train) or list(range(len(train_images)))
    return {"max": round(float(best.max()), 4), "n_ge_0.95": int((best >= LEAK).sum()),
            "n_test": len(best),
            "per_image": {str(t): [round(float(b), 4), names_train[int(j)]]
                          for t, b, j in zip(names_test, best, c.argmax(1))}}


def set_leak(ctx: SetContext) -> dict:
    known = [s for k in ("train", "val") for s in (ctx.split or {}).get(k, [])]
    return leak([ctx.image(s) for s in ctx.test], [ctx.image(s) for s in known], ctx.test, known)


def check_leak() -> dict | None:
    """Known answer on pt-alumina (when present): its source split gives 14 of 15 val slices a
    near twin (≥ 0.95) in train; the grouped split of ``accuracy_sets`` gives none."""
    if not accuracy_sets.PT_ALUMINA.is_dir():
        return None
    split, _, pairs = accuracy_sets.pt_alumina_split()
    images = {s: accuracy_sets.read_gray(pairs[s][0]) for s in pairs}
    source = {k: [s for s in pairs if s.startswith(f"src{k}_")] for k in ("train", "val")}
    out = {}
    for name, test, known in (("source split (val as test)", source["val"], source["train"]),
                              ("grouped split", split["test"], split["train"] + split["val"])):
        r = leak([images[s] for s in test], [images[s] for s in known])
        out[name] = {k: r[k] for k in ("max", "n_ge_0.95", "n_test")}
    assert out["source split (val as test)"]["n_ge_0.95"] >= 12, out
    assert out["grouped split"]["n_ge_0.95"] == 0, out
    return out


# --------------------------------------------------------------------------------------------
# running a set
# --------------------------------------------------------------------------------------------

def default_split(ctx: SetContext) -> dict:
    """The split fit would make by default (when fit fails before writing one)."""
    from tem_keras.data.datasets import split_samples

    return split_samples(sorted(ctx.samples), (0.7, 0.1, 0.2), seed=0)


def run_set(name: str, args) -> dict | None:
    """Every method of :data:`METHODS` that applies, on the test images of one set."""
    data_dir = accuracy_sets.make_set(name, Path(args.work), quick=args.quick, log=log)
    if data_dir is None:
        return None
    ctx = SetContext(name, data_dir, args)
    result = {"set": name, "block": "real" if name in accuracy_sets.REAL_SETS else "synthetic",
              "data_dir": str(data_dir), "quick": args.quick, "n_images": len(ctx.samples),
              "description": ctx.meta.get("description", ""),
              "particle_class": ctx.particle_class, "methods": {}}
    for m in METHODS.values():
        if m.name in args.skip or not m.applies(ctx) or (args.methods and m.name not in args.methods):
            continue
        if m.name != "fit" and not ctx.split:
            ctx.split = default_split(ctx)
            result["split_source"] = "default split (fit wrote none)"
        log(f"  [{m.name}] {m.label}")
        t0 = time.perf_counter()
        try:
            out = m.run(ctx)
        except MethodSkipped as e:
            log(f"  [{m.name}] skipped: {e}")
            result["methods"][m.name] = {"label": m.label, "skipped": str(e)}
            continue
        except Exception as e:            # one method failing leaves the others' rows
            log(f"  [{m.name}] failed: {type(e).__name__}: {e}")
            result["methods"][m.name] = {"label": m.label, "error": f"{type(e).__name__}: {e}"}
            continue
        masks = out.pop("masks")
        per = [{"stem": s, **scores(masks[s], ctx.truth(s))} for s in ctx.test]
        result["methods"][m.name] = {"label": m.label, "summary": summarise(per),
                                     "per_image": per, "seconds": out["wall_s"] if out.get("reused")
                                     else round(time.perf_counter() - t0, 1),
                                     "info": out}
    result.update(split_sizes={k: len(v) for k, v in (ctx.split or {}).items()},
                  test_stems=ctx.test, fit=ctx.fit, config=(ctx.fit or {}).get("config", {}),
                  leak=set_leak(ctx))
    result.setdefault("split_source", "dataset.json" if ctx.meta.get("split") else "fit split.json")
    result.update(derived(result["methods"]))
    return result


def merged(before: dict, now: dict) -> dict:
    """The methods run now (``--methods``) added to a set's earlier result, which keeps its split,
    fit and leak; each method keeps the commit it ran on."""
    if sorted(before.get("test_stems") or []) != sorted(now.get("test_stems") or []):
        raise SystemExit(f"{now['set']}: the test images differ from the earlier result's; "
                         "run every method again (without --methods)")
    commit = {k: now[k] for k in ("git_commit", "git_dirty") if k in now}
    methods = {**before["methods"], **{k: {**m, **commit} for k, m in now["methods"].items()}}
    fit_now = {k: now[k] for k in ("fit", "config", "split_sizes") if "fit" in now["methods"]}
    return {**before, **fit_now, "methods": methods, **derived(methods)}


def method_dice(methods: dict, key: str) -> float | None:
    """Per-image mean dice of one method of a set (None where it did not run or failed)."""
    return methods.get(key, {}).get("summary", {}).get("dice")


def derived(methods: dict) -> dict:
    """Error ratio of fit against the set's classical baseline, and fit − peer."""
    base = baseline_of(methods)
    fit, otsu, peer = (method_dice(methods, k) for k in ("fit", base, "peer"))
    out = {"baseline": base, "error_ratio_vs_otsu": None, "fit_minus_peer": None}
    if fit is not None and otsu is not None:
        num, den = 1 - fit, 1 - otsu
        out["error_ratio_vs_otsu"] = float("inf") if den <= 0 < num else (
            0.0 if den <= 0 else num / den)
    if fit is not None and peer is not None:
        out["fit_minus_peer"] = fit - peer
    return out


def pooled(name: str, parts: list[dict]) -> dict:
    """One row over the test images of several runs (the soot folds): per-image scores joined."""
    methods = {}
    for key in dict.fromkeys(k for r in parts for k in r["methods"]):
        rows = [r["methods"].get(key, {}) for r in parts]
        if all("per_image" in m for m in rows):
            per = [dict(s, stem=f"{r['set']}:{s['stem']}") for r, m in zip(parts, rows)
                   for s in m["per_image"]]
            starts = [(m.get("info") or {}).get("weights") for m in rows]
            methods[key] = {"label": rows[0]["label"], "summary": summarise(per), "per_image": per,
                            "seconds": round(sum(m["seconds"] for m in rows), 1),
                            "info": {"weights": starts[0]} if all(w == starts[0] for w in starts) else {}}
    leaks = [r["leak"] for r in parts]
    walls = [(r.get("fit") or {}).get("wall_s") for r in parts]
    per_fold = {k: "–".join(sorted({str(r["split_sizes"].get(k, 0)) for r in parts}))
                for k in ("train", "val")}
    return {"set": name, "block": parts[0]["block"], "pooled_from": [r["set"] for r in parts],
            "quick": parts[0]["quick"], "n_images": parts[0]["n_images"],
            "description": f"{len(parts)} folds, their test images pooled; train / val per fold",
            "particle_class": parts[0]["particle_class"],
            "split_sizes": {**per_fold, "test": sum(r["split_sizes"].get("test", 0) for r in parts)},
            "fit": {"wall_s": float(np.mean(walls)) if None not in walls else None,
                    "wall_s_note": "mean over the folds"},
            "leak": {"max": max((x["max"] for x in leaks if x["max"] is not None), default=None),
                     "n_ge_0.95": sum(x["n_ge_0.95"] for x in leaks),
                     "n_test": sum(x["n_test"] for x in leaks)},
            "methods": methods, **derived(methods)}


# --------------------------------------------------------------------------------------------
# configuration chosen by fit
# --------------------------------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def model_text(model) -> str:
    """``name(kwarg=value, ...)`` from the ``model`` entry of config.json (a dict or a name)."""
    if isinstance(model, dict):
        name = model.get("name") or model.get("model") or model.get("architecture") or "?"
        kw = {k: v for k, v in model.items() if k not in ("name", "model", "architecture")}
        kw = kw["kwargs"] if isinstance(kw.get("kwargs"), dict) else kw
        return f"{name}(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
    return str(model)


def chosen_config(config: dict | None) -> dict:
    """The configuration chosen, from ``config.json``: ``model`` as ``name(kwargs)``, then every
    scalar or short entry (nested sections flattened to dotted keys), leaving out versions,
    augmentation, classes, preprocessing and paths."""
    if not config:
        return {}
    skip = ("versions", "classes", "strategy", "preprocessing", "data.augmentation",
            "data.dataset_dir", "run_dir", "dataset_dir", "history", "environment")
    out = {"model": model_text(config["model"])} if "model" in config else {}
    for k, v in _flatten({k: v for k, v in config.items() if k != "model"}).items():
        if any(k == p or k.startswith(p + ".") for p in skip):
            continue
        if isinstance(v, (int, float, str, bool)) or v is None or (
                isinstance(v, (list, dict)) and len(json.dumps(v, default=str)) <= 200):
            out[k] = v
    return out


def config_value(cfg: dict, leaf: str):
    """The value of the first key of ``cfg`` whose last dotted component is ``leaf``."""
    return next((v for k, v in cfg.items() if k.split(".")[-1] == leaf), None)


def config_line(cfg: dict) -> str:
    bits = [cfg["model"]] if "model" in cfg else []
    bits += [f"{leaf}={json.dumps(config_value(cfg, leaf), default=str)}" for leaf in CONFIG_KEYS
             if leaf != "model" and config_value(cfg, leaf) is not None]
    return ", ".join(bits)


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------

def dice_text(m: dict | None, pooled_too: bool = False) -> str:
    s = (m or {}).get("summary")
    if not s:
        return "—" if not m else ("skipped" if "skipped" in m else "failed")
    text = f"{s['dice']:.3f} ± {s['dice_std']:.3f}"
    return text + (f" ({s['pooled_dice']:.3f})" if pooled_too else "")


def ratio_text(r: dict) -> str:
    q = r.get("error_ratio_vs_otsu")
    if q is None:
        return "—"
    return f"{q:.2f} {'✓' if q <= GOAL else ('(floor ✓)' if q < FLOOR else '✗')}"


def gap_text(r: dict) -> str:
    g = r.get("fit_minus_peer")
    return "—" if g is None else f"{g:+.3f} {'✓' if g >= PEER_GOAL else '✗'}"


def leak_text(r: dict) -> str:
    x = r.get("leak") or {}
    return "—" if x.get("max") is None else f"{x['max']:.2f} ({x['n_ge_0.95']}/{x['n_test']} ≥ 0.95)"


def wall_text(r: dict) -> str:
    w = (r.get("fit") or {}).get("wall_s")
    return "—" if w is None else f"{w / 60:.1f} min"


def report_set(r: dict) -> None:
    log(f"\n=== {r['set']}  ({r['description']})")
    sz = r.get("split_sizes") or {}
    log(f"  images: {r.get('n_images', '?')}; split ({r.get('split_source', 'pooled')}) "
        + ", ".join(f"{k} {v}" for k, v in sz.items()))
    fit = r.get("fit") or {}
    if fit.get("command"):
        log(f"  configuration: {config_line(r.get('config') or {}) or '(no config.json)'}")
        log(f"  fit: exit {fit['returncode']}, wall {fit['wall_s']:.0f} s, load "
            f"{fit['load_before'][0]:.2f} -> {fit['load_after'][0]:.2f} (1-min avg, "
            f"{os.cpu_count()} CPUs)")
    log(f"  dice of class {r['particle_class']} on the test images (per-image mean ± std, pooled):")
    for key, m in r["methods"].items():
        info = m.get("info", {})
        extra = {"fit": lambda: f"threshold {info.get('thresholds')}",
                 "peer": lambda: f"{info.get('steps')} steps in {info.get('train_s')} s, best val "
                                 f"{info.get('best_val_dice')}, threshold {info.get('threshold')}",
                 "otsu": lambda: f"one polarity ({info.get('set_polarity')}): "
                                 f"{info.get('set_polarity_dice', float('nan')):.3f}"}.get(key)
        why = m.get("skipped") or m.get("error") or ""
        log(f"    {key:<16} {dice_text(m, True):<28} {why or (extra() if extra and info else '')}")
    log(f"  error ratio vs {r['baseline']}: {ratio_text(r)} (goal ≤ {GOAL}); fit − peer: "
        f"{gap_text(r)} (goal ≥ {PEER_GOAL}); leak max corr {leak_text(r)}")


def warm_start_lines(results: list[dict]) -> list[str]:
    """Default fit (warm start where shipped weights fit the plan) beside ``--pretrained none``
    and beside the fit from the weights shipped before, where those ran."""
    rows = [r for r in results if method_dice(r["methods"], "fit") is not None and any(
        method_dice(r["methods"], k) is not None for k in ("random_init", "fit_earlier_weights"))]
    if not rows:
        return []
    lines = ["", "**Warm start against random initialisation** (same split, same budget; "
             "`fit_earlier_weights`: the default fit from the weights shipped before)", "",
             "| set | run | warm start from | dice | − random initialisation |", "|---|---|---|---|---|"]
    for r in rows:
        m = r["methods"]
        for key in ("fit", "fit_earlier_weights", "random_init"):
            if method_dice(m, key) is None:
                continue
            random = method_dice(m, "random_init")
            diff = "—" if random is None else f"{method_dice(m, key) - random:+.3f}"
            lines.append(f"| {r['set']} | {key} | {weights_text((m[key].get('info') or {}).get('weights'))} | "
                         f"{dice_text(m[key])} | {diff} |")
    return lines


def same_start(methods: dict, key: str) -> str:
    """The full-supervision row that began from the same warm start as ``methods[key]``:
    ``fit``, or ``fit_earlier_weights`` when only that one shares its weights."""
    weights = lambda k: ((methods.get(k) or {}).get("info") or {}).get("weights")  # noqa: E731
    if "fit_earlier_weights" in methods and weights(key) != weights("fit") and weights(key) == weights("fit_earlier_weights"):
        return "fit_earlier_weights"
    return "fit"


def few_label_lines(results: list[dict]) -> list[str]:
    """The zero-mask and two-mask routes beside full supervision, Otsu and the pseudo-labels."""
    rows = [r for r in results if any(method_dice(r["methods"], k) is not None for k in ("zero_mask", "two_mask"))]
    if not rows:
        return []
    lines = ["", "**Few labels** (`fit --labels auto` on the training and validation images with none "
             "or two of their masks; goals: zero masks above Otsu and above the automatic labels they "
             "trained on, two masks within 0.01 of all masks; all masks is the fit that began from the "
             "same warm start as the few-label runs)", "",
             "| set | all masks (fit) | two masks | zero masks | Otsu | automatic labels | pseudo-labels | "
             "zero − Otsu | zero − automatic labels | two − all |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, base = r["methods"], r["baseline"]
        full_key = same_start(m, "two_mask" if "two_mask" in m else "zero_mask")
        zero, two, full, otsu, auto = (method_dice(m, k) for k in ("zero_mask", "two_mask", full_key, base, "auto_labels"))
        gap = lambda a, b: "—" if a is None or b is None else f"{a - b:+.3f}"  # noqa: E731
        lines.append(f"| {r['set']} | {dice_text(m.get(full_key))} | {dice_text(m.get('two_mask'))} | "
                     f"{dice_text(m.get('zero_mask'))} | {dice_text(m.get(base))} | "
                     f"{dice_text(m.get('auto_labels'))} | {dice_text(m.get('pseudo_labels'))} | "
                     f"{gap(zero, otsu)} | {gap(zero, auto)} | {gap(two, full)} |")
    return lines


def empty_truth_lines(results: list[dict]) -> list[str]:
    """Test images whose mask has no particle pixel: their dice is 1 for an empty prediction and
    0 for any false positive, so one such image moves a set's mean by 1/n. Listed with each
    method's false-positive pixels, and the means over the other test images."""
    lines = []
    for r in results:
        if "pooled_from" in r:
            continue
        methods = {k: m for k, m in r["methods"].items() if "per_image" in m}
        empty = sorted({p["stem"] for m in methods.values() for p in m["per_image"]
                        if p["tp"] + p["fn"] == 0})
        if not empty:
            continue
        for stem in empty:
            fps = ", ".join(f"{k} {next(p['fp'] for p in m['per_image'] if p['stem'] == stem)}"
                            for k, m in methods.items())
            rest = {k: [p["dice"] for p in m["per_image"] if p["stem"] not in empty]
                    for k, m in methods.items()}
            means = ", ".join(f"{k} {np.mean(v):.3f}" for k, v in rest.items() if v)
            lines.append(f"| {r['set']} | {stem} | {fps} | {means} |")
    if not lines:
        return []
    return ["", "**Test images without a particle in their mask** (dice 1 for an empty prediction, "
            "0 for any false positive)", "",
            "| set | image | false-positive pixels | per-image dice over the other test images |",
            "|---|---|---|---|", *lines]


def markdown(results: list[dict], header: dict) -> str:
    cols = ("| set | train / val / test | fit dice | fit wall | peer dice | Otsu dice | "
            "pseudo-label dice | error ratio vs Otsu (≤ 0.5) | fit − peer (≥ −0.005) | "
            "leak max corr |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [
        "<!-- written by benchmarks/accuracy.py; do not edit by hand -->",
        "Hard dice of the particle class on each set's test images, per-image mean ± sample std. "
        f"fit = `{' '.join(['tem-keras fit DIR', *header['fit_extra']])}`"
        f"{'' if header['fit_extra'] else ' (its defaults)'}; "
        "peer = `benchmarks/peer_unet.py`, a plain PyTorch UNet trained on the same train/val "
        f"images for the same wall time{' (or --peer-seconds)' if header.get('peer_seconds') else ''}; "
        "Otsu = Gaussian σ = 1 + Otsu, polarity per image by an oracle (pt-alumina: "
        "two-level Otsu, marked ²); pseudo-labels = `tem_keras.pseudo_labels` (Horwath et al. "
        "2020). Error ratio = (1 − fit) / (1 − Otsu). Leak = highest Pearson correlation of a "
        "test image's 128² thumbnail with any train/val one (max over the test images; how many "
        f"≥ 0.95). Machine: {header['machine']['cpu']}, {header['machine']['logical_cpus']} CPUs"
        f"{'; QUICK smoke run' if header['quick'] else ''}.", ""]
    for block, title in (("real", "Real sets"), ("synthetic", "Synthetic imitations")):
        rows = [r for r in results if r["block"] == block]
        if not rows:
            continue
        lines += [f"**{title}**", "", cols]
        for r in rows:
            sz, m = r.get("split_sizes") or {}, r["methods"]
            base = dice_text(m.get(r["baseline"])) + ("²" if r["baseline"] != "otsu" else "")
            lines.append(f"| {r['set']} | {sz.get('train', '?')} / {sz.get('val', '?')} / "
                         f"{sz.get('test', '?')} | {dice_text(m.get('fit'))} | {wall_text(r)} | "
                         f"{dice_text(m.get('peer'))} | {base} | "
                         f"{dice_text(m.get('pseudo_labels'))} | {ratio_text(r)} | {gap_text(r)} | "
                         f"{leak_text(r)} |")
        lines.append("")
    lines += ["**Every method** (per-image dice mean ± std, pooled dice in brackets, per-image "
              "IoU / precision / recall means, seconds the method took)", "",
              "| set | method | dice | IoU | precision | recall | s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for key, m in r["methods"].items():
            s = m.get("summary") or {}
            nums = " | ".join(f"{s[k]:.3f}" if k in s else "—" for k in ("iou", "precision", "recall"))
            lines.append(f"| {r['set']} | {key} | {dice_text(m, True)} | {nums} | "
                         f"{m.get('seconds', '—')} |")
    lines += few_label_lines(results) + warm_start_lines(results) + empty_truth_lines(results)
    lines += ["", "**Configuration fit chose**", "", "| set | configuration |", "|---|---|"]
    lines += [f"| {r['set']} | {config_line(r['config']) or '—'} |" for r in results if r.get("config")]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [*accuracy_sets.ALL_SETS, *accuracy_sets.GROUPS]
    ap.add_argument("--sets", nargs="+", default=list(accuracy_sets.ALL_SETS), metavar="NAME",
                    choices=names, help=f"sets or groups of sets (default all): {', '.join(names)}")
    ap.add_argument("--time-limit", default=None, help="`tem-keras fit --time-limit` (e.g. 10min)")
    ap.add_argument("--quick", action="store_true", help="smoke test: fewer images, tiny budget")
    ap.add_argument("--no-peer", action="store_true", help="do not train the PyTorch peer")
    ap.add_argument("--label-free", action="store_true",
                    help="also the zero-mask and two-mask rows (fit --labels auto on the training "
                         "images with 0 or 2 of their masks, made binary on multi-class sets)")
    ap.add_argument("--random-init", action="store_true",
                    help="also fit with --pretrained none, beside the default warm start")
    ap.add_argument("--methods", nargs="+", default=None, metavar="NAME", choices=list(METHODS),
                    help="run only these methods; with --update they join the set's earlier "
                         "results (same test images), e.g. --methods random_init --random-init")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="score finished runs already in <work>/runs instead of training them again "
                         "(e.g. after a failure while scoring)")
    ap.add_argument("--peer-seconds", type=float, default=None,
                    help="the peer's training budget (default: the wall time of that set's fit)")
    ap.add_argument("--work", default=str(DEFAULT_WORK),
                    help="scratch folder for data sets, runs and logs (default %(default)s)")
    ap.add_argument("--out", default=None, help="JSON results (default "
                    "benchmarks/results/accuracy.json; quick: <work>/accuracy_quick.json)")
    ap.add_argument("--markdown", default=None, help="markdown tables (default "
                    "benchmarks/results/ACCURACY.md; quick: <work>/ACCURACY_quick.md)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the markdown tables again from the JSON results, running nothing")
    ap.add_argument("--update", action="store_true",
                    help="keep the other sets' results in --out and replace only the sets run now")
    ap.add_argument("--fit-timeout", type=float, default=4 * 3600,
                    help="kill a fit after this many seconds (default %(default)s)")
    ap.add_argument("--fit-args", nargs=argparse.REMAINDER, default=[],
                    help="extra options for `tem-keras fit` (not for official results)")
    args = ap.parse_args(argv)
    args.sets = accuracy_sets.expand(args.sets)
    args.skip = {"peer"} if args.no_peer else set()
    return args


def git_state() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "tem_keras"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return {"git_commit": commit, "git_dirty": bool(dirty)}
    except OSError:
        return {}


def with_pooled(results: list[dict]) -> list[dict]:
    """``results`` with each :data:`POOLED` row after its last part, when all parts are there."""
    out = [r for r in results if "pooled_from" not in r]
    for name, parts in POOLED.items():
        found = [r for r in out if r["set"] in parts]
        if len(found) == len(parts):
            out.insert(out.index(found[-1]) + 1, pooled(name, found))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():
        (work / ".gitignore").write_text("# generated by benchmarks/accuracy.py\n*\n")
    out = Path(args.out) if args.out else (work / "accuracy_quick.json" if args.quick
                                           else RESULTS / "accuracy.json")
    md = Path(args.markdown) if args.markdown else (work / "ACCURACY_quick.md" if args.quick
                                                    else RESULTS / "ACCURACY.md")
    if args.report_only:  # the tables again, from the results as they are
        payload = json.loads(out.read_text())
        md.write_text(markdown(with_pooled(payload["results"]), payload))
        log(f"wrote {md} from {out}")
        return 0
    check_scores()
    accuracy_sets.check_groups()
    header = {"machine": cpu_info(), "cpu_count": os.cpu_count(), "quick": args.quick,
              "time_limit": args.time_limit, "peer_seconds": args.peer_seconds,
              "fit_extra": fit_options(args),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_start": list(os.getloadavg()),
              "leak_check_pt_alumina": check_leak(), **git_state()}
    log(f"accuracy benchmark: sets {args.sets}; {os.cpu_count()} CPUs ({header['machine']['cpu']}); "
        f"load {header['load_start']}")
    if header["leak_check_pt_alumina"]:
        log(f"leak check, pt-alumina: {header['leak_check_pt_alumina']}")
    results, earlier = [], {}
    if args.update and out.is_file():     # other sets' results, each with the commit it ran on
        earlier = {r["set"]: r for r in json.loads(out.read_text())["results"]
                   if "pooled_from" not in r}
        results = [r for name, r in earlier.items() if name not in args.sets]
    for name in args.sets:
        log(f"\n--- {name}")
        r = run_set(name, args)
        if r is None:
            continue
        r.update(git_state())
        if args.methods and name in earlier:
            r = merged(earlier[name], r)
        results = sorted([x for x in results if x["set"] != name] + [r],
                         key=lambda x: accuracy_sets.ALL_SETS.index(x["set"]))
        report_set(r)
        table = with_pooled(results)
        payload = {**header, "load_end": list(os.getloadavg()), "results": table}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(markdown(table, header))
    for r in with_pooled(results):
        if "pooled_from" in r:
            report_set(r)
    log(f"\nwrote {out} and {md}")
    if results:
        log("\n" + markdown(with_pooled(results), header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
