"""Training throughput (patches/s) per architecture, batch size and number of CPU replicas, and the
data pipeline's rate against it.

``train``     ``model.fit`` on in-memory random 512² patches (Adam 1e-4, sparse cross-entropy, the
              same compile as ``tem_keras.fit``): a warm-up epoch, then a timed epoch of ``steps``
              steps; ``replicas=2`` splits each batch over 2 logical CPU devices with
              ``MirroredStrategy`` (``tem_keras.training.strategy.choose_strategy(2)``), ``batch`` is per
              replica as in ``tem_keras.fit``.
``pipeline``  patches/s delivered by ``tem_keras.data.pipeline.training_data(...).pipelines["train"]``
              (augmentation on, 512² patches from synthetic 1024² micrographs), iterated without a
              model: it must be well above the train step's patches/s, or training starves.

``python benchmarks/bench_train.py --worker train ARCH BATCH REPLICAS`` or ``--worker pipeline BATCH``
prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import ARCHS  # noqa: E402
from common import emit, loadavg  # noqa: E402

PATCH = 512


def train_worker(arch: str, batch: int, replicas: int, steps: int, precision: str) -> dict:
    import tensorflow as tf

    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras
    import numpy as np

    from tem_keras.training.strategy import choose_strategy
    from tem_keras.models import build_model

    if precision != "float32":
        keras.mixed_precision.set_dtype_policy(f"mixed_{precision}")
    strategy = choose_strategy(replicas) if replicas > 1 else tf.distribute.get_strategy()
    global_batch = batch * replicas
    rng = np.random.default_rng(0)
    x = rng.normal(size=(global_batch * 2, PATCH, PATCH, 1)).astype("float32")
    y = (rng.random((global_batch * 2, PATCH, PATCH)) > 0.7).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(global_batch, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        name, kwargs = ARCHS[arch]
        model = build_model(name, **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)  # trace + warm-up
    load = loadavg()[0]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    step = sorted(times)[1]
    from tem_keras.hardware import onednn_enabled

    return {"arch": arch, "batch": batch, "replicas": replicas, "global_batch": global_batch,
            "onednn": onednn_enabled(),
            "precision": precision, "patch": PATCH, "step_s": step, "step_times_s": times,
            "patches_per_s": global_batch / step, "load": [load, loadavg()[0]]}


def pipeline_worker(batch: int, n_batches: int) -> dict:
    from tem_keras.data.pipeline import training_data
    from tem_keras.data.synthetic import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "ds", n_images=10, size=1024, seed=0, progress=False)
        data = training_data(root, patch_size=PATCH, batch_size=batch, augment=True, seed=0)
        ds = data.pipelines["train"].repeat()
        it = iter(ds)
        next(it)  # warm-up
        load = loadavg()[0]
        start = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        t = time.perf_counter() - start
        del it, ds  # stop the prefetch threads before the interpreter shuts down (else it aborts)
        gc.collect()
    return {"batch": batch, "patch": PATCH, "batches": n_batches, "seconds": t,
            "patches_per_s": n_batches * batch / t, "train_patches": len(data.patches["train"]),
            "load": [load, loadavg()[0]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args(argv)
    kind, *rest = args.worker
    if kind == "train":
        arch, batch, replicas = rest
        emit(train_worker(arch, int(batch), int(replicas), args.steps, args.precision))
    else:
        emit(pipeline_worker(int(rest[0]), max(4, args.steps * 2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
