"""A/B measurements of the library's speed changes, interleaved in one process (same load).

``fold``       ``tem_keras.models.optimize.for_inference`` (batch norm folded, two-class softmax
               as a sigmoid, up-sampling + concatenation + convolution fused) against the model as built, model call alone, residual UNet and Groschner's UNet;
``allocator``  the same model call in two subprocesses, with and without glibc tuned through the
               environment (``MALLOC_MMAP_MAX_=0``, ``MALLOC_TRIM_THRESHOLD_``), the tuning
               ``tem_keras.hardware.tune_allocator`` would apply;
``onednn``     the same model call in subprocesses with ``TF_ENABLE_ONEDNN_OPTS=0`` and ``=1``.
               TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with AVX-512
               VNNI, AVX-512 BF16 or AMX (TensorFlow RFC 400); elsewhere (AVX2 CPUs such as AMD
               EPYC/Zen) it runs Eigen kernels, and which is faster depends on the network;
``layers``     single 3×3 convolutions + ReLU at the shapes of UNet-64's levels for a 256² input
               (encoder C → C, decoder 2C → C after the concatenation), with oneDNN off and on;
``budget``     ``predict`` on one 4096² image with its defaults under activation-memory budgets
               (``max_memory_gb``) of 2 and 1.5 GiB, each in its own process: seconds (best of 2
               after a warm-up) and the process's peak RSS, TensorFlow's runtime included.

``python benchmarks/ab_library.py [--runs 7] [--only CASE ...] [--name NAME]`` writes
``benchmarks/results/ab_library.json`` (``ab_library_<cases>.json`` for a subset, ``NAME.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TUNED_MALLOC_ENV, cpu_info, emit, loadavg, run_worker  # noqa: E402


CASES = ("fold", "allocator", "onednn", "layers", "budget")
BUDGETS_GB = (2.0, 1.5)


def _interleaved(fns: dict, x, runs: int) -> dict:
    for f in fns.values():
        f(x).numpy()
        f(x).numpy()
    times = {k: [] for k in fns}
    load = loadavg()[0]
    for _ in range(runs):
        for k, f in fns.items():
            t = time.perf_counter()
            f(x).numpy()
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "times_s": [round(a, 4) for a in v]} for k, v in times.items()} | {
        "load": [load, loadavg()[0]]}


def fold_case(arch: str, size: int, batch: int, runs: int) -> dict:
    import numpy as np

    from bench_models import build
    from tem_keras.inference import traced_call
    from tem_keras.models.optimize import for_inference

    model = build(arch)
    x = np.random.default_rng(0).normal(size=(batch, size, size, 1)).astype("float32")
    out = _interleaved({"as_built": traced_call(model), "rewritten": traced_call(for_inference(model))}, x, runs)
    out["speedup"] = out["as_built"]["median_s"] / out["rewritten"]["median_s"]
    return {"arch": arch, "size": size, "batch": batch, **out}


def call_case(arch: str, size: int, batch: int, runs: int) -> dict:
    import numpy as np

    from bench_models import build
    from tem_keras.inference import traced_call

    from tensorflow.python.util import _pywrap_util_port

    model = build(arch)
    x = np.random.default_rng(0).normal(size=(batch, size, size, 1)).astype("float32")
    return {**_interleaved({"call": traced_call(model)}, x, runs)["call"],
            "onednn": bool(_pywrap_util_port.IsMklEnabled())}


def layers_case(size: int, runs: int) -> list:
    import tensorflow as tf

    from tem_keras.hardware import onednn_enabled

    conv = tf.function(lambda x, k: tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME")))
    out = []
    for level in range(5):
        side, c = size >> level, 64 << level
        for c_in in (c, 2 * c) if level < 4 else (c,):
            x, k = tf.random.normal([1, side, side, c_in]), tf.random.normal([3, 3, c_in, c])
            times = _interleaved({"conv": lambda x, k=k: conv(x, k)}, x, runs)["conv"]
            out.append({"side": side, "c_in": c_in, "c_out": c, "median_s": times["median_s"],
                        "gflop": 2 * 9 * side * side * c_in * c / 1e9, "onednn": onednn_enabled()})
    return out


def budget_case(arch: str, size: int, budget_gb: float) -> dict:
    import resource
    import warnings

    import numpy as np

    from bench_models import build
    from tem_keras.hardware import onednn_enabled
    from tem_keras.inference import PerformanceHint, predict

    warnings.simplefilter("ignore", PerformanceHint)
    model = build(arch)
    image = np.random.default_rng(0).normal(size=(size, size)).astype("float32")
    predict(model, image[:512, :512], max_memory_gb=budget_gb)  # tracing, first allocations
    times = []
    for _ in range(3):  # warm-up at full size, then best of 2
        start = time.perf_counter()
        predict(model, image, max_memory_gb=budget_gb)
        times.append(time.perf_counter() - start)
    return {"seconds": min(times[1:]), "times_s": [round(t, 3) for t in times],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
            "onednn": onednn_enabled()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--worker", nargs=4)
    parser.add_argument("--only", choices=CASES, nargs="+", default=CASES,
                        help="cases to run (default all; a subset writes ab_library_<cases>.json)")
    parser.add_argument("--name", help="write results/<NAME>.json instead")
    args = parser.parse_args(argv)
    if args.worker:
        kind, arch, size, batch = args.worker
        if kind == "budget":
            emit(budget_case(arch, int(size), float(batch)))
        elif kind == "layers":
            emit(layers_case(int(size), args.runs))
        else:
            emit((fold_case if kind == "fold" else call_case)(arch, int(size), int(batch), args.runs))
        return 0
    out = {case: [] for case in CASES}
    for arch, batch in (("residual_unet_sytwu", 1), ("residual_unet_sytwu", 8), ("residual_unet_2b_p2", 1),
                        ("unet_horwath_1024", 1)) if "fold" in args.only else ():
        r = run_worker(Path(__file__), ["--worker", "fold", arch, "1024", str(batch), "--runs", str(args.runs)])
        print(f"rewrite {arch} 1024² B{batch}: {r['as_built']['median_s']:.3f} → {r['rewritten']['median_s']:.3f} s "
              f"(×{r['speedup']:.2f}, load {r['load'][0]})")
        out["fold"].append(r)
    for arch, batch in (("residual_unet_sytwu", 8), ("unet64", 1)) if "allocator" in args.only else ():
        pair = {}
        for _ in range(2):  # alternate twice: plain, tuned, plain, tuned
            for name, env in (("plain", {}), ("tuned", TUNED_MALLOC_ENV)):
                r = run_worker(Path(__file__), ["--worker", "call", arch, "1024", str(batch), "--runs",
                                                str(max(3, args.runs // 2))], env=env)
                pair.setdefault(name, []).extend(r["times_s"])
        res = {k: statistics.median(v) for k, v in pair.items()}
        print(f"allocator {arch} 1024² B{batch}: plain {res['plain']:.3f} s, tuned {res['tuned']:.3f} s "
              f"(×{res['plain'] / res['tuned']:.2f})")
        out["allocator"].append({"arch": arch, "batch": batch, "times_s": pair, "median_s": res,
                                 "speedup": res["plain"] / res["tuned"], "load": loadavg()})
    for arch, size in (("residual_unet_sytwu", 1024), ("unet_horwath_1024", 1024), ("unet64", 256)) \
            if "onednn" in args.only else ():
        times = {}
        for _ in range(2):  # alternate twice: off, on, off, on
            for flag in ("0", "1"):
                r = run_worker(Path(__file__), ["--worker", "call", arch, str(size), "1", "--runs",
                                                str(max(3, args.runs // 2))], env={"TF_ENABLE_ONEDNN_OPTS": flag})
                times.setdefault(flag, []).extend(r["times_s"])
        default = run_worker(Path(__file__), ["--worker", "call", arch, "64", "1", "--runs", "1"],
                             env={"TF_ENABLE_ONEDNN_OPTS": None})["onednn"]
        res = {k: statistics.median(v) for k, v in times.items()}
        print(f"oneDNN {arch} {size}² B1: off {res['0']:.3f} s, on {res['1']:.3f} s (on ×{res['0'] / res['1']:.2f}; "
              f"TensorFlow's default here: {'on' if default else 'off'})")
        out["onednn"].append({"arch": arch, "size": size, "batch": 1, "times_s": times, "median_s": res,
                              "speedup_on": res["0"] / res["1"], "default_on": default, "load": loadavg()})
    if "layers" in args.only:
        by_flag = {flag: run_worker(Path(__file__), ["--worker", "layers", "conv3x3", "256", "1", "--runs",
                                                     str(args.runs)], env={"TF_ENABLE_ONEDNN_OPTS": flag})
                   for flag in ("0", "1")}
        for off, on in zip(by_flag["0"], by_flag["1"]):
            print(f"3×3 conv {off['side']}² {off['c_in']:4d} → {off['c_out']:4d}: oneDNN off "
                  f"{off['median_s'] * 1e3:6.1f} ms ({off['gflop'] / off['median_s']:5.0f} GFLOP/s), on "
                  f"{on['median_s'] * 1e3:6.1f} ms ({on['gflop'] / on['median_s']:5.0f} GFLOP/s)")
            out["layers"].append({**{k: off[k] for k in ("side", "c_in", "c_out", "gflop")},
                                  "median_s": {"0": off["median_s"], "1": on["median_s"]}})
    for arch in ("unet_horwath_1024", "residual_unet_sytwu") if "budget" in args.only else ():
        res = {gb: run_worker(Path(__file__), ["--worker", "budget", arch, "4096", str(gb)]) for gb in BUDGETS_GB}
        print(f"budget {arch} 4096², predict defaults: " + ", ".join(
            f"{gb:g} GiB {r['seconds']:.2f} s, peak {r['peak_rss_gb']:.2f} GiB" for gb, r in res.items()))
        out["budget"].append({"arch": arch, "size": 4096, "by_budget_gb": res, "load": loadavg()})
    out["machine"] = cpu_info()
    name = args.name or ("ab_library" if set(args.only) == set(CASES) else "ab_library_" + "_".join(args.only))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
