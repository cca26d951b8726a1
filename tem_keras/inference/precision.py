"""Which floating-point precision a model runs in, and its copy under a mixed precision policy."""

from __future__ import annotations

import math

__all__ = ["PRECISIONS", "resolve_precision", "with_precision", "weight_bytes"]

from ..hardware import PRECISIONS  # noqa: E402  (the one vocabulary, re-exported)

def resolve_precision(mixed_precision: str) -> str:
    """The precision ``mixed_precision`` stands for on this machine: see
    :func:`tem_keras.hardware.choose_precision` (the chooser training uses too)."""
    from ..hardware import choose_precision

    return choose_precision(mixed_precision)


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
