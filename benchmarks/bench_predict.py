"""Throughput of tem_keras.inference.predict: whole 1024² images, tiled 4096² images, a 512² stack.

For each model (the 1024² UNet of Horwath et al. 2020 — depth 4, 16 base filters — and the small
residual UNet of Sytwu et al. 2022) it reports, in megapixels per second (input pixels):

``bare_compiled_1024``   the traced model call alone on a preprocessed, padded 1024² batch of 1
``bare_predict_on_batch_1024``  ``model.predict_on_batch`` on the same input
``predict_1024``         ``predict`` with standardisation only (no outlier removal)
``predict_default_1024`` ``predict`` with the default preprocessing (outlier removal + standardisation)
``tiled_4096``           ``predict`` on 4096² with 1024 px tiles (standardisation only), and the
                         peak RSS growth of that call (``tiled_4096_rss_mb``)
``stack``                ``predict_stack`` over a ``.npy`` stack of 512² frames read from disk
                         (100 frames; 20 with ``--quick``), standardisation only

``overhead_1024`` is ``predict_1024`` time / ``bare_compiled_1024`` time − 1 (the three 1024²
measurements are interleaved in one process, best of each). The other cases run in their own
processes so that RSS high-water marks do not mix. Results go to
``benchmarks/results/predict.json``.

Usage::

    python benchmarks/bench_predict.py            # full: 5 repeats, 100-frame stack
    python benchmarks/bench_predict.py --quick    # best of 2 after warm-up, 20 frames
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "unet_horwath_1024": ("unet_horwath_1024", {}),
    "residual_unet_sytwu": ("residual_unet_sytwu", {}),
}
CASES = ("bare_1024", "predict_default_1024", "tiled_4096", "stack")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: tracing, cuDNN autotuning, first allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def worker(model_name: str, case: str, repeats: int, frames: int) -> dict:
    import keras
    import numpy as np

    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.inference import pad_to_multiple, predict, predict_stack, traced_call
    from tem_keras.models import build_model, downsampling_factor

    keras.utils.set_random_seed(0)
    name, kwargs = MODELS[model_name]
    model = build_model(name, **kwargs)
    rng = np.random.default_rng(0)
    standardise = Preprocessing(remove_outliers=False)
    out = {}
    if case == "bare_1024":
        # bare calls and predict interleaved in one process, best of each: the ratio is robust
        # to other load on the machine
        image = rng.normal(size=(1024, 1024)).astype("float32")
        x = pad_to_multiple(standardise(image), downsampling_factor(model))[0][None, ..., None]
        fn = traced_call(model)
        calls = {"bare_compiled_1024": lambda: fn(x).numpy(),
                 "bare_predict_on_batch_1024": lambda: model.predict_on_batch(x),
                 "predict_1024": lambda: predict(model, image, preprocessing=standardise)}
        best = {k: float("inf") for k in calls}
        for call in calls.values():
            call()  # warm-up
        for _ in range(max(3, repeats)):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                best[key] = min(best[key], time.perf_counter() - start)
        for key, t in best.items():
            out[key] = {"seconds": t, "mpx_per_s": 1024 * 1024 / 1e6 / t}
    elif case == "predict_default_1024":
        image = rng.normal(size=(1024, 1024)).astype("float32")
        t = _timed(lambda: predict(model, image, preprocessing=Preprocessing()), repeats)
        out[case] = {"seconds": t, "mpx_per_s": 1024 * 1024 / 1e6 / t}
    elif case == "tiled_4096":
        image = rng.normal(size=(4096, 4096)).astype("float32")
        predict(model, image[:1024, :1024], tile_size=1024, preprocessing=standardise)  # warm-up
        base = _rss_mb()
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            predict(model, image, tile_size=1024, batch_size=4, preprocessing=standardise)
            times.append(time.perf_counter() - start)
        t = min(times)
        out[case] = {"seconds": t, "mpx_per_s": 4096 * 4096 / 1e6 / t}
        out["tiled_4096_rss_mb"] = _rss_mb() - base
    elif case == "stack":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "movie.npy"
            np.save(path, rng.normal(size=(frames, 512, 512)).astype("float32"))
            list(predict_stack(model, np.zeros((2, 512, 512), "float32") + rng.normal(size=(2, 512, 512)),
                               preprocessing=standardise))  # warm-up
            start = time.perf_counter()
            n = sum(1 for _ in predict_stack(model, path, preprocessing=standardise, batch_size=4))
            t = time.perf_counter() - start
        out["stack"] = {"seconds": t, "frames": n, "mpx_per_s": n * 512 * 512 / 1e6 / t,
                        "frames_per_s": n / t}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="best of 2 repeats, 20-frame stack")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "predict.json")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats, frames = (2, 20) if args.quick else (5, 100)
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, repeats, frames)))
        return 0

    import tensorflow as tf

    results = {"quick": args.quick, "stack_frames": frames, "repeats": repeats,
               "device": [d.name for d in tf.config.list_logical_devices("GPU")] or "CPU",
               "cpu_count": os.cpu_count(), "platform": platform.platform(),
               "tensorflow": tf.__version__, "models": {}}
    for model_name in args.models:
        row = {}
        for case in CASES:
            command = [sys.executable, __file__, "--worker", model_name, case] + (["--quick"] if args.quick else [])
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{model_name} {case} failed")
            row.update(json.loads(lines[-1][7:]))
        row["overhead_1024"] = row["predict_1024"]["seconds"] / row["bare_compiled_1024"]["seconds"] - 1
        results["models"][model_name] = row

    header = (f"{'model':22} {'bare 1024²':>11} {'predict_on_batch':>16} {'predict 1024²':>14} "
              f"{'+outliers':>10} {'overhead':>9} {'tiled 4096²':>12} {'RSS 4096²':>10} {'stack 512²':>11}")
    print(f"megapixels/s on {results['device']} ({results['cpu_count']} CPUs), "
          f"{'quick' if args.quick else 'full'} run, stack of {frames} frames")
    print(header)
    for model_name, row in results["models"].items():
        print(f"{model_name:22} {row['bare_compiled_1024']['mpx_per_s']:11.2f} "
              f"{row['bare_predict_on_batch_1024']['mpx_per_s']:16.2f} {row['predict_1024']['mpx_per_s']:14.2f} "
              f"{row['predict_default_1024']['mpx_per_s']:10.2f} {row['overhead_1024']:9.1%} "
              f"{row['tiled_4096']['mpx_per_s']:12.2f} {row['tiled_4096_rss_mb']:8.0f}MB "
              f"{row['stack']['mpx_per_s']:11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
