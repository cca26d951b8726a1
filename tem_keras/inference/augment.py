"""Test-time augmentation: the mean of the predictions of the 8 symmetries of the square.

A micrograph of nanoparticles has no preferred orientation, so the model's answer should not
change when the image is rotated by 90° or mirrored; averaging the class probabilities of the 8
dihedral transforms (each mapped back) removes part of the model's orientation-dependent error at
8 times the cost — the same transforms the model was trained with (Sytwu et al. 2022).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .sources import Source

__all__ = ["DIHEDRAL", "dihedral", "undo_dihedral", "dihedral_frames", "mean_of_dihedral"]

#: the 8 symmetries of the square as (quarter turns, mirrored); the first is the identity
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``array`` ``[H, W, ...]`` turned by ``k`` quarter turns, then mirrored left-right if ``flip``."""
    out = np.rot90(array, k, axes=(0, 1))
    return out[:, ::-1] if flip else out


def undo_dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`dihedral`."""
    out = array[:, ::-1] if flip else array
    return np.rot90(out, -k, axes=(0, 1))


def _transformed(source: Source, k: int, flip: bool) -> Source:
    def get(i):
        mg = source.get(i)
        return dataclasses.replace(mg, data=np.ascontiguousarray(dihedral(mg.data, k, flip)))

    return dataclasses.replace(source, get=get)


def dihedral_frames(selected):
    """Each ``(g, source, frame)`` of ``selected`` 8 times, once per transform of :data:`DIHEDRAL`."""
    for g, source, frame in selected:
        for k, flip in DIHEDRAL:
            yield g, (source if (k, flip) == (0, False) else _transformed(source, k, flip)), frame


def mean_of_dihedral(stream):
    """Groups of 8 consecutive ``(g, source, frame, Micrograph, probabilities)`` from
    :func:`dihedral_frames` → one item per frame with the mean of the probabilities mapped back
    (and the untransformed Micrograph)."""
    group = []
    for item in stream:
        group.append(item)
        if len(group) == len(DIHEDRAL):
            total = sum(undo_dihedral(p, k, flip) for (*_, p), (k, flip) in zip(group, DIHEDRAL))
            g, source, frame, mg, _ = group[0]
            yield g, source, frame, mg, np.ascontiguousarray(total / len(DIHEDRAL), dtype=np.float32)
            group = []
