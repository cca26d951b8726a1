"""The light runtime against TensorFlow: one 1024² image segmented by a fresh process.

For each architecture an export folder is made from a bare, seeded model (random weights: the time
does not depend on them) in a subprocess, with a synthetic 1024² micrograph as ``image.tif``. Then,
interleaved, each ``--runs`` times, in fresh processes (wall-clock seconds of the whole command):

``predict.py``    ``python EXPORT/predict.py image.tif -o OUT`` (onnxruntime + NumPy; the target
                  of issue 19 is ≤ 2.5 s on 2 cores)
``cli_auto``      ``tem-keras predict EXPORT image.tif -o OUT`` (chooses model.onnx, no TensorFlow)
``cli_tensorflow````tem-keras predict EXPORT image.tif -o OUT --engine tensorflow`` (the path of
                  before: TensorFlow start-up, Keras model load, traced call)

and, in one process with both engines warm, the seconds per image of ``predict`` with
``engine="onnx"`` and ``engine="tensorflow"`` (what the ``auto`` rule rests on). The masks of the
three commands are compared pixel by pixel. The load average (1 min) is recorded before and after
every command: numbers taken with a load above ~0.5 per core are not comparable.

Usage::

    python benchmarks/bench_runtime.py                        # residual_unet_sytwu, 5 runs
    python benchmarks/bench_runtime.py --archs residual_unet_sytwu unet_horwath_1024 --runs 3

Results go to ``benchmarks/results/runtime.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUIET_ENV, RESULTS, ROOT, cpu_info, emit, loadavg, run_worker

COMMANDS = ("predict.py", "cli_auto", "cli_tensorflow")


def make_export(arch: str, folder: Path, size: int) -> None:
    """Export a bare seeded ``arch`` to ``folder/export`` and write ``folder/image.tif``."""
    import keras
    import numpy as np
    import tifffile

    import tem_keras
    from tem_keras.data.synthetic import make_image
    from tem_keras.models import build_model

    keras.utils.set_random_seed(0)
    tem_keras.export(build_model(arch), folder / "export", formats=("keras", "onnx"), verbose=False,
                     overwrite=True)
    tifffile.imwrite(folder / "image.tif", make_image(size, seed=0).image.astype(np.float32))


def in_process(folder: Path, runs: int) -> dict:
    """Seconds per image of predict with each engine, both warm, interleaved (best and median)."""
    import tifffile

    import tem_keras

    image = tifffile.imread(folder / "image.tif")
    bundle = tem_keras.load(folder / "export")
    times = {"onnx": [], "tensorflow": []}
    for engine in times:  # warm-up: session, tracing
        tem_keras.predict(bundle, image, engine=engine)
    for _ in range(runs):
        for engine in times:
            start = time.perf_counter()
            tem_keras.predict(bundle, image, engine=engine)
            times[engine].append(time.perf_counter() - start)
    return {f"in_process_{k}_s": {"median": statistics.median(v), "min": min(v)} for k, v in times.items()}


def command(name: str, folder: Path, out: Path) -> list[str]:
    export, image = str(folder / "export"), str(folder / "image.tif")
    if name == "predict.py":
        return [sys.executable, str(folder / "export" / "predict.py"), image, "-o", str(out), "--quiet"]
    engine = "auto" if name == "cli_auto" else "tensorflow"
    return [sys.executable, "-m", "tem_keras.cli", "predict", export, image, "-o", str(out), "--quiet",
            "--engine", engine]


def fresh_processes(folder: Path, runs: int) -> dict:
    """Wall-clock seconds of each command in fresh processes, interleaved; masks compared."""
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times = {name: [] for name in COMMANDS}
    loads = []
    for run in range(runs):
        for name in COMMANDS:
            out = folder / f"out_{name}_{run}"
            before = loadavg()[0]
            start = time.perf_counter()
            done = subprocess.run(command(name, folder, out), check=False, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - start
            if done.returncode:
                raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
            times[name].append(seconds)
            loads.append((before, loadavg()[0]))
    import numpy as np
    from PIL import Image

    masks = {name: np.asarray(Image.open(folder / f"out_{name}_0" / "image_mask.png")) for name in COMMANDS}
    differing = {name: int(np.count_nonzero(masks[name] != masks["cli_tensorflow"])) for name in COMMANDS}
    out = {f"{name}_s": {"median": statistics.median(v), "min": min(v), "all": [round(t, 3) for t in v]}
           for name, v in times.items()}
    out["pixels_differing_from_tensorflow"] = differing
    out["load_1min"] = {"max": max(max(pair) for pair in loads), "mean": statistics.mean(sum(loads, ()))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["residual_unet_sytwu"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # a subprocess: TensorFlow is imported here only
        case, folder = args.worker[0], Path(args.worker[1])
        if case == "export":
            make_export(args.arch, folder, args.size)
            emit({})
        else:
            emit(in_process(folder, args.runs))
        return

    script = Path(__file__).resolve()
    results = {"machine": cpu_info(), "size": args.size, "runs": args.runs, "models": {}}
    print(f"{results['machine']['cpu']}, {results['machine']['logical_cpus']} logical CPUs; "
          f"load average {loadavg()}")
    for arch in args.archs:
        with tempfile.TemporaryDirectory(prefix="bench_runtime_") as tmp:
            folder = Path(tmp)
            run_worker(script, ["--worker", "export", str(folder), "--arch", arch, "--size", str(args.size)])
            row = fresh_processes(folder, args.runs)
            row.update(run_worker(script, ["--worker", "in_process", str(folder), "--runs", str(args.runs)]))
        results["models"][arch] = row
        light, heavy = row["predict.py_s"]["median"], row["cli_tensorflow_s"]["median"]
        print(f"\n{arch}, one {args.size}² image, fresh process (median of {args.runs}; min):")
        for name in COMMANDS:
            print(f"  {name:15s} {row[f'{name}_s']['median']:6.2f} s  ({row[f'{name}_s']['min']:.2f})")
        print(f"  TensorFlow / predict.py: {heavy / light:.1f}×; pixels differing from TensorFlow: "
              f"{row['pixels_differing_from_tensorflow']}; load (1 min) mean {row['load_1min']['mean']:.2f}, "
              f"max {row['load_1min']['max']:.2f}")
        print(f"  in process, warm, per image: onnx {row['in_process_onnx_s']['median']:.3f} s, "
              f"tensorflow {row['in_process_tensorflow_s']['median']:.3f} s")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "runtime.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
