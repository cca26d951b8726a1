"""The machine's matrix-multiply rate with TensorFlow: 4096² × 4096², float32 and bfloat16.

``python benchmarks/matmul.py`` prints one ``RESULT {json}`` line:
``{"float32": {"gflop_per_s": ...}, "bfloat16": {...}}`` (2·n³ FLOPs per product, median of 5
after 2 warm-up products). This is the ceiling the models' GFLOP/s are compared with;
``run_all.py`` measures it with oneDNN on x86 (TensorFlow's faster matrix multiply there).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, measure  # noqa: E402


def matmul_rate(n: int = 4096, runs: int = 5) -> dict:
    import tensorflow as tf

    from tem_keras.hardware import onednn_enabled

    out = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
        b = tf.cast(tf.random.normal((n, n), seed=2), dtype)
        product = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
        timing = measure(lambda: product(a, b).numpy(), runs=runs, budget_s=30, warmup=2)
        out[dtype] = {**timing, "n": n, "gflop_per_s": 2 * n**3 / 1e9 / timing["median_s"],
                      "onednn": onednn_enabled()}
    return out


if __name__ == "__main__":
    emit(matmul_rate())
