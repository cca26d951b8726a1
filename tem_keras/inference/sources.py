"""Inputs of prediction: everything (arrays, files, folders, patterns, lists, stacks) becomes a
list of :class:`Source` of frames, numbered across all inputs, and frames are read ahead of the
model in a background thread (:func:`read_ahead`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from ..export.predict_script import output_stems, path_stem
from .tiling import shard_range

__all__ = ["Source", "input_sources", "path_stem", "select_frames", "read_ahead"]


@dataclass
class Source:
    """Frames of one input.

    Attributes
    ----------
    name : str or None
        The file (None for arrays).
    n : int
        Number of frames.
    get : callable
        ``get(i)`` -> :class:`~tem_keras.io.Micrograph` of frame ``i``.
    multi : bool
        Whether frames are numbered in outputs (a stack rather than one image).
    stem : str or None
        What its output names start with: the file's stem, unique among the inputs of one call
        (:func:`tem_keras.export.predict_script.output_stems`); None for arrays.
    """

    name: str | None
    n: int
    get: object
    multi: bool
    stem: str | None = None


def refuse_colour_array(shape, name=None) -> None:
    """An array ``[H, W, 3|4]`` is a colour image, not 3 or 4 frames: refused (a file is read
    as grey; an array is the caller's to convert)."""
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        raise TEMInputError(f"a 3-D array of shape {tuple(shape)} looks like a colour image "
                            "[H, W, channels]; convert it to grey [H, W] (or pass a stack "
                            "as [frames, H, W])", name)


def _array_source(array: np.ndarray, name=None) -> Source:
    from ..io import Micrograph

    if array.ndim == 2:
        return Source(name, 1, lambda i: Micrograph(array, path=name), False)
    if array.ndim == 3:
        refuse_colour_array(array.shape, name)
        return Source(name, len(array), lambda i: Micrograph(array[i], path=name), True)
    raise TEMInputError(f"expected an image [H, W] or a stack [frames, H, W], got shape "
                        f"{array.shape}", name)


def input_sources(x) -> tuple[list[Source], bool]:
    """The sources of ``x`` and whether ``x`` is one single image.

    Each source's :attr:`~Source.stem` names its outputs, unique among the inputs (``a.tif`` and
    ``a.png`` give ``a_tif`` and ``a_png``: :func:`~tem_keras.export.predict_script.output_stems`).

    Parameters
    ----------
    x : ndarray, Micrograph, MicrographStack, HyperSpy signal, path, folder, glob pattern or list of them
        As :func:`tem_keras.predict` takes.

    Returns
    -------
    sources : list of Source
    single : bool
        True for one 2-D image (an array, a Micrograph, a single-frame file or a ``Signal2D``
        without navigation axes).
    """
    sources, single = _sources(x)
    sources = _each_file_once(sources)
    for source, stem in zip(sources, output_stems([s.name for s in sources])):
        source.stem = stem
    stacks = [s for s in sources if s.name is None and s.multi]
    if len(stacks) > 1:  # several arrays of frames: stack0_f00000, stack1_f00000, ...
        for k, source in enumerate(stacks):
            source.stem = f"stack{k}"
    return sources, single


def _each_file_once(sources: list[Source]) -> list[Source]:
    """``sources`` with a file given twice (or given and inside a folder given, or through a
    link) kept once, where it first appears, as ``predict.py``'s ``input_files``: one file, one
    set of outputs."""
    kept, seen = [], set()
    for source in sources:
        key = None
        if source.name is not None and Path(source.name).is_file():
            key = Path(source.name).resolve()
        if key is None or key not in seen:
            kept.append(source)
            seen.add(key)
    return kept


def _sources(x) -> tuple[list[Source], bool]:
    from ..io import Micrograph, MicrographStack, read_stack
    from ..io.hyperspy import is_signal, signal_stack

    if is_signal(x):  # before arrays: HyperSpy signals have __array__ too
        stack = signal_stack(x)
        single = x.axes_manager.navigation_dimension == 0
        return [Source(None, len(stack), stack.__getitem__, not single)], single
    if isinstance(x, Micrograph):
        return [Source(x.path, 1, lambda i: x, False)], True
    if isinstance(x, MicrographStack):
        return [Source(x.path, len(x), x.__getitem__, True)], False
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and not isinstance(x, (str, os.PathLike))):
        array = np.asarray(x)
        return [_array_source(array)], array.ndim == 2
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if path.is_dir() or (not path.exists() and any(c in str(x) for c in "*?[")):
            stack = read_stack(x)
            return [Source(str(p), 1, (lambda i, k=k: stack[k]), False)
                    for k, p in enumerate(_stack_files(x))], False
        stack = read_stack(path)
        single = len(stack) == 1
        return [Source(str(path), len(stack), stack.__getitem__, not single)], single
    if isinstance(x, Sequence):
        if not len(x):
            raise TEMInputError("no images given (empty list)")
        out = []
        for item in x:
            sources, _ = _sources(item)
            out.extend(sources)
        return out, False
    raise TypeError(f"cannot predict on {type(x).__name__}: give an array, a path, a list of paths, "
                    "a folder, a MicrographStack or a HyperSpy Signal2D")


def _stack_files(pattern) -> list[str]:
    """File names behind a folder or pattern stack (reading one header at a time would be slower)."""
    from ..io import image_files, natural_key

    path = Path(pattern)
    if path.is_dir():
        return [str(p) for p in image_files(path)]
    import glob

    return [str(p) for p in sorted((Path(p) for p in glob.glob(str(pattern))), key=natural_key)
            if p.is_file()]


def select_frames(sources: list[Source], frames):
    """``(global index, source, frame)`` of the frames selected by ``frames``.

    Parameters
    ----------
    sources : list of Source
    frames : None, "i/n", (i, n), slice, range or sequence of int
        As :func:`~tem_keras.inference.tiling.shard_range`, over the frames of all sources.
    """
    offsets = np.cumsum([0] + [s.n for s in sources])
    for g in shard_range(int(offsets[-1]), frames):
        k = int(np.searchsorted(offsets, g, side="right") - 1)
        yield g, sources[k], g - int(offsets[k])


def read_ahead(items, load, prefetch: int):
    """``load(*item)`` for each item, computed up to ``prefetch`` items ahead in a thread.

    Yields the results in input order with at most ``prefetch`` items read ahead (memory stays
    bounded). Reading and preprocessing (NumPy/SciPy, which release the GIL) overlap with the
    model call. Errors (bad files) are re-raised in the caller's thread, in order, so the user
    sees our TEMInputError. ``prefetch <= 0`` loads in the caller's thread.

    A plain thread is used rather than ``tf.data.Dataset.from_generator``: an abandoned
    ``from_generator`` iterator (an error, or a caller that stops early) can hang the interpreter
    at exit, and the frames are NumPy work anyway.
    """
    if prefetch <= 0:
        for item in items:
            yield load(*item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending = deque()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tem_keras_reader")
    try:
        for item in items:
            pending.append(executor.submit(load, *item))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True)
