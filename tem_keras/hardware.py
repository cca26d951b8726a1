"""The machine's choices, for training and inference alike: precision policies (bfloat16 where the
CPU has it, float16 on tensor-core GPUs), oneDNN kernels, the allocator, and the
:class:`PerformanceHint` warnings about them.

Mixed precision ``"auto"``: ``mixed_float16`` on GPUs with compute capability ≥ 7.0 (tensor cores),
``mixed_bfloat16`` on CPUs with AVX512_BF16 or AMX, float32 elsewhere. Outputs stay float32.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_supports_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512_BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_BF16_SPEEDUP: dict = {}

#: ``"auto"`` precision picks bfloat16 on a CPU when its measured speed-up is at least this
BFLOAT16_MIN_SPEEDUP = 1.25


def bfloat16_speedup(n: int = 1024, repeats: int = 5) -> float:
    """Measured speed of bfloat16 over float32 matrix products on this CPU (cached per process).

    Native bfloat16 instructions do not make bfloat16 faster by themselves: with AMX tiles a
    product runs several times faster than in float32, with AVX512_BF16 dot products alone it runs
    about half as fast (oneDNN's ``avx512_core_bf16`` kernels, measured on a 2-core Xeon: 165
    against 300 GFLOP/s). So ``"auto"`` precision times one ``n``² product in each precision
    (best of ``repeats``, about 0.1 s) instead of trusting the CPU flags. 0.0 without bfloat16
    instructions; ``TEM_KERAS_CPU_BFLOAT16=1`` (or ``0``) skips the measurement (speed-up taken as
    2.0, or 0.0).
    """
    forced = os.environ.get("TEM_KERAS_CPU_BFLOAT16")
    if forced in ("0", "1"):
        return 2.0 if forced == "1" else 0.0
    if "value" not in _BF16_SPEEDUP:
        if not cpu_supports_bfloat16():
            _BF16_SPEEDUP["value"] = 0.0
        else:
            import time

            import tensorflow as tf

            with tf.device("/CPU:0"):
                a = tf.random.stateless_normal((n, n), seed=(1, 2))
                operands = {dtype: tf.cast(a, dtype) for dtype in (tf.float32, tf.bfloat16)}
                best = {dtype: float("inf") for dtype in operands}
                for i in range(repeats + 1):  # interleaved, so that other load hits both alike
                    for dtype, x in operands.items():
                        t = time.perf_counter()
                        tf.matmul(x, x).numpy()
                        if i:  # the first round is a warm-up (kernel selection, buffers)
                            best[dtype] = min(best[dtype], time.perf_counter() - t)
            _BF16_SPEEDUP["value"] = best[tf.float32] / best[tf.bfloat16]
    return _BF16_SPEEDUP["value"]


#: the one precision vocabulary of training and inference (``mixed_precision=``)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: other spellings accepted everywhere: Keras's policy names and booleans
PRECISION_ALIASES = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16", "off": "float32",
                      False: "float32", None: "float32", True: "auto"}


def choose_precision(mode="auto") -> str:
    """The compute precision for ``mode``: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    The one chooser of :func:`tem_keras.fit` and :func:`tem_keras.predict`. ``mode`` is one of
    :data:`PRECISIONS` (or ``"mixed_bfloat16"``, ``"mixed_float16"``, ``True``, ``False``).
    ``"auto"``: bfloat16 on GPUs of compute capability ≥ 8, float16 on 7.x; on CPUs bfloat16 where
    it is measured faster than float32 (:func:`bfloat16_speedup` ≥ :data:`BFLOAT16_MIN_SPEEDUP`);
    float32 otherwise. Weights and outputs stay float32 in every case (:func:`dtype_policy`).

    Raises
    ------
    ValueError
        For any other value.
    """
    try:
        mode = PRECISION_ALIASES.get(mode, mode)
    except TypeError:  # unhashable
        pass
    if mode not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS} (or 'mixed_bfloat16', "
                         f"'mixed_float16'), got {mode!r}")
    if mode != "auto":
        return mode
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "bfloat16" if capability >= (8, 0) else "float16" if capability >= (7, 0) else "float32"
    return "bfloat16" if bfloat16_speedup() >= BFLOAT16_MIN_SPEEDUP else "float32"


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy of a precision from :func:`choose_precision`."""
    return "float32" if precision == "float32" else f"mixed_{precision}"


def float32_model(model):
    """A float32 copy of a mixed-precision model (the same weights), or the model itself.

    Exports compute in float32 so that colleagues get the same numbers on any machine, whatever
    precision was used for training.
    """
    import keras

    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_ALLOCATOR_TUNED: dict = {}


def tune_allocator(trim_threshold: int = 2**31 - 1) -> bool:
    """Keep freed tensor buffers in the process instead of returning them to the OS (glibc only).

    A model call allocates and frees the same large activation buffers every time. By default
    glibc serves blocks above 32 MiB (or its dynamic threshold) with ``mmap`` and gives them back
    with ``munmap`` (and trims the heap top), so every call page-faults the same memory in again.
    This calls ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, trim_threshold)`` — the
    same as setting ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` before Python starts —
    so the buffers are reused. Peak memory is unchanged; memory freed after the peak stays with
    the process (reused by the next call) rather than going back to the OS.

    Idempotent; a no-op returning False off Linux/glibc, when ``TEM_KERAS_TUNE_ALLOCATOR=0``, or
    when the user already set ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` (theirs win).

    Returns
    -------
    bool
        Whether the allocator is tuned (now or by an earlier call).
    """
    if "done" in _ALLOCATOR_TUNED:
        return _ALLOCATOR_TUNED["done"]
    ok = False
    if (os.environ.get("TEM_KERAS_TUNE_ALLOCATOR", "1") != "0"
            and not any(k in os.environ for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"))):
        import platform

        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold), 2**31 - 1)))
            except (OSError, AttributeError):
                ok = False
    _ALLOCATOR_TUNED["done"] = ok
    return ok


