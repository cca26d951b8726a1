"""Shared helpers of the benchmarks: timing, machine description, load average, subprocess workers."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
#: the glibc tuning of the PyTorch peer (and of ``tem_keras.hardware.tune_allocator``)
TUNED_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore", "NO_ALBUMENTATIONS_UPDATE": "1"}


def loadavg() -> list[float]:
    try:
        return [float(v) for v in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return [float("nan")] * 3


def wait_for_quiet(limit: float = 0.5, max_wait: float = 0.0, poll: float = 10.0) -> float:
    """Sleep until the 1-minute load average is below ``limit`` or ``max_wait`` s have passed;
    returns the load average when it returns."""
    start = time.monotonic()
    while loadavg()[0] >= limit and time.monotonic() - start < max_wait:
        time.sleep(poll)
    return loadavg()[0]


def measure(fn, *, runs: int = 5, budget_s: float = 60.0, warmup: int = 1, min_runs: int = 2) -> dict:
    """Call ``fn`` ``warmup`` times, then time up to ``runs`` calls (fewer — but at least
    ``min_runs`` — when they take longer than ``budget_s`` in all). Median, min, all times and the
    load average before and after."""
    for _ in range(warmup):
        fn()
    load_before = loadavg()[0]
    times = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times),
            "times_s": [round(t, 5) for t in times], "load": [load_before, loadavg()[0]]}


def cpu_info() -> dict:
    model, flags = platform.processor(), ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    if not model or model == "x86_64":
        try:
            model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    fl = set(flags.split())
    return {"cpu": model, "logical_cpus": os.cpu_count(),
            "avx2": "avx2" in fl, "avx512f": "avx512f" in fl, "avx512_bf16": "avx512_bf16" in fl,
            "amx_bf16": "amx_bf16" in fl,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def rss_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: Path, args: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``python script args`` in a fresh process; parse its last ``RESULT {json}`` line.
    ``env`` adds to the environment; a value None removes the variable."""
    full_env = {k: v for k, v in {**os.environ, **QUIET_ENV, **(env or {})}.items() if v is not None}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"{script.name} {' '.join(args)} failed (exit {done.returncode})")
    return json.loads(lines[-1][7:])


def emit(result) -> None:
    print("RESULT " + json.dumps(result), flush=True)
