"""One frame after another: :class:`Prediction`, the result for one frame, and
:func:`stream_predictions`, the generator behind :func:`~tem_keras.inference.predict_stack`.

It is shared by the single-process :func:`~tem_keras.inference.predict_stack` and the Dask
workers of :mod:`tem_keras.distributed`, so that a frame's mask is computed by the same code
either way (masks from a cluster equal those of one process exactly).

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, npj Comput. Mater. 6, 108 (2020) — Otsu
thresholds of the softmax map.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import dihedral_frames, mean_of_dihedral
from .masks import labels_from_probabilities
from .options import PredictOptions
from .predictor import Predictor

__all__ = ["Prediction", "stream_predictions"]


@dataclass(repr=False)
class Prediction:
    """The segmentation of one image or frame.

    Attributes
    ----------
    mask : ndarray ``[H, W]`` uint8
        Labels: 0 background, 1..K-1 classes (1 = particle for binary models).
    probabilities : ndarray ``[H, W, C]`` float32 or None
        Class probabilities; only when asked for (``return_probabilities=True``).
    threshold : float or None
        Threshold applied to the particle probability (None: argmax of a multi-class model).
    pixel_size_nm : float or None
        From the file (or the ``pixel_size_nm`` argument).
    source : str or None
        The file the image came from.
    frame : int or None
        Frame index inside ``source`` when it holds several frames.
    index : int
        Position in the whole input (all files and frames, before sharding).
    metadata : dict
        The micrograph's metadata.
    image : ndarray ``[H, W]`` float32 or None
        The micrograph as read (before preprocessing); only with ``return_image=True``.
    stem : str or None
        What output names start with (:attr:`~tem_keras.inference.sources.Source.stem`, unique
        among the inputs of one call); None: the stem of ``source``.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None = None
    threshold: float | None = None
    pixel_size_nm: float | None = None
    source: str | None = None
    frame: int | None = None
    index: int = 0
    metadata: dict = field(default_factory=dict)
    image: np.ndarray | None = None
    stem: str | None = None

    @property
    def name(self) -> str:
        """A file-name stem for outputs: ``<stem>`` or ``<stem>_f<frame>`` (``stem`` is unique
        among the inputs of one call: ``a.tif`` and ``a.png`` give ``a_tif`` and ``a_png``)."""
        if not self.source and not self.stem:
            return f"image{self.index:05d}" if self.frame is None else f"frame{self.frame:05d}"
        stem = self.stem or Path(self.source).stem
        return stem if self.frame is None else f"{stem}_f{self.frame:05d}"

    def __repr__(self) -> str:
        h, w = self.mask.shape
        fraction = float(np.count_nonzero(self.mask)) / max(self.mask.size, 1)
        return (f"Prediction({self.name!r}, {h}×{w}, particle fraction {fraction:.3f}, "
                f"threshold={self.threshold}, probabilities={'yes' if self.probabilities is not None else 'no'})")


def stream_predictions(bundle, selected: list, options: PredictOptions, *,
                       return_probabilities: bool = False, return_image: bool = False,
                       progress: bool = False, onnx=None) -> Iterator[Prediction]:
    """:class:`Prediction` of each selected frame, in order, one frame in memory at a time.

    Parameters
    ----------
    bundle : ModelBundle
        From :func:`tem_keras.artifacts.load`.
    selected : list of (int, Source, int)
        From :func:`~tem_keras.inference.sources.select_frames`.
    options : PredictOptions
        With the model's threshold and preprocessing filled in
        (:meth:`~tem_keras.inference.options.PredictOptions.for_model`).
    return_probabilities, return_image
        As :func:`tem_keras.predict` (already checked).
    progress : bool
        A tqdm bar over the frames; a frame counts when the caller asks for the next one, so that
        the bar covers what the caller does with each (``tem-keras predict --particles``
        measures its particles).
    onnx : OnnxEngine, optional
        Run the export's ``model.onnx`` instead of the Keras model
        (:func:`~tem_keras.inference.onnx_engine.choose_engine`).
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(selected), unit="frame", desc="predict")
    try:
        for g, source, frame, mg, probabilities in _probabilities(bundle, selected, options, onnx):
            mask, used = labels_from_probabilities(probabilities, options.threshold)
            yield Prediction(mask, probabilities if return_probabilities else None, used,
                             mg.pixel_size_nm if mg.pixel_size_nm is not None else options.pixel_size_nm,
                             source.name or mg.path, frame if source.multi else None, g,
                             dict(mg.metadata), mg.data if return_image else None, source.stem)
            if bar is not None:  # counted once the caller is done with it (saved, measured)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _probabilities(bundle, selected: list, options: PredictOptions, onnx):
    """``(g, source, frame, Micrograph, probabilities)`` of each selected frame, from the ONNX
    engine or the model's :class:`Predictor` (the mean of the 8 symmetries with TTA)."""
    prefetch = 2 if len(selected) > 1 or options.tta else 0
    if onnx is not None:
        return onnx.stream_probabilities(iter(selected), max_pixels=options.max_pixels,
                                         max_memory_gb=options.max_memory_gb, prefetch=prefetch,
                                         overlap=options.overlap, batch_size=options.batch_size)
    stream = Predictor.of(bundle.model).stream_probabilities(
        dihedral_frames(selected) if options.tta else iter(selected),
        preprocessing=options.preprocessing, prefetch=prefetch, **options.tiling())
    return mean_of_dihedral(stream) if options.tta else stream
