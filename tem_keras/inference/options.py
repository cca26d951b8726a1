"""How to predict, as one object: :class:`PredictOptions`, built and checked once at the door.

:func:`~tem_keras.inference.predict`, :func:`~tem_keras.inference.predict_stack`,
:func:`~tem_keras.inference.evaluate`, :func:`tem_keras.watch` and the Zarr store job
(:func:`tem_keras.distributed.predict_to_store`) take ``options=PredictOptions(...)`` and pass
the one object along; their keyword arguments (``predict(model, x, threshold=0.4)``) build it.
Frame selections (``frames=``) are checked here too (:func:`check_frames`), before any file is
read.

>>> options = PredictOptions(threshold="0.4", tile_size=256)
>>> options.threshold, options.tile_size, options.overlap
(0.4, 256, 'auto')
>>> PredictOptions.build(options, batch_size=8).batch_size
8
>>> PredictOptions(tta="yes")
Traceback (most recent call last):
...
TypeError: tta must be True or False, got 'yes' (str)
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from dataclasses import dataclass

import numpy as np

from ..data.preprocess import Preprocessing
from ..errors import TEMInputError
from ..validation import check_bool, check_choice, check_predict_arguments
from .masks import check_threshold

__all__ = ["PredictOptions", "check_frames", "ENGINES"]

#: what may run the model (:mod:`tem_keras.inference.onnx_engine`)
ENGINES = ("auto", "onnx", "tensorflow")


@dataclass(frozen=True)
class PredictOptions:
    """The choices of one prediction, checked when the object is made (frozen afterwards).

    Attributes
    ----------
    threshold : None, float or "otsu"
        Of the particle probability (numbers given as text are parsed); None: the model's tuned
        threshold, else 0.5 / argmax. ``True`` is refused (a bool is not a number).
    tile_size : int or None
        Tile side; None: whole images when they fit the memory budget.
    overlap : int or "auto"
        Pixels shared by neighbouring tiles.
    batch_size : int
        Tiles or frames per model call, at most.
    mixed_precision : {"float32", "bfloat16", "float16", "auto", ...}
        Precision policy of the model call.
    max_pixels : int or None
        Largest image predicted whole (besides the memory budget).
    max_memory_gb : float or None
        Activation memory budget of one model call.
    tta : bool
        Test-time augmentation (the mean of the 8 symmetries).
    engine : {"auto", "onnx", "tensorflow"}
        What runs the model.
    preprocessing : Preprocessing or None
        Overrides the model's (a dict is read with ``Preprocessing.from_dict``).
    pixel_size_nm : float or None
        For images whose file has no calibration.

    See :func:`tem_keras.predict` for the full meaning of each.
    """

    threshold: float | str | None = None
    tile_size: int | None = None
    overlap: int | str = "auto"
    batch_size: int = 4
    mixed_precision: str = "float32"
    max_pixels: int | None = None
    max_memory_gb: float | None = None
    tta: bool = False
    engine: str = "auto"
    preprocessing: Preprocessing | None = None
    pixel_size_nm: float | None = None

    def __post_init__(self):
        check_predict_arguments(tile_size=self.tile_size, overlap=self.overlap,
                                batch_size=self.batch_size, mixed_precision=self.mixed_precision,
                                max_pixels=self.max_pixels, max_memory_gb=self.max_memory_gb,
                                pixel_size_nm=self.pixel_size_nm)
        check_bool("tta", self.tta)
        check_choice("engine", self.engine, ENGINES)
        preprocessing = self.preprocessing
        if isinstance(preprocessing, dict):
            preprocessing = Preprocessing.from_dict(preprocessing)
        if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
            raise TypeError("preprocessing must be a tem_keras Preprocessing (or its dict) or None, "
                            f"got {type(preprocessing).__name__}")
        for name, value in (("threshold", check_threshold(self.threshold)), ("tta", bool(self.tta)),
                            ("preprocessing", preprocessing)):
            object.__setattr__(self, name, value)  # the normalised value, on a frozen object

    @classmethod
    def build(cls, options: "PredictOptions | None" = None, /, **keywords) -> "PredictOptions":
        """``options`` with ``keywords`` replacing its fields (checked once more only when
        there are keywords); a new object from the keywords when ``options`` is None."""
        unknown = sorted(cls.split(keywords)[1])
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}: prediction options are "
                            f"{[f.name for f in dataclasses.fields(cls)]}")
        if options is None:
            return cls(**keywords)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a PredictOptions, got {type(options).__name__}")
        return dataclasses.replace(options, **keywords) if keywords else options

    @classmethod
    def split(cls, keywords: dict) -> tuple[dict, dict]:
        """``keywords`` cut into the fields of these options and the others."""
        names = {f.name for f in dataclasses.fields(cls)}
        return ({k: v for k, v in keywords.items() if k in names},
                {k: v for k, v in keywords.items() if k not in names})

    def for_model(self, bundle, *, onnx: bool = False) -> "PredictOptions":
        """These options with the model's threshold and preprocessing where none is given (the
        ONNX engine applies the export's own preprocessing: left None); ``bundle`` is a
        :class:`~tem_keras.artifacts.ModelBundle` or an ONNX engine. Only the model's threshold
        is checked: the other fields were checked when these options were made."""
        preprocessing = self.preprocessing
        if preprocessing is None and not onnx:
            preprocessing = bundle.preprocessing or Preprocessing()
        resolved = copy.copy(self)
        object.__setattr__(resolved, "preprocessing", preprocessing)
        if self.threshold is None:
            object.__setattr__(resolved, "threshold", check_threshold(bundle.threshold))
        return resolved

    def replace(self, **changes) -> "PredictOptions":
        """A copy with ``changes`` (checked)."""
        return dataclasses.replace(self, **changes)

    def tiling(self) -> dict:
        """The keyword arguments of :meth:`~tem_keras.inference.Predictor.stream_probabilities`
        that these options set."""
        return {"tile_size": self.tile_size, "overlap": self.overlap, "batch_size": self.batch_size,
                "max_pixels": self.max_pixels, "mixed_precision": self.mixed_precision,
                "max_memory_gb": self.max_memory_gb}

    def to_dict(self) -> dict:
        """Plain values (JSON), the preprocessing as its dict; :meth:`from_dict` reads it back.

        >>> PredictOptions.from_dict(PredictOptions(threshold=0.3).to_dict()) == PredictOptions(threshold=0.3)
        True
        """
        out = dataclasses.asdict(self)
        out["preprocessing"] = None if self.preprocessing is None else self.preprocessing.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "PredictOptions":
        """The options written by :meth:`to_dict` (keys it does not know are ignored)."""
        return cls(**cls.split(values)[0])


def check_frames(frames):
    """``frames`` if it is a frame selection: None, ``"i/n"``, ``(i, n)``, a slice or range, or
    distinct integer indices; the indices are checked against the input's length later
    (:func:`~tem_keras.inference.tiling.shard_range`).

    >>> check_frames([0, 2])
    [0, 2]
    >>> check_frames([0, 0])
    Traceback (most recent call last):
    ...
    tem_keras.errors.TEMInputError: frames lists frame 0 twice: give each frame once
    """
    if frames is None or isinstance(frames, (str, slice, range)):
        return frames
    if isinstance(frames, (bool, int, float)) or not hasattr(frames, "__iter__"):
        raise TEMInputError(f"frames must be None, 'i/n', a slice or a list of frame indices, got "
                            f"{frames!r} ({type(frames).__name__})")
    indices = list(frames)
    if not indices:
        raise TEMInputError("frames is empty: it would select no frame; give at least one index, "
                            "or frames=None for all")
    bad = [i for i in indices if isinstance(i, (bool, np.bool_)) or not isinstance(i, (numbers.Integral, np.integer))]
    if bad:
        raise TEMInputError(f"frames must be whole frame indices, got {bad[0]!r} "
                            f"({type(bad[0]).__name__})")
    seen = set()
    for i in indices:
        if int(i) in seen:
            raise TEMInputError(f"frames lists frame {int(i)} twice: give each frame once")
        seen.add(int(i))
    return frames
