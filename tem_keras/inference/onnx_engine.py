"""The light engine of :func:`tem_keras.predict`: an export folder's ``model.onnx`` run by
onnxruntime (:mod:`tem_keras.export.predict_script`), without TensorFlow.

Which engine runs (``engine=`` of :func:`~tem_keras.inference.predict_stack`)
--------------------------------------------------------------------------------
``"tensorflow"``: the :class:`~tem_keras.inference.predictor.Predictor` of the Keras model.
``"onnx"``: every image whole through ``model.onnx`` (the export must hold it).
``"auto"`` (default): ONNX when the model is given as the path of an export folder that holds
``model.onnx`` and ``activation_bytes_per_pixel``, onnxruntime is installed, nothing asks for
what only the Keras model does (``tta``, a ``mixed_precision`` other than float32, a
``tile_size``, another ``preprocessing``), **TensorFlow is not imported yet** in the process and
there are at most :data:`MAX_ONNX_FRAMES` frames.

Why: starting TensorFlow, loading the Keras model and tracing its call take 8–16 s on 2 cores,
which is what a script or command segmenting a few images pays (one 1024² image from a fresh
process: 2.3 s with ``predict.py``, 19.8 s through TensorFlow, residual UNet, loaded machine;
``benchmarks/bench_runtime.py``). Per image, once both run, TensorFlow is 1.4–4× faster (0.27 vs
1.08 s for that image and model, 1.5 vs 2.0 s for Horwath's UNet): it runs the NumPy
preprocessing (OpenCV's median) and a frozen oneDNN graph of the rewritten network, while
onnxruntime runs the preprocessing as graph operations and tf2onnx's conversion, with layout
transposes around the decoders' shape conditions. So a process where TensorFlow already runs
keeps it, and a long stack repays its start-up after a dozen 1024² frames.

With ``"auto"``, an image that :func:`tem_keras.predict` would cut into tiles (its activations
exceed the memory budget, or ``max_pixels``) goes to the TensorFlow engine, loaded on first need:
the results are then those of the TensorFlow path for every image, up to float round-off (the
network is the same rewritten graph; the preprocessing inside ``model.onnx`` is the exact graph
twin of the NumPy one, :mod:`tem_keras.data.preprocess_tf`).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

from ..export import predict_script as runtime
from ..errors import TEMInputError
from .predictor import pixels_per_call, tile_options
from .sources import read_ahead
from .tiling import round_up, tile_layout

__all__ = ["ENGINES", "MAX_ONNX_FRAMES", "OnnxEngine", "choose_engine", "onnx_folder"]

#: the values of ``engine=``
ENGINES = ("auto", "onnx", "tensorflow")
#: ``"auto"`` runs ``model.onnx`` for at most this many frames (beyond, TensorFlow's start-up is
#: repaid by its faster call: about 8 s against 0.5 s per 1024² frame)
MAX_ONNX_FRAMES = 16


def _onnx_unavailable() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except Exception as error:  # noqa: BLE001  (ImportError or a broken install)
        return f"onnxruntime is not available ({type(error).__name__}); pip install onnxruntime"
    return None


def _export_folder(model_or_path) -> tuple[Path | None, dict]:
    """The folder and ``tem_keras.json`` of an export that lists ``model.onnx``, or ``(None, {})``."""
    from ..artifacts import ExportedModel

    if isinstance(model_or_path, ExportedModel):
        folder = model_or_path.path
    elif isinstance(model_or_path, (str, os.PathLike)):
        folder = Path(model_or_path)
    else:
        return None, {}
    try:
        return folder, runtime.read_metadata(folder)
    except runtime.ExportInputError:
        return None, {}


def onnx_folder(model_or_path, engine: str = "auto", *, tile_size=None, tta=False,
                mixed_precision="float32", preprocessing=None, n_frames: int | None = None) -> Path | None:
    """The export folder whose ``model.onnx`` :func:`~tem_keras.inference.predict_stack` runs, or
    None for the TensorFlow engine (the rule is in the module docstring); opens no model.
    ``n_frames``: how many frames will be predicted (None: not known yet, not counted).

    Raises
    ------
    ValueError
        An unknown ``engine``, or ``"onnx"`` with options only the TensorFlow engine has.
    TEMInputError
        ``"onnx"`` for a model that is not an export folder holding ``model.onnx``, or without
        onnxruntime installed.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "tensorflow":
        return None
    asked = [name for name, value in (("tta", tta), ("mixed_precision", mixed_precision != "float32"),
                                      ("tile_size", tile_size is not None),
                                      ("preprocessing", preprocessing is not None)) if value]
    if engine == "onnx":
        if asked:
            raise ValueError(f"engine='onnx' runs the exported graph as it is: {', '.join(asked)} "
                             "need engine='tensorflow'")
        problem = _onnx_unavailable()
        if problem:
            raise TEMInputError(problem)
        folder = getattr(model_or_path, "path", model_or_path)
        if not isinstance(folder, (str, os.PathLike)):
            raise TEMInputError(f"engine='onnx' needs an export folder holding model.onnx, got a "
                                f"{type(model_or_path).__name__}")
        return Path(folder)
    if asked or "tensorflow" in sys.modules or (n_frames or 0) > MAX_ONNX_FRAMES:
        return None
    folder, meta = _export_folder(model_or_path)
    if folder is None or not meta.get("activation_bytes_per_pixel") or _onnx_unavailable():
        return None
    return folder


