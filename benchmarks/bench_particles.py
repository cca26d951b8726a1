"""Time ``measure_particles`` before and after the compiled labelling and measurements.

Old: ``tem_keras/particles.py`` as of commit ``e726c7b`` (``git show``), loaded as a separate
module (whole-image ``peak_local_max`` and per-particle ``regionprops_table``); new: this working
tree. Calls alternate (old, new, old, new, ...) so that both see the same load, on masks made by
:func:`tem_keras.data.synthetic.make_image`:

* ``1024 mask``: 1024² bright-field, coverage 0.2, touching fraction 0.25 (~900 particles), the
  exact mask, with and without splitting;
* ``1024 probabilities``: the same blurred, with Gaussian noise, as a probability map, with the
  image (``mean_intensity``, as ``tem-keras predict`` measures);
* ``2048 mask``: 2048², particles of 5 +- 1.5 nm (~8,000 after splitting, from ~7,400 connected
  components).

Each case checks that the label images are identical and reports the largest difference of
every column. Prints wall-clock and CPU time per call (median), the ratios old / new and the
load average; writes ``benchmarks/results/particles.json``.

Usage::

    python benchmarks/bench_particles.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "e726c7b7ee0fafdac56ad56ec6361d779bfc88df"


def load_old():
    """``tem_keras.analysis.particles`` as of :data:`OLD_COMMIT`, imported as ``old_particles``."""
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:tem_keras/particles.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from .errors", "from tem_keras.errors")
    source = source.replace("from .validation", "from tem_keras.validation")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "old_particles.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_particles", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def make_cases(quick: bool):
    from scipy import ndimage as ndi

    from tem_keras.data.synthetic import make_image

    small = make_image(1024, "bright-field", coverage=0.2, touching_fraction=0.25, seed=1)
    rng = np.random.default_rng(0)
    blurred = ndi.gaussian_filter(small.mask.astype(np.float32), 1.5)
    noisy = ndi.gaussian_filter(blurred + rng.normal(0, 0.15, blurred.shape), 0.7)
    cases = {
        "1024 mask, split": (small.mask, {}),
        "1024 mask, no split": (small.mask, {"split_touching": False}),
        "1024 probabilities + image, split": (np.clip(noisy, 0, 1).astype(np.float32),
                                              {"image": small.image}),
    }
    if not quick:
        large = make_image(2048, "bright-field", coverage=0.2, touching_fraction=0.25, seed=2,
                           particle_diameter_nm=(5, 1.5))
        cases["2048 mask, split"] = (large.mask, {})
    return cases, small.pixel_size_nm


def differences(old_table, new_table) -> dict:
    """Largest absolute difference per column (0 where identical)."""
    out = {}
    for column in old_table.columns:
        a, b = old_table[column].to_numpy(), new_table[column].to_numpy()
        if a.dtype.kind == "f":
            out[column] = float(np.nanmax(np.abs(a - b), initial=0.0))
        else:
            out[column] = float(np.count_nonzero(a != b))
    return out


def timed(func, *args, **kwargs):
    """``func(*args, **kwargs)``, its wall-clock time and CPU time (all threads)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls of each (default 3)")
    parser.add_argument("--quick", action="store_true", help="1024² cases only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "particles.json"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from benchmarks.common import cpu_info
    from tem_keras.analysis import particles as new

    old = load_old()
    start = time.perf_counter()
    new.measure_particles(np.zeros((64, 64), bool), 1.0)  # Numba: import, load or compile
    first_call = time.perf_counter() - start
    cases, pixel_size = make_cases(args.quick)
    print(f"first call of the new code (Numba kernels from their cache or compiled): "
          f"{first_call:.2f} s; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results = {}
    for name, (mask, options) in cases.items():
        load_before = os.getloadavg()
        runs = {"old": {"wall_s": [], "cpu_s": []}, "new": {"wall_s": [], "cpu_s": []}}
        for _ in range(args.repeat):
            for which, module in (("old", old), ("new", new)):
                (table, labels), wall, cpu = timed(module.measure_particles, mask, pixel_size,
                                                   return_labels=True, **options)
                runs[which]["wall_s"].append(round(wall, 4))
                runs[which]["cpu_s"].append(round(cpu, 4))
                runs[which]["result"] = (table, labels)
        (old_table, old_labels), (new_table, new_labels) = (runs["old"].pop("result"),
                                                            runs["new"].pop("result"))
        for run in runs.values():
            run["median_wall_s"] = statistics.median(run["wall_s"])
            run["median_cpu_s"] = statistics.median(run["cpu_s"])
        entry = {
            "shape": list(mask.shape), "options": sorted(options), "particles": len(new_table),
            "labels_identical": bool(np.array_equal(old_labels, new_labels)),
            "columns_identical": list(old_table.columns) == list(new_table.columns)
            and bool((old_table.dtypes == new_table.dtypes).all()),
            "max_difference": differences(old_table, new_table), **runs,
            "ratio_wall": runs["old"]["median_wall_s"] / runs["new"]["median_wall_s"],
            "ratio_cpu": runs["old"]["median_cpu_s"] / runs["new"]["median_cpu_s"],
            "load_average_before": load_before, "load_average_after": os.getloadavg()}
        results[name] = entry
        inexact = {k: f"{v:.1e}" for k, v in entry["max_difference"].items() if v}
        old_s, new_s = runs["old"]["median_wall_s"], runs["new"]["median_wall_s"]
        print(f"{name:36s} {entry['particles']:6d} particles  old {old_s:7.2f} s  "
              f"new {new_s:6.3f} s  ratio {entry['ratio_wall']:5.1f}x wall,"
              f" {entry['ratio_cpu']:5.1f}x CPU  load {load_before[0]:.1f}-{os.getloadavg()[0]:.1f}"
              f"  labels identical: {entry['labels_identical']}; differing columns: "
              f"{inexact or 'none'}")
    out = {"old": f"git {OLD_COMMIT}:tem_keras/particles.py", "new": "working tree",
           "repeat": args.repeat, "first_call_new_s": first_call, "cases": results,
           "machine": {**cpu_info(), "load_average_end": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
