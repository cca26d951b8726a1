"""Where training runs: the ``tf.distribute`` strategy.

* ``TF_CONFIG`` set → ``MultiWorkerMirroredStrategy`` (several machines; every worker runs the same
  ``fit`` call, worker 0 writes the run folder).
* several GPUs visible, or ``devices=`` naming several devices → ``MirroredStrategy``.
* otherwise the default strategy (one CPU or one GPU).
"""

from __future__ import annotations

import json
import os


def choose_strategy(devices=None):
    """Return the ``tf.distribute`` strategy for ``devices``.

    Parameters
    ----------
    devices : None, int or list of str
        None: all visible GPUs (MirroredStrategy when there are several), or the CPU.
        An int: the first n GPUs (or n logical CPU devices, when configured, for testing).
        A list of device names such as ``["/gpu:0", "/gpu:1"]``.
    """
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if isinstance(devices, int):
        pool = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if devices > len(pool):
            raise ValueError(f"asked for {devices} devices, only {len(pool)} visible: "
                             f"{[d.name for d in pool]}")
        devices = [d.name for d in pool[:devices]]
    devices = list(devices)
    if len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.MirroredStrategy(devices)


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker job."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    if not task:
        return True
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = "chief" in config.get("cluster", {})
    return kind == "chief" or (not has_chief and kind == "worker" and index == 0)


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def prepare_for_multi_worker(model) -> None:
    """Let Keras 3's ``Model.fit`` run under ``MultiWorkerMirroredStrategy``.

    Keras 3.15 reduces the per-step logs across workers with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails on the scalar losses and metrics, and builds the model symbolically from
    a batch reduced across workers, which fails on per-replica values (keras-team/keras#20585).
    Here the steps return their logs with a length-1 axis (the mean over workers is then the value
    itself, since the metric states are already synchronised) and the symbolic build uses the
    local batch, which has the same shapes. Only this model instance is changed.
    """
    import types

    import tensorflow as tf
    from keras import tree

    def with_axis(step):
        def step_with_axis(data):
            return tree.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, step(data))
        return step_with_axis

    def local_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: (self.distribute_strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v), batch)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model.train_step = with_axis(model.train_step)
    model.test_step = with_axis(model.test_step)
    model._maybe_symbolic_build = types.MethodType(local_symbolic_build, model)


def strategy_name(strategy) -> str:
    """The public name of a strategy (``MultiWorkerMirroredStrategy``, not its internal class)."""
    return "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else type(strategy).__name__
