"""The model call traced once for any batch and tile shape, small models' weights frozen in."""

from __future__ import annotations

import weakref

from .precision import weight_bytes

__all__ = ["TracedCall", "FrozenCall", "traced_call", "FREEZE_MAX_WEIGHT_BYTES"]

#: models with up to this many bytes of weights run with them frozen into the graph: freezing
#: and the first call cost about 20 times the weights' bytes at their peak (UNet-64: +2.4 GB for
#: 124 MB of weights); larger models run with their variables
FREEZE_MAX_WEIGHT_BYTES = 100 * 1024**2


class TracedCall:
    """A traced model call (weights read from the model's variables)."""

    def __init__(self, traced):
        self.traced = traced

    def __call__(self, x):
        return self.traced(x)

    def experimental_get_tracing_count(self) -> int:
        return self.traced.experimental_get_tracing_count()


class FrozenCall(TracedCall):
    """A traced model call with its variables turned into graph constants.

    oneDNN then reorders each convolution's weights once into its preferred blocked layout and
    keeps them, instead of reading them from a variable in plain layout on every call: the
    4-level 64-filter UNet at 1024² runs 6.5 → 5.0 s on 2 cores, the residual UNet 3 % faster.
    The price is memory: freezing and the first call took about 20 times the weights' bytes
    more at their peak (UNet-64: +2.4 GB), so only models with up to
    :data:`FREEZE_MAX_WEIGHT_BYTES` of weights are frozen. Falls back to the traced
    function when the graph cannot be frozen (e.g. a SavedModel-only export).
    """

    def __init__(self, traced):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        from tensorflow.python.util import deprecation

        super().__init__(traced)
        concrete = traced.get_concrete_function()
        try:
            with deprecation.silence():  # it calls TF1's extract_sub_graph, which warns each time
                self.call = convert_variables_to_constants_v2(concrete)
        except Exception:  # noqa: BLE001 - any graph that cannot be frozen runs as traced
            self.call = concrete

    def __call__(self, x):
        import tensorflow as tf

        return tf.nest.flatten(self.call(tf.convert_to_tensor(x, tf.float32)))[0]


def traced_call(model) -> TracedCall:
    """``model(x, training=False)`` as float32, traced once for any ``[N, H, W, C]`` input.

    Models with up to :data:`FREEZE_MAX_WEIGHT_BYTES` of weights are frozen
    (:class:`FrozenCall`). The traced function holds the model weakly, so that whoever keeps
    the call does not keep the model alive. A new trace is made at every call of this function:
    :class:`~tem_keras.inference.Predictor` keeps the one it runs.
    """
    import tensorflow as tf

    channels = int(model.inputs[0].shape[-1] or 1)
    ref = weakref.ref(model)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])
    def traced(x):
        return tf.cast(ref()(x, training=False), tf.float32)

    return FrozenCall(traced) if weight_bytes(model) <= FREEZE_MAX_WEIGHT_BYTES else TracedCall(traced)
