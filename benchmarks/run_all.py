"""All tem_keras benchmarks in one command: prints a table, writes ``benchmarks/results/<name>.json``.

Usage::

    python benchmarks/run_all.py                     # full run (≈ 20–30 min on 2 idle cores)
    python benchmarks/run_all.py --quick             # smoke run: fewer repeats and cases (≈ 5 min)
    python benchmarks/run_all.py --compare benchmarks/results/reference.json
    python benchmarks/run_all.py --only matmul predict   # some sections only

Sections: ``matmul`` (machine rate, TF and PyTorch), ``predict`` (tem_keras per architecture, size,
precision and batch, with the PyTorch peer at the same points), ``train`` (patches/s, 1 vs 2
replicas) with ``pipeline`` (input rate), ``baselines`` (``bench_baselines.py``: pseudo_labels and
fourier_filter per 1792×1920 image). Every timed case runs in a fresh subprocess. Timings are
medians of ``--runs`` calls after a warm-up call (fewer when a case would exceed ``--budget``
seconds; the JSON keeps every time, the run count and the 1-minute load average before and after).
Before each section the run waits up to ``--wait`` seconds for the 1-minute load to fall below
``--max-load``; the load at start is recorded either way.

TensorFlow's CPU kernels are those the ``tem-keras`` command picks (oneDNN for networks of up to
64 MiB of weights on x86, see ``tem_keras.hardware.prefer_onednn``; the matrix multiply with
oneDNN, TensorFlow's faster one) unless ``TF_ENABLE_ONEDNN_OPTS`` is set for the whole run; every
row records whether oneDNN was on. bfloat16 is measured only on CPUs with bfloat16 instructions
(AVX512_BF16 or AMX) unless ``--precisions`` asks for it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (RESULTS, TUNED_MALLOC_ENV, cpu_info, loadavg, run_worker,  # noqa: E402
                    wait_for_quiet)

# (arch, size, batches to try) — batch 1 and the candidates for "best batch"
PREDICT_PLAN = {
    "unet64": {512: [1], 1024: [1]},
    "unet_horwath_1024": {1024: [1, 2]},
    "residual_unet_sytwu": {512: [1, 16], 1024: [1, 4, 8]},
    "residual_unet_2b_p2": {1024: [1, 8]},
}
QUICK_PLAN = {
    "unet64": {1024: [1]},
    "residual_unet_sytwu": {1024: [1, 8]},
}
TORCH_ARCHS = ("unet64", "unet_horwath_1024", "residual_unet_sytwu", "residual_unet_2b_p2")
TRAIN_PLAN = {"residual_unet_sytwu": [8], "unet_horwath_1024": [4], "unet64": [1]}
QUICK_TRAIN = {"residual_unet_sytwu": [4]}
PRECISIONS = ("float32", "bfloat16")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def default_precisions(machine: dict) -> list[str]:
    """float32, and bfloat16 where the CPU has instructions for it (elsewhere it is emulated at a
    fraction of the float32 speed and ``mixed_precision="auto"`` never picks it)."""
    return list(PRECISIONS) if machine.get("avx512_bf16") or machine.get("amx_bf16") else ["float32"]


@functools.cache
def kernel_env(arch: str | None = None) -> dict:
    """Worker environment with the CPU kernels the ``tem-keras`` command would pick for ``arch``
    (None: the matrix multiply, oneDNN on x86); nothing when the variable is set for the run."""
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        return {}
    from bench_models import ARCHS
    from tem_keras.hardware import network_weight_bytes, onednn_pays

    weights = 0 if arch is None else network_weight_bytes(*ARCHS[arch])
    return {"TF_ENABLE_ONEDNN_OPTS": "1"} if onednn_pays(weights) else {}


def section_matmul(o):
    tf = run_worker(HERE / "matmul.py", [], env=kernel_env())
    out = {"tensorflow": tf}
    try:
        out["torch"] = run_worker(HERE / "torch_peer.py", ["--matmul"], env=TUNED_MALLOC_ENV)
    except Exception as error:  # torch missing
        out["torch"] = {"error": str(error)}
    return out


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


FAILURES: list = []


def _case(script, args, env=None, **fields) -> list:
    """``[row]`` of one case, or ``[]`` when it fails (recorded in the results' ``failures``)."""
    try:
        return [{**fields, **run_worker(HERE / script, args, env=env)}]
    except Exception as error:  # one broken case must not lose the rest of a long run
        log(f"  FAILED: {error}")
        FAILURES.append(str(error))
        return []


def section_predict(o):
    plan = QUICK_PLAN if o.quick else PREDICT_PLAN
    common = ["--runs", str(o.runs), "--budget", str(o.budget)]
    rows = []
    have_torch = _torch_available() and not o.no_torch
    for arch, sizes in plan.items():
        if o.archs and arch not in o.archs:
            continue
        env = kernel_env(arch)
        for precision in o.precisions:
            for size, batches in sizes.items():
                for batch in batches:
                    log(f"  tf   {arch} {precision} {size}² batch {batch}")
                    rows += _case("bench_models.py", ["--worker", arch, precision, "bare", str(size), str(batch),
                                                      *common], env=env, framework="tem_keras")
                    if have_torch and arch in TORCH_ARCHS:
                        log(f"  torch {arch} {precision} {size}² batch {batch}")
                        rows += _case("torch_peer.py", ["--worker", arch, precision, str(size), str(batch), *common],
                                      env=TUNED_MALLOC_ENV, framework="torch", case="bare")
            # what a user gets: predict() at 1024², batch 1, and at the best bare batch; tiled 4096²
            best = max((r for r in rows if r["framework"] == "tem_keras" and r["arch"] == arch
                        and r["precision"] == precision and r["size"] == 1024 and r["case"] == "bare"),
                       key=lambda r: r["mpx_per_s"], default={"batch": 1})
            for batch in sorted({1, best["batch"]}):
                log(f"  predict {arch} {precision} 1024² batch {batch}")
                rows += _case("bench_models.py", ["--worker", arch, precision, "predict", "1024", str(batch),
                                                  *common], env=env, framework="tem_keras")
            if not o.quick or arch != "unet64":
                log(f"  tiled {arch} {precision} 4096²")
                rows += _case("bench_models.py", ["--worker", arch, precision, "tiled", "4096", "4", "--runs",
                                                  str(min(o.runs, 3)), "--budget", str(o.budget)],
                              env=env, framework="tem_keras")
            if not o.quick and arch != "unet64":  # UNet-64's default on 4096² is the tiled case above
                log(f"  large {arch} {precision} 4096² (predict's defaults)")
                rows += _case("bench_models.py", ["--worker", arch, precision, "large", "4096", "4", "--runs",
                                                  str(min(o.runs, 3)), "--budget", str(o.budget)],
                              env=env, framework="tem_keras")
    return rows


def section_train(o):
    plan = QUICK_TRAIN if o.quick else TRAIN_PLAN
    rows = []
    for arch, batches in plan.items():
        if o.archs and arch not in o.archs:
            continue
        for batch in batches:
            for replicas in (1, 2):
                log(f"  train {arch} batch {batch} × {replicas} replicas")
                rows += _case("bench_train.py", ["--worker", "train", arch, str(batch), str(replicas),
                                                 "--steps", "2" if o.quick else "4"], env=kernel_env(arch))
    batch = 8
    log(f"  pipeline batch {batch}")
    pipe = run_worker(HERE / "bench_train.py", ["--worker", "pipeline", str(batch), "--steps", "4" if o.quick else "8"])
    return {"train": rows, "pipeline": pipe}


def section_baselines(o):
    import subprocess

    out = RESULTS / f"{o.name}_baselines.json"
    cmd = [sys.executable, str(HERE / "bench_baselines.py"), "--repeat", "3" if o.quick else "5",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        log(done.stderr[-3000:])
        return {"error": f"bench_baselines.py exit {done.returncode}"}
    data = json.loads(out.read_text())
    data["load_after"] = loadavg()
    return data


SECTIONS = {"matmul": section_matmul, "predict": section_predict, "train": section_train,
            "baselines": section_baselines}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare", type=Path, help="a saved results JSON: print ratios against it")
    parser.add_argument("--name", default=None, help="results/<name>.json (default: full or quick)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--archs", nargs="+", default=None, help="restrict predict/train to these")
    parser.add_argument("--runs", type=int, default=None, help="timed calls per case (default 5, quick 2)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed calls per case")
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                        help="default: float32, and bfloat16 on CPUs with bfloat16 instructions")
    o = parser.parse_args(argv)
    o.runs = o.runs or (2 if o.quick else 5)
    o.budget = o.budget or (20.0 if o.quick else 40.0)
    name = o.name = o.name or ("quick" if o.quick else "full")

    import tensorflow as tf

    from make_table import print_tables, compare

    results = {"name": name, "quick": o.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "machine": {**cpu_info(), "tensorflow": tf.__version__}, "load_at_start": loadavg(),
               "runs": o.runs, "budget_s": o.budget, "sections": {}}
    o.precisions = o.precisions or default_precisions(results["machine"])
    results["precisions"] = o.precisions
    results["onednn_env"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "as tem-keras picks")
    try:
        import keras

        results["machine"]["keras"] = keras.__version__
        import importlib.metadata as md

        results["machine"]["torch"] = md.version("torch")
    except Exception:
        pass
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    for section in o.only:
        load = wait_for_quiet(o.max_load, o.wait)
        log(f"[{time.strftime('%H:%M:%S')}] {section} (1-min load {load:.2f})")
        start = time.perf_counter()
        results["sections"][section] = SECTIONS[section](o)
        results.setdefault("section_load", {})[section] = {"before": load, "after": loadavg()[0],
                                                           "seconds": time.perf_counter() - start}
        results["failures"] = FAILURES
        path.write_text(json.dumps(results, indent=1))  # partial results survive an interruption
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["load_at_end"] = loadavg()
    path.write_text(json.dumps(results, indent=1))
    print_tables(results)
    if o.compare:
        compare(results, json.loads(o.compare.read_text()))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
