"""Latency of live segmentation (``tem_keras.watch``): micrograph complete on disk → mask written.

A writer thread plays the microscope: every ``--period`` seconds it writes one ``--size``² synthetic
bright-field micrograph (ImageJ TIFF with pixel size, float32, made beforehand) into a folder, in
4 pieces over 0.2 s. ``tem_keras.watch`` runs in the main thread on that folder with ``--settle`` and
``--interval`` and stops after ``--frames`` files. From the ledger (``watch_done.jsonl``) it
reports per frame: ``latency_s`` (the final version of the file first seen → its mask written,
which includes the settle time), ``read_s``, ``predict_s``, ``write_s`` and ``measure_s`` (the
particle table, after the mask; a frame waits for the previous one's); median and maximum,
with the 1-minute load average before and after (numbers taken under load are not comparable).
Results go to ``benchmarks/results/watch.json``.

The model: ``--model RUN_OR_EXPORT``, or by default a residual UNet (``residual_unet_sytwu``)
trained for ``--train-seconds`` on 256² synthetic images (cached in the system's temporary
folder), so that masks, and the particle measurement that follows, look like real ones.

Usage::

    python benchmarks/bench_watch.py                       # 1024², 10 frames, 3 s apart
    python benchmarks/bench_watch.py --size 2048 --frames 5 --period 5 --model runs/my_run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cpu_info, loadavg  # noqa: E402


def trained_model(seconds: float) -> Path:
    """A residual UNet trained briefly on synthetic data (made once, then reused)."""
    import tem_keras
    from tem_keras.data.synthetic import make_dataset

    cache = Path(tempfile.gettempdir()) / f"tem_keras_bench_watch_{int(seconds)}s"
    run = cache / "run"
    if not (run / "best.keras").is_file():
        data = make_dataset(cache / "data", n_images=12, size=256, seed=0, progress=False,
                            overwrite=True)
        tem_keras.fit(data, "residual_unet_sytwu", time_limit=seconds, patch_size=128,
                      run_dir=run, overwrite=True, verbose=0)
    return run


def micrographs(scratch: Path, frames: int, size: int) -> list[bytes]:
    """The TIFF files the microscope will write, made beforehand (synthesis is slower than a
    camera and would compete with the watch for the cores)."""
    from tem_keras.data.synthetic import make_image
    from tem_keras.io import write_image

    files = []
    for i in range(frames):
        image = make_image(size, seed=i, dose=200)
        files.append(write_image(scratch / f"frame{i}.tif", image.image, image.pixel_size_nm,
                                 overwrite=True).read_bytes())
    return files


def microscope(folder: Path, files: list[bytes], period: float) -> None:
    """Write ``files`` into ``folder``, one every ``period`` s, each in 4 pieces over 0.2 s."""
    for i, data in enumerate(files):
        start = time.monotonic()
        cut = [len(data) * k // 4 for k in range(5)]
        target = folder / f"frame_{i:04d}.tif"
        for k in range(4):
            with open(target, "wb" if k == 0 else "ab") as handle:
                handle.write(data[cut[k]:cut[k + 1]])
            time.sleep(0.05)
        time.sleep(max(0.0, period - (time.monotonic() - start)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="run or export folder (default: train one)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--period", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--no-split", action="store_true", help="do not split touching particles")
    parser.add_argument("--out", type=Path, default=RESULTS / "watch.json")
    args = parser.parse_args(argv)

    import tem_keras

    model = args.model or trained_model(args.train_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, out = tmp / "microscope", tmp / "live"
        folder.mkdir()
        files = micrographs(tmp, args.frames, args.size)
        writer = threading.Thread(target=microscope, args=(folder, files, args.period), daemon=True)
        load_before = loadavg()
        writer.start()
        report = tem_keras.watch(model, folder, out, settle=args.settle, interval=args.interval,
                                 stop_after=args.frames, timeout=60 + 3 * args.period,
                                 split_touching=not args.no_split)
        writer.join()
        entries = [json.loads(line) for line in (out / "watch_done.jsonl").read_text().splitlines()]
    keys = ("latency_s", "read_s", "predict_s", "write_s", "measure_s")
    result = {
        "size": args.size, "frames": len(entries), "period_s": args.period, "settle_s": args.settle,
        "interval_s": args.interval, "split_touching": not args.no_split, "model": str(model),
        "median": {k: round(statistics.median(e[k] for e in entries), 4) for k in keys},
        "max": {k: round(max(e[k] for e in entries), 4) for k in keys},
        "per_frame": [{k: e[k] for k in ("file", *keys)} for e in entries],
        "particles": report.particles, "load": [load_before, loadavg()], "cpu": cpu_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    median = result["median"]
    print(f"{args.size}² frames, settle {args.settle} s, interval {args.interval} s: latency median "
          f"{median['latency_s']:.2f} s, max {result['max']['latency_s']:.2f} s (median read "
          f"{median['read_s']:.2f}, predict {median['predict_s']:.2f}, write {median['write_s']:.3f} s; "
          f"then particles {median['measure_s']:.2f} s); load {load_before[0]:.1f} → {loadavg()[0]:.1f}")
    return result


if __name__ == "__main__":
    main()
