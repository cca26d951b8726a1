"""Which floating-point precision a model runs in, and its copy under a mixed precision policy."""

from __future__ import annotations

import math

__all__ = ["PRECISIONS", "resolve_precision", "with_precision", "weight_bytes"]

#: values of ``mixed_precision`` accepted by :func:`tem_keras.predict`
PRECISIONS = ("float32", "bfloat16", "float16", "auto")


def resolve_precision(mixed_precision: str) -> str:
    """The precision ``"auto"`` stands for on this machine (other values are checked and returned).

    ``"auto"``: bfloat16 on GPUs of compute capability ≥ 8, float16 on 7.x; on CPUs bfloat16
    where it is measured faster than float32 (:func:`tem_keras.distribute.bfloat16_speedup`),
    else float32.

    Raises
    ------
    ValueError
        ``mixed_precision`` is not one of :data:`PRECISIONS`.
    """
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        from ..distribute import BFLOAT16_MIN_SPEEDUP, bfloat16_speedup

        return "bfloat16" if bfloat16_speedup() >= BFLOAT16_MIN_SPEEDUP else "float32"
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "bfloat16" if capability >= (8, 0) else "float16" if capability >= (7, 0) else "float32"


def with_precision(model, precision: str):
    """``model`` rebuilt under the ``mixed_<precision>`` policy with the same weights.

    Every float32 layer is re-created from its config with ``dtype="mixed_bfloat16"`` (or
    float16): variables stay float32, computations run in the low precision; the output layers
    (the softmax head) stay float32. ``"float32"`` returns ``model`` itself. A new copy is made
    at every call: :class:`~tem_keras.inference.Predictor` keeps the one it runs.

    Raises
    ------
    ValueError
        The model cannot be rebuilt from its layers' configs.
    """
    if precision == "float32":
        return model
    import keras

    policy = f"mixed_{precision}"
    keep = {"softmax"}  # the output layers stay float32 (stable softmax)
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            keep.add(history[0].name)

    def clone(layer):
        config = layer.get_config()
        dtype = config.get("dtype")
        name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        if name in (None, "float32") and layer.name not in keep:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except Exception as error:
        raise ValueError(f"model {model.name!r} cannot be rebuilt under {policy!r} "
                         f"({type(error).__name__}: {error}); use mixed_precision='float32'") from error
    copy.set_weights(model.get_weights())
    return copy


def weight_bytes(model) -> int:
    """Bytes of the model's weights in float32."""
    return sum(4 * math.prod(v.shape) for v in getattr(model, "weights", ()))
