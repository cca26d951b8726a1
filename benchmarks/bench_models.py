"""Predict throughput of the model zoo with TensorFlow: 512², 1024², tiled 4096²; float32 and bfloat16.

Cases (each in its own process, so that memory high-water marks and thread pools do not mix):

``bare``     the traced model call alone (``Predictor.of(model).function(precision)``, what predict
             runs: batch norm folded, precision applied) on a batch of ``B`` already standardised,
             padded images — the number to compare with PyTorch and with the matmul rate;
``predict``  ``tem_keras.predict`` on a ``[B, S, S]`` stack (standardisation only, ``batch_size=B``):
             what a user gets; ``overhead`` = predict / bare − 1;
``tiled``    ``tem_keras.predict`` on one 4096² image with 1024 px tiles (overlap "auto",
             batched tiles), plus the peak RSS of the process during that call;
``large``    ``tem_keras.predict`` on one 4096² image with the defaults: whole when its activations
             fit the memory budget, else tiles (the calls made are recorded), plus the peak RSS.

Throughput is counted in input megapixels; GFLOP/s uses ``describe(model)["gflops_per_megapixel"]``
(2 FLOPs per multiply-add, of the unpadded image).

Run through ``benchmarks/run_all.py``; alone: ``python benchmarks/bench_models.py --worker ARCH
PRECISION CASE SIZE BATCH`` prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, measure, rss_peak_mb  # noqa: E402

#: name → (builder, kwargs); "unet64" is the classic 4-level 64-filter UNet (two 3×3 convs per level)
ARCHS = {
    "unet64": ("unet", dict(depth=4, base_filters=64, convs_per_level=2)),
    "unet_horwath_1024": ("unet_horwath_1024", {}),
    "residual_unet_sytwu": ("residual_unet_sytwu", {}),
    "residual_unet_2b_p2": ("residual_unet", dict(n_blocks=2, pool_sizes=(2, 2))),
}


def build(arch: str):
    import keras

    from tem_keras.models import build_model

    keras.utils.set_random_seed(0)
    name, kwargs = ARCHS[arch]
    return build_model(name, **kwargs)


def gflops_per_mp(model) -> float:
    from tem_keras.models.description import describe

    return float(describe(model)["gflops_per_megapixel"])


def worker(arch: str, precision: str, case: str, size: int, batch: int, runs: int, budget: float) -> dict:
    import numpy as np

    from tem_keras.data.preprocess import Preprocessing
    from tem_keras.hardware import onednn_enabled
    from tem_keras.inference import Predictor, predict

    model = build(arch)
    out = {"arch": arch, "precision": precision, "case": case, "size": size, "batch": batch,
           "gflops_per_mp": gflops_per_mp(model), "onednn": onednn_enabled()}
    rng = np.random.default_rng(0)
    standardise = Preprocessing(remove_outliers=False)
    if case == "bare":
        fn = Predictor.of(model).function(precision)  # what predict runs
        x = rng.normal(size=(batch, size, size, 1)).astype("float32")
        timing = measure(lambda: fn(x).numpy(), runs=runs, budget_s=budget)
        pixels = batch * size * size
    elif case == "predict":
        images = rng.normal(size=(batch, size, size)).astype("float32")
        run = (lambda: predict(model, images, batch_size=batch, preprocessing=standardise,
                               mixed_precision=precision))
        timing = measure(run, runs=runs, budget_s=budget)
        pixels = batch * size * size
    elif case in ("tiled", "large"):
        image = rng.normal(size=(size, size)).astype("float32")
        tiles = dict(tile_size=1024) if case == "tiled" else {}
        # warm-up on one image of the shape the model will see (primitives, buffers): a tile or all
        warm = image[:1024, :1024] if case == "tiled" else image
        predict(model, warm, preprocessing=standardise, mixed_precision=precision, **tiles)
        before = rss_peak_mb()
        run = (lambda: predict(model, image, batch_size=batch, preprocessing=standardise,
                               mixed_precision=precision, **tiles))
        predictor = Predictor.of(model)
        fn, calls = predictor.function(precision), []
        spy = lambda x: calls.append(list(x.shape)) or fn(x)  # noqa: E731  (counts the calls)
        predictor.function = lambda precision=precision: spy
        timing = measure(run, runs=runs, budget_s=budget, warmup=0, min_runs=1)
        out["calls"] = calls[: len(calls) // max(1, timing["runs"])]
        out["rss_peak_mb"] = rss_peak_mb()
        out["rss_growth_mb"] = out["rss_peak_mb"] - before
        pixels = size * size
    else:
        raise ValueError(case)
    out.update(timing)
    t = timing["median_s"]
    out["mpx_per_s"] = pixels / 1e6 / t
    out["images_per_s"] = (batch if case not in ("tiled", "large") else 1) / t
    out["gflop_per_s"] = out["mpx_per_s"] * out["gflops_per_mp"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=5, metavar=("ARCH", "PRECISION", "CASE", "SIZE", "BATCH"),
                        required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed calls at most (≥ 2 runs)")
    args = parser.parse_args(argv)
    arch, precision, case, size, batch = args.worker
    emit(worker(arch, precision, case, int(size), int(batch), args.runs, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
