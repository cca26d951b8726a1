"""Frames per second of a 1024² stack: one process against a LocalCluster on the same machine.

Cases, all on the same ``.npy`` stack (random frames; speed does not depend on content) with
the same model (untrained weights of a zoo preset, saved as ``.keras``):

``one_process``        ``predict_stack(model, stack)`` consumed frame by frame (no output)
``one_process_store``  ``predict_stack(model_path, stack, out="x.zarr")``: the same chunks and
                       store as the cluster, in this process; one call loads the model once (as
                       from the command line), and that load is inside its time
``local_cluster_N``    ``predict_stack(..., out="x.zarr", client=Client(LocalCluster(N)))``, N
                       worker processes with one Dask thread each

``one_process`` and the cluster are timed warm: a first, short job (2 chunks) loads the model
and traces it, and its time is reported as ``startup_s`` (for the cluster: starting the
workers, importing TensorFlow in each, loading the model). TensorFlow's own thread pools are left at their defaults (each
worker process sizes them to all cores) unless ``--worker-threads`` sets
``TF_NUM_INTRAOP_THREADS`` for the workers. On a 2-core machine there is no spare core for a
second worker: the figure to watch is the cluster's overhead (ratio below 1), not a speed-up.

Usage::

    python benchmarks/bench_cluster.py                      # 32 frames of 1024², 2 workers
    python benchmarks/bench_cluster.py --frames 8 --size 512 --model residual_unet_sytwu

Results go to ``benchmarks/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, cpu_info, loadavg  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def case_result(n_frames: int, seconds: float, startup: float, load_before: float) -> dict:
    return {"frames": n_frames, "seconds": round(seconds, 3), "fps": round(n_frames / seconds, 4),
            "startup_s": round(startup, 2), "load": [load_before, loadavg()[0]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-frames", type=int, default=4)
    parser.add_argument("--model", default="unet_horwath_1024", help="zoo preset (tem-keras models)")
    parser.add_argument("--worker-threads", type=int, default=None,
                        help="TF_NUM_INTRAOP_THREADS of each worker (default: TensorFlow's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cluster.json")
    args = parser.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster

    from tem_keras.distributed import PredictionStore
    from tem_keras.artifacts import load as load_model
    from tem_keras.inference import predict_stack
    from tem_keras.models.registry import build_model

    work = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    try:
        model = build_model(args.model)
        model_path = work / "model.keras"
        model.save(model_path)
        rng = np.random.default_rng(0)
        stack = work / "stack.npy"
        np.save(stack, rng.normal(100.0, 10.0, (args.frames, args.size, args.size)).astype(np.float32))
        warm = work / "warm.npy"
        np.save(warm, np.load(stack)[: 2 * args.chunk_frames])
        print(f"{args.frames} frames of {args.size}², model {args.model}, chunks of "
              f"{args.chunk_frames} frames; load {loadavg()}", flush=True)
        cases = {}

        load = loadavg()[0]
        startup, bundle = timed(lambda: load_model(model_path))
        startup += timed(lambda: sum(1 for _ in predict_stack(bundle, warm)))[0]
        seconds, n = timed(lambda: sum(1 for _ in predict_stack(bundle, stack)))
        cases["one_process"] = case_result(n, seconds, startup, load)
        print("one_process", cases["one_process"], flush=True)

        load = loadavg()[0]  # one call, one model load (as from the command line): no warm-up
        seconds, _ = timed(lambda: predict_stack(model_path, stack, out=work / "s1.zarr",
                                                 chunk_frames=args.chunk_frames))
        cases["one_process_store"] = case_result(args.frames, seconds, 0.0, load)
        print("one_process_store", cases["one_process_store"], flush=True)

        env = {"PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "")
                                                             .split(os.pathsep) if p])}
        if args.worker_threads:
            env["TF_NUM_INTRAOP_THREADS"] = str(args.worker_threads)
        load = loadavg()[0]
        start = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env=env)
        client = Client(cluster)
        try:
            predict_stack(model_path, warm, out=work / "wN.zarr", chunk_frames=args.chunk_frames,
                          client=client)
            startup = time.perf_counter() - start
            seconds, report = timed(lambda: predict_stack(model_path, stack, out=work / "sN.zarr",
                                                          chunk_frames=args.chunk_frames, client=client))
            name = f"local_cluster_{args.workers}"
            cases[name] = case_result(args.frames, seconds, startup, load)
            cases[name]["chunks_per_worker"] = report.workers
            same = np.array_equal(report.masks[:], PredictionStore(work / "s1.zarr").masks[:])
            cases[name]["masks_equal_one_process_store"] = bool(same)
            print(name, cases[name], flush=True)
        finally:
            client.close()
            cluster.close()

        one, many = cases["one_process"]["fps"], cases[f"local_cluster_{args.workers}"]["fps"]
        result = {"machine": cpu_info(), "model": args.model, "frames": args.frames,
                  "size": args.size, "chunk_frames": args.chunk_frames, "workers": args.workers,
                  "worker_intraop_threads": args.worker_threads, "cases": cases,
                  "ratio_cluster_over_one_process": round(many / one, 3),
                  "loadavg_end": loadavg(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        print(f"\n{'':24s}{'fps':>9s}{'startup s':>11s}{'load (1 min) before→after':>28s}")
        for key, c in cases.items():
            print(f"{key:24s}{c['fps']:9.3f}{c['startup_s']:11.1f}{c['load'][0]:16.2f} → {c['load'][1]:.2f}")
        print(f"cluster / one process: {result['ratio_cluster_over_one_process']:.2f}× "
              f"on {os.cpu_count()} logical CPUs")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"results in {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
