"""Time the classical baselines on one 1792x1920 micrograph.

Prints the time per image of ``pseudo_labels`` (ours, 256 and 65536 grey levels, against the
straightforward scikit-image implementation of the same steps kept in
``tests/test_baselines.py``), ``otsu_segment`` and ``fourier_filter``, the dice between our labels
and the reference, and writes everything to ``benchmarks/results/baselines.json``.

The image is the real HAADF-STEM micrograph
``../shared/data/formats/temul_toolkit_experimental/example_Au_nanoparticle.emd`` cropped to
1792x1920 when present, else a synthetic one (dark disks on a noisy background).

Usage::

    python benchmarks/bench_baselines.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1792, 1920)
REAL = ROOT.parent / "shared" / "data" / "formats" / "temul_toolkit_experimental" / \
    "example_Au_nanoparticle.emd"


def load_image():
    """(image, description, particles polarity)."""
    if REAL.exists():
        from rsciio.emd import file_reader

        data = file_reader(str(REAL))[0]["data"].astype(np.float32)
        return data[:SHAPE[0], :SHAPE[1]], f"{REAL.name} cropped to {SHAPE}", "bright"
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    image = np.full(SHAPE, 0.7)
    for _ in range(120):
        centre = rng.uniform(80, np.array(SHAPE) - 80)
        image[disk(tuple(centre), rng.uniform(15, 60), shape=SHAPE)] = 0.3
    image += rng.normal(0, 0.2, SHAPE)
    return image.astype(np.float32), f"synthetic dark disks {SHAPE}", "dark"


def load_reference():
    spec = importlib.util.spec_from_file_location("_test_baselines",
                                                  ROOT / "tests" / "test_baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._reference_pseudo_labels, module._dice


def timed(func, repeat):
    """Result, wall-clock times and CPU times (all threads of the process) of ``repeat`` calls,
    and the time of the first call (imports, Numba compilation or its cache) before them."""
    start = time.perf_counter()
    func()
    first = time.perf_counter() - start
    times, cpu = [], []
    result = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = func()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return result, (times, cpu, first)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-repeat", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "baselines.json"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from tem_keras.analysis import baselines

    reference, dice = load_reference()
    image, description, polarity = load_image()
    print(f"image: {description}, particles {polarity}")
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} (other processes share the CPUs)")

    results = {}
    ours, t = timed(lambda: baselines.pseudo_labels(image, particles=polarity), args.repeat)
    results["pseudo_labels (ours, 256 levels)"] = t
    ours16, t = timed(lambda: baselines.pseudo_labels(image, particles=polarity, levels=65536),
                      args.repeat)
    results["pseudo_labels (ours, 65536 levels)"] = t
    ref, t = timed(lambda: reference(image, particles=polarity), args.reference_repeat)
    results["pseudo_labels (reference, scikit-image)"] = t
    _, t = timed(lambda: baselines.otsu_segment(image, particles=polarity), args.repeat)
    results["otsu_segment"] = t
    _, t = timed(lambda: baselines.fourier_filter(image), args.repeat)
    results["fourier_filter"] = t

    summary = {name: {"median_s": statistics.median(wall), "min_s": min(wall),
                      "median_cpu_s": statistics.median(cpu), "runs": len(wall),
                      "first_call_s": first}
               for name, (wall, cpu, first) in results.items()}
    dice_256 = float(dice(ours, ref))
    dice_65536 = float(dice(ours16, ref))
    for name, s in summary.items():
        print(f"{name:42s} median {s['median_s']:.3f} s   min {s['min_s']:.3f} s   "
              f"CPU {s['median_cpu_s']:.3f} s   ({s['runs']} runs; first call "
              f"{s['first_call_s']:.2f} s)")
    speedup = (summary["pseudo_labels (reference, scikit-image)"]["median_s"]
               / summary["pseudo_labels (ours, 256 levels)"]["median_s"])
    print(f"dice(ours 256 levels, reference)   = {dice_256:.4f}")
    print(f"dice(ours 65536 levels, reference) = {dice_65536:.4f}")
    print(f"speed-up of pseudo_labels: {speedup:.1f}x")
    out = {
        "image": description,
        "shape": list(image.shape),
        "particles": polarity,
        "timings": summary,
        "dice_pseudo_labels_vs_reference": {"256_levels": dice_256, "65536_levels": dice_65536},
        "pseudo_labels_speedup": speedup,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
