"""Tile geometry: where the tiles of a large micrograph go, how they are blended, frame shards.

Overlapping tiles are blended by a separable window: within ``margin`` pixels of an inner tile
edge the weight is 0 (the receptive field of those pixels leaves the tile, their output is
affected by the tile's zero padding), then rises as a squared sine over the rest of the overlap
to 1; the weights are normalised to sum to 1 at every pixel. With the default overlap (receptive
field plus a ramp) every blended pixel comes from tiles that saw its whole receptive field, so
the tiled prediction equals the whole-image prediction up to float round-off (Ronneberger et al.
2015's overlap-tile strategy; the receptive field of Sytwu et al. 2022 sets the overlap).

References
----------
O. Ronneberger, P. Fischer, T. Brox, "U-Net", MICCAI 2015 — overlap-tile strategy.
K. Sytwu, C. Groschner, M. C. Scott, Microsc. Microanal. 28, 1896 (2022) — receptive fields.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..data.preprocess import pad_to_multiple
from ..errors import TEMInputError

__all__ = ["TileLayout", "tile_layout", "pad_to_multiple", "shard_range", "round_up",
           "MAX_WHOLE_PIXELS", "DEFAULT_TILE_SIZE", "MAX_MARGIN"]

#: images up to this many pixels are predicted whole when ``tile_size`` and ``max_pixels`` are None
#: and the model's activation memory cannot be estimated
MAX_WHOLE_PIXELS = 2048 * 2048
#: largest tile side when an image is too large to be predicted whole, no ``tile_size`` is given
#: and the model's activation memory cannot be estimated (else the side that fits the budget)
DEFAULT_TILE_SIZE = 1024
#: the tile margin derived from the receptive field is capped at this many pixels
MAX_MARGIN = 256

def round_up(value: float, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(value / multiple) * multiple)


def _origins(length: int, tile: int, stride: int) -> np.ndarray:
    if length <= tile:
        return np.array([0])
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return np.array(sorted(set(starts)))


def _ramp(length: int, overlap: int, margin: int) -> np.ndarray:
    """Rising edge of a window of ``length``: 0 for ``margin`` px, squared sine up to ``overlap - margin``."""
    margin = min(margin, overlap // 2)
    ramp = overlap - 2 * margin
    x = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    w[x < margin] = 0.0
    if ramp > 0:
        inside = (x >= margin) & (x < margin + ramp)
        w[inside] = np.sin(0.5 * np.pi * (x[inside] - margin + 0.5) / ramp) ** 2
    return w


def _axis_weights(origins: np.ndarray, tile: int, length: int, margin: int) -> list[np.ndarray]:
    """1-D blending weights of the tiles along one axis, normalised to sum to 1 at every pixel."""
    n = len(origins)
    weights = []
    for i, start in enumerate(origins):
        w = np.ones(tile)
        if i > 0:
            w *= _ramp(tile, int(origins[i - 1] + tile - start), margin)
        if i < n - 1:
            w *= _ramp(tile, int(start + tile - origins[i + 1]), margin)[::-1]
        weights.append(w)
    total = np.zeros(length)
    for start, w in zip(origins, weights):
        total[start:start + tile] += w
    if np.any(total <= 0):  # cannot happen with margin <= overlap / 2; guard against a silent hole
        raise AssertionError("tile weights leave pixels uncovered")
    return [(w / total[s:s + tile]).astype(np.float32) for s, w in zip(origins, weights)]


@dataclass
class TileLayout:
    """Where the tiles of one (padded) image go and how they are weighted.

    Attributes
    ----------
    shape : (int, int)
        Padded image size (multiples of the down-sampling factor).
    tile : (int, int)
        Tile height and width (the padded size along an axis shorter than the tile).
    rows, cols : ndarray
        Tile origins along each axis (multiples of the down-sampling factor).
    row_weights, col_weights : list of ndarray
        Normalised 1-D blending weights per origin; tile ``(i, j)`` has weight
        ``row_weights[i][:, None] * col_weights[j][None, :]``.
    margin : int
        Pixels at inner tile edges that get no weight.
    overlap : int
        Nominal overlap of neighbouring tiles.
    """

    shape: tuple
    tile: tuple
    rows: np.ndarray
    cols: np.ndarray
    row_weights: list
    col_weights: list
    margin: int
    overlap: int

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self):
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                yield int(r), int(c), self.row_weights[i], self.col_weights[j]


def tile_layout(shape, downsampling: int, receptive_field: int | None, *, tile_size: int | None = None,
                overlap="auto", max_pixels: int = MAX_WHOLE_PIXELS,
                default_tile: int = DEFAULT_TILE_SIZE) -> TileLayout:
    """Tiles covering an image of ``shape`` (already padded to a multiple of ``downsampling``).

    Parameters
    ----------
    shape : (int, int)
        Padded image size.
    downsampling : int
        Tile sides and origins are multiples of it.
    receptive_field : int or None
        Of the model; sets the default overlap and the margin (``ceil(rf / 2)``, at most
        :data:`MAX_MARGIN`). None: 64 px assumed.
    tile_size : int, optional
        Tile side (rounded up to a multiple of ``downsampling``). Default: the whole image when
        its area is at most ``max_pixels``, otherwise ``default_tile``.
    overlap : int or "auto"
        Pixels shared by neighbouring tiles. ``"auto"``: twice the margin plus a squared-sine ramp of
        ``max(downsampling, margin / 2)`` pixels, rounded up to the down-sampling, at most half a tile.
        An overlap below twice the margin cannot be exact; the margin then shrinks to a quarter
        of the overlap and the rest is blended.
    max_pixels, default_tile : int
        See ``tile_size``.
    """
    h, w = shape
    d = max(1, int(downsampling))
    auto = tile_size is None
    if auto:
        if h * w <= max_pixels:
            return TileLayout((h, w), (h, w), np.array([0]), np.array([0]),
                              [np.ones(h, np.float32)], [np.ones(w, np.float32)], 0, 0)
        tile_size = default_tile
    tile = round_up(max(int(tile_size), d), d)
    rf = 64 if receptive_field is None else int(receptive_field)
    margin = min(int(math.ceil(rf / 2)), MAX_MARGIN)
    largest = max(((tile // 2) // d) * d, 0)
    if overlap == "auto":
        overlap = min(round_up(2 * margin + max(d, margin / 2), d), largest)
    overlap = int(overlap)
    if overlap < 0 or overlap > tile - d:
        raise ValueError(f"overlap must be between 0 and tile_size - {d} = {tile - d}, got {overlap}")
    exact = overlap >= 2 * margin
    if not exact:
        margin = overlap // 4
    if auto and tile - overlap >= d:
        # the fewest tiles of at most ``default_tile``, each shrunk to just cover the image: less
        # overlap predicted twice (4096² with 2368 px tiles: 4 tiles of 2176², not of 2368²)
        need = 0
        for length in (h, w):
            n = max(1, math.ceil((length - overlap) / (tile - overlap)))
            need = max(need, math.ceil((length + (n - 1) * overlap) / n))
        tile = min(tile, max(round_up(need, d), overlap + d))
    stride = max(d, ((tile - overlap) // d) * d)
    th, tw = min(tile, h), min(tile, w)
    rows, cols = _origins(h, th, stride), _origins(w, tw, stride)
    if not exact and len(rows) * len(cols) > 1:
        need = 2 * min(int(math.ceil(rf / 2)), MAX_MARGIN)
        warnings.warn(f"tiles of {tile} px overlapping by {overlap} px cannot reproduce whole-image "
                      f"prediction for a receptive field of {rf} px (that needs an overlap >= {need} "
                      f"px, at most half a tile): tile borders may show; use overlap >= {need} and "
                      f"tile_size >= {round_up(2 * need + 2 * d, d)}", RuntimeWarning, stacklevel=2)
    return TileLayout((h, w), (th, tw), rows, cols, _axis_weights(rows, th, h, margin),
                      _axis_weights(cols, tw, w, margin), margin, overlap)


def shard_range(n_frames: int, frames) -> range:
    """The frame indices selected by ``frames``.

    Parameters
    ----------
    n_frames : int
        Frames in the input (all files together).
    frames : None, "i/n", (i, n), slice, range or sequence of int
        ``"i/n"`` (0-based ``i < n``) is the i-th of ``n`` contiguous, near-equal ranges: the
        shards ``0/n … (n-1)/n`` partition the frames exactly, so ``n`` processes or machines can
        split a long video (``tem-keras predict --shard i/n``).
    """
    if frames is None:
        return range(n_frames)
    if isinstance(frames, str) or (isinstance(frames, tuple) and len(frames) == 2
                                   and all(isinstance(v, int) for v in frames)):
        try:
            i, n = (int(v) for v in (frames.split("/") if isinstance(frames, str) else frames))
        except ValueError:
            raise TEMInputError(f"frames {frames!r}: a shard is written 'i/n' with 0 <= i < n (a "
                                "range of frames is slice(start, stop), a list of indices [0, 2])") from None
        if not 0 <= i < n:
            raise TEMInputError(f"a shard is written 'i/n' with 0 <= i < n (0-based), got {frames!r}")
        return range(i * n_frames // n, (i + 1) * n_frames // n)
    if isinstance(frames, (slice, range)):
        ends = [v for v in (frames.start, frames.stop) if v is not None]
        if any(not -n_frames <= int(v) <= n_frames for v in ends) or frames.step == 0:
            raise TEMInputError(f"frames {_slice_text(frames)} reaches beyond the input, which has "
                                f"{n_frames} frame(s) (0..{n_frames - 1})")
        selected = range(n_frames)[slice(frames.start, frames.stop, frames.step)]
        if not selected:
            raise TEMInputError(f"frames {_slice_text(frames)} selects no frame of the input's "
                                f"{n_frames} (0..{n_frames - 1})")
        return selected
    indices = list(frames)
    bad = [i for i in indices if not -n_frames <= int(i) < n_frames]
    if bad:
        raise TEMInputError(f"frames {bad} do not exist: the input has {n_frames} frame(s)")
    return [int(i) % n_frames for i in indices]


def _slice_text(frames) -> str:
    """``start:stop`` (``:step``) of a slice or range, as typed."""
    parts = ["" if v is None else str(v) for v in (frames.start, frames.stop)]
    return ":".join(parts + ([str(frames.step)] if frames.step not in (None, 1) else []))