class PerformanceHint(UserWarning):
    """How this machine could run tem_keras faster (shown once per process)."""


#: networks with up to this many bytes of weights get :func:`onednn_hint` (on a 2-core AVX2 AMD
#: EPYC, oneDNN ran the residual UNet 2.9× and the Horwath UNet 1.9× faster, UNet-64 with 124 MB
#: of weights 2.2× slower: ``benchmarks/ab_library.py --only onednn``)
ONEDNN_HINT_MAX_WEIGHT_BYTES = 64 * 1024**2
_ONEDNN_HINTED: dict = {}


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process (None: cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # noqa: BLE001 - a private API; no hint rather than an error
        return None


def saved_weight_bytes(path) -> int | None:
    """Bytes of a saved model's weights (optimizer state excluded), read without TensorFlow.

    ``path`` is a ``.keras`` file or a run/export folder holding ``best.keras`` or
    ``model.keras``; None when there is no such file or it cannot be read.
    """
    import zipfile
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        path = next((path / n for n in ("best.keras", "model.keras") if (path / n).is_file()), path)
    if path.suffix.lower() != ".keras" or not path.is_file():
        return None
    try:
        import h5py

        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
            sizes = []
            h5.visititems(lambda name, obj: sizes.append(obj.size * obj.dtype.itemsize)
                          if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer/") else None)
            return int(sum(sizes))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def network_weight_bytes(model, options: dict | None = None, timeout: float = 300) -> int | None:
    """Bytes of the weights of ``build_model(model, **options)`` (float32), counted in a child
    process so that this one has not started TensorFlow yet; None when it cannot be built (the
    caller's own build then reports why)."""
    import subprocess
    import sys

    code = ("import json, sys; from tem_keras.models import build_model; "
            "print('WEIGHTS', 4 * build_model(json.loads(sys.argv[1]), **json.loads(sys.argv[2])).count_params())")
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(model), json.dumps(options or {})],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired, TypeError, ValueError):
        return None
    lines = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("WEIGHTS ")]
    return int(lines[-1]) if done.returncode == 0 and lines else None


def onednn_choice_open() -> bool:
    """Whether this process may still pick TensorFlow's CPU kernels: an x86 CPU, TensorFlow not
    yet imported and ``TF_ENABLE_ONEDNN_OPTS`` not set by the user."""
    import platform
    import sys

    return ("TF_ENABLE_ONEDNN_OPTS" not in os.environ and "tensorflow" not in sys.modules
            and platform.machine().lower() in ("x86_64", "amd64"))


def onednn_pays(weight_bytes: float | None) -> bool:
    """Whether a network with ``weight_bytes`` of weights should run TensorFlow's oneDNN kernels
    on this machine: x86 and at most :data:`ONEDNN_HINT_MAX_WEIGHT_BYTES` (None: unknown, no)."""
    import platform

    return (weight_bytes is not None and weight_bytes <= ONEDNN_HINT_MAX_WEIGHT_BYTES
            and platform.machine().lower() in ("x86_64", "amd64"))


def prefer_onednn(weight_bytes: float | None) -> bool:
    """Set ``TF_ENABLE_ONEDNN_OPTS=1`` for this process when it pays and can still act.

    For the command line, which knows the network before TensorFlow is imported: on x86 CPUs, for
    networks with up to :data:`ONEDNN_HINT_MAX_WEIGHT_BYTES` of weights, unless the user set the
    variable (:func:`onednn_choice_open`). Where TensorFlow turns oneDNN on by default (AVX-512
    VNNI/BF16, AMX) this changes nothing; on AVX2 CPUs the papers' small networks predict 2–3×
    and train 2.7–2.9× faster (see :func:`onednn_hint`). Returns whether it set the variable.
    """
    if not (onednn_pays(weight_bytes) and onednn_choice_open()):
        return False
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return True


def onednn_hint(weight_bytes: float) -> str | None:
    """Advice to turn on TensorFlow's oneDNN kernels, the first time it applies in a process.

    TensorFlow turns oneDNN on by default only on x86 CPUs with AVX-512 VNNI, AVX-512 BF16 or AMX
    (TensorFlow RFC 400) and runs Eigen kernels elsewhere, e.g. on AVX2 CPUs. For the papers'
    small networks oneDNN is 2–3× faster there, for wide ones it can be slower, and the switch
    (``TF_ENABLE_ONEDNN_OPTS=1``) only acts before TensorFlow is imported: tem_keras cannot flip
    it, only say so. None when oneDNN is on, the user set the variable, the CPU is not x86, the
    network has more than :data:`ONEDNN_HINT_MAX_WEIGHT_BYTES` of weights, or it was said before.
    """
    if ("said" in _ONEDNN_HINTED or "TF_ENABLE_ONEDNN_OPTS" in os.environ
            or not onednn_pays(weight_bytes) or onednn_enabled() is not False):
        return None
    _ONEDNN_HINTED["said"] = True
    return ("TensorFlow runs its Eigen kernels on this CPU (its oneDNN kernels are on by default only "
            "on CPUs with AVX-512 VNNI, AVX-512 BF16 or AMX). Small networks like this one predicted and "
            "trained 2-3x faster with oneDNN on an AVX2 CPU: start Python with TF_ENABLE_ONEDNN_OPTS=1 "
            "set (the tem-keras command does so itself), or set TF_ENABLE_ONEDNN_OPTS=0 to keep Eigen "
            "and silence this note; `python benchmarks/ab_library.py --only onednn` compares both here.")