def choose_engine(model_or_path, engine: str = "auto", **options) -> OnnxEngine | None:
    """The :class:`OnnxEngine` for :func:`onnx_folder`'s folder (None: TensorFlow); with
    ``"auto"`` it hands images to tile to the TensorFlow engine of ``model_or_path``."""
    folder = onnx_folder(model_or_path, engine, **options)
    if folder is None:
        return None
    return OnnxEngine(folder, fallback=None if engine == "onnx" else model_or_path)


class OnnxEngine:
    """Whole images through ``model.onnx``; images that tem_keras would tile go to TensorFlow.

    Parameters
    ----------
    folder : str or Path
        The export folder.
    fallback : str, Path, ExportedModel or None
        What :func:`tem_keras.artifacts.load` opens for the images to tile (None: every image is
        predicted whole).

    Attributes
    ----------
    model : tem_keras.export.predict_script.OnnxModel
    threshold : float or None
        The exported threshold.
    activation_bytes : float or None
        Of the network, per input pixel (from ``tem_keras.json``; None for older exports).
    """

    def __init__(self, folder, *, fallback=None):
        try:
            self.model = runtime.OnnxModel(folder)
        except runtime.ExportInputError as error:
            raise TEMInputError(error.problem, error.path) from None
        meta = self.model.metadata
        self.threshold = self.model.threshold
        self.pixel_size_nm = meta.get("pixel_size_nm")
        self.activation_bytes = meta.get("activation_bytes_per_pixel") or None
        receptive = meta.get("receptive_field_px")
        finite = isinstance(receptive, (int, float)) and math.isfinite(receptive)
        self.receptive_field = int(receptive) if finite else None
        self._fallback, self._bundle = fallback, None

    def bundle(self):
        """The export opened by :func:`tem_keras.artifacts.load` (TensorFlow), on first need."""
        if self._bundle is None:
            from .._env import import_tensorflow_quietly
            from ..artifacts import load

            import_tensorflow_quietly()
            self._bundle = load(self._fallback)
        return self._bundle

    def whole(self, shape, *, max_pixels=None, max_memory_gb=None) -> bool:
        """Whether the TensorFlow engine would predict an image of ``shape`` whole (always True
        without a fallback: then every image is predicted whole)."""
        if self._fallback is None:
            return True
        d = self.model.downsampling
        per_call = pixels_per_call(self.activation_bytes or 0, max_memory_gb)
        options = tile_options(d, per_call, tile_size=None, overlap="auto", max_pixels=max_pixels)
        padded = (round_up(shape[0], d), round_up(shape[1], d))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # only the number of tiles matters here
            return len(tile_layout(padded, d, self.receptive_field, **options)) == 1

    def stream_probabilities(self, frames, *, max_pixels=None, max_memory_gb=None, prefetch: int = 2,
                             **tensorflow_options):
        """Yield ``(g, source, frame, Micrograph, probabilities [H, W, C])`` in input order, as
        :meth:`~tem_keras.inference.predictor.Predictor.stream_probabilities`.

        ``tensorflow_options`` (``overlap``, ``batch_size``) go to the TensorFlow engine for
        the images it tiles.
        """
        def load(g, source, frame):
            return g, source, frame, source.get(frame)

        for g, source, frame, mg in read_ahead(frames, load, prefetch):
            name = source.name or mg.path
            if self.whole(mg.shape, max_pixels=max_pixels, max_memory_gb=max_memory_gb):
                try:
                    probabilities = self.model.probabilities(mg.data, name)
                except runtime.ExportInputError as error:
                    raise TEMInputError(error.problem, error.path) from None
                yield g, source, frame, mg, probabilities
                continue
            from ..data.preprocess import Preprocessing
            from .predictor import Predictor

            bundle = self.bundle()
            yield from Predictor.of(bundle.model).stream_probabilities(
                iter([(g, source, frame)]), preprocessing=bundle.preprocessing or Preprocessing(),
                max_pixels=max_pixels, max_memory_gb=max_memory_gb, prefetch=0, **tensorflow_options)

    def __repr__(self):
        return f"OnnxEngine({str(self.model.folder)!r}, tiles by TensorFlow: {self._fallback is not None})"
