"""The ``model.onnx`` of an export folder: the serving graph converted by tf2onnx, checked with
onnxruntime (both in the base install: ``pip install -e .`` in a clone, ``pip install tem_keras``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["onnx_unavailable", "onnx_graph_def", "write_onnx", "ONNX_OPSET", "MAX_DIFFERENCE", "INSTALL_HINT"]

#: ONNX opset used by :func:`write_onnx`
ONNX_OPSET = 17
#: how to get tf2onnx and onnxruntime back (they come with the base install; the extra names them)
INSTALL_HINT = ('install them with pip install -e ".[onnx]" in a clone of tem_keras, '
                'or pip install "tem_keras[onnx]"')
#: largest |difference| allowed between onnxruntime's and the in-memory model's probabilities
MAX_DIFFERENCE = 1e-4


def onnx_unavailable() -> str | None:
    """Why ONNX export cannot run here, or None."""
    missing = []
    for module in ("tf2onnx", "onnxruntime"):
        try:
            __import__(module)
        except Exception as error:  # noqa: BLE001  (ImportError or a broken install)
            missing.append(f"{module} ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
                           if not isinstance(error, ModuleNotFoundError) else module)
    if missing:
        return f"{' and '.join(missing)} not available; {INSTALL_HINT}"
    return None


def onnx_graph_def(function):
    """Frozen GraphDef of a ``tf.function`` with the XLA marks removed, for tf2onnx.

    Keras 3 runs a convolution through a nested ``tf.function(jit_compile=True)`` when the
    static channel count of its input is unknown (after ``CropOrPadTo`` in the UNet decoders);
    Grappler never inlines functions marked for XLA, and tf2onnx cannot convert the call. The
    marks only ask for compilation: without them the function body (the same convolution) is
    inlined and converted.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.util import deprecation

    with deprecation.silence():  # it calls TF1's extract_sub_graph, which warns each time
        frozen = convert_variables_to_constants_v2(function.get_concrete_function(), aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    nodes = list(graph_def.node)
    for f in graph_def.library.function:
        for key in ("_XlaMustCompile", "_noinline"):
            if key in f.attr:
                del f.attr[key]
        nodes.extend(f.node_def)
    for node in nodes:
        if "_XlaMustCompile" in node.attr:
            del node.attr["_XlaMustCompile"]
    return graph_def, [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]


def write_onnx(module, path: Path, image: np.ndarray, reference: np.ndarray) -> float:
    """Convert ``module.serve`` to ONNX at ``path`` and compare it (onnxruntime) with ``reference``.

    Parameters
    ----------
    module : tf.Module
        From :func:`~tem_keras.export.serving.serving_module`.
    path : Path
        The ``.onnx`` file.
    image, reference : ndarray
        Raw test image ``[H, W]`` and the in-memory model's probabilities ``[H, W, C]``.

    Returns
    -------
    float
        The largest absolute difference to ``reference``.

    Raises
    ------
    RuntimeError
        The difference exceeds :data:`MAX_DIFFERENCE`.
    """
    import logging

    import onnxruntime as ort
    import tf2onnx
    from tensorflow.python.util import deprecation

    graph_def, inputs, outputs = onnx_graph_def(module.serve)
    level = logging.getLogger("tf2onnx").level
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        with deprecation.silence():  # tf2onnx calls TF1 graph utilities that warn each time
            tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                           opset=ONNX_OPSET, output_path=str(path))
    finally:
        logging.getLogger("tf2onnx").setLevel(level)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: image[None, ..., None]})[0][0]
    difference = float(np.max(np.abs(got - reference)))
    if not difference <= MAX_DIFFERENCE:
        raise RuntimeError(f"the ONNX model differs from the in-memory model by {difference:.3g} "
                           f"(> {MAX_DIFFERENCE:g})")
    return difference
