"""Particle geometry: sizes, irregular elliptical outlines, non-overlapping placement, rasterising.

Particles are spheroids: area-equivalent diameters log-normal, an elliptical outline made
slightly irregular by odd harmonics, depth equal to the equivalent diameter. :func:`rasterise`
turns them into projected-thickness maps (``t = d * sqrt(1 - rho**2)``, ``rho`` the normalised
elliptical radius) and instance labels; :mod:`.imaging` turns thickness into intensity.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

_GAP_PX = 2.0            # free space between non-touching particles (one background pixel at least)
_NECK = 0.92             # touching pairs: centre distance = _NECK * (sum of radii along the line)
_HARMONICS = (3, 5)      # odd outline harmonics: they leave the ellipse area (to first order)


@dataclass
class Particles:
    """Geometry of n particles in pixel units (arrays of length n).

    Made by :func:`draw_shapes` (positions NaN) and placed by :func:`place_particles`;
    :func:`rasterise` draws them and :func:`particle_records` describes them in nm.
    """

    y: np.ndarray
    x: np.ndarray
    a: np.ndarray           # semi-major axis, px
    b: np.ndarray           # semi-minor axis, px
    theta: np.ndarray       # orientation of the major axis, rad
    weight: np.ndarray      # relative scattering strength
    fringe_angle: np.ndarray  # rad (NaN = no fringes)
    fringe_phase: np.ndarray
    outline: np.ndarray     # [n, len(_HARMONICS), 2]: amplitude and phase of outline harmonics
    touching: list          # list of sets of indices

    def __len__(self):
        return len(self.y)

    def subset(self, idx, y=None, x=None, scale=None):
        """Particles ``idx`` (optionally moved to y, x and scaled), without contacts."""
        scale = 1.0 if scale is None else scale
        return Particles(self.y[idx] if y is None else y, self.x[idx] if x is None else x,
                         self.a[idx] * scale, self.b[idx] * scale, self.theta[idx],
                         self.weight[idx], self.fringe_angle[idx], self.fringe_phase[idx],
                         self.outline[idx], [set() for _ in np.atleast_1d(idx)])

    @property
    def diameter_px(self):
        """Area-equivalent diameters of the (irregular) elliptical outlines."""
        phi = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        r = _outline_radius(self.a[:, None], self.b[:, None], phi[None, :], self.outline)
        return 2.0 * np.sqrt(np.mean(r ** 2, axis=1))  # area = 1/2 integral r^2 dphi


def lognormal_diameters(rng, n, mean_nm, std_nm, pixel_size_nm, max_px):
    """Log-normal diameters (px) with the given arithmetic mean and standard deviation."""
    s2 = math.log1p((std_nm / mean_nm) ** 2)
    mu = math.log(mean_nm) - s2 / 2
    d_nm = rng.lognormal(mu, math.sqrt(s2), n) if std_nm > 0 else np.full(n, mean_nm)
    return np.clip(d_nm / pixel_size_nm, 3.0, max_px)


def _radius_along(a, b, theta, phi):
    """Distance from an ellipse centre to its boundary in direction ``phi``."""
    c, s = np.cos(phi - theta), np.sin(phi - theta)
    return a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)


def _outline_factor(phi, outline):
    """Radial factor ``1 + sum_k A_k cos(k phi + phase_k)`` of an irregular outline.

    ``phi`` is the polar angle from the major axis; ``outline`` is ``[..., K, 2]``.
    """
    f = 1.0
    for k, harmonic in zip(_HARMONICS, np.moveaxis(outline, -2, 0)):
        f = f + harmonic[..., 0:1] * np.cos(k * phi + harmonic[..., 1:2])
    return f


def _outline_radius(a, b, phi, outline):
    """Boundary radius of an ellipse (polar angle ``phi`` from its major axis) made irregular."""
    return _radius_along(a, b, 0.0, phi) * _outline_factor(phi, outline)


def _conflicts(ya, xa, ra, yb, xb, rb, same=False):
    """Boolean per point of set A: closer than ``ra + rb + _GAP_PX`` to a point of set B.

    With ``same=True`` (A is B) only pairs ``i < j`` count and the later point ``j`` is flagged.
    """
    from scipy.spatial import cKDTree

    hit = np.zeros(len(ya), bool)
    if len(ya) == 0 or len(yb) == 0:
        return hit
    reach = float(np.max(ra) + np.max(rb) + _GAP_PX)
    tree_a = cKDTree(np.column_stack([ya, xa]))
    tree_b = tree_a if same else cKDTree(np.column_stack([yb, xb]))
    pairs = tree_a.sparse_distance_matrix(tree_b, reach, output_type="ndarray")
    i, j, dist = pairs["i"], pairs["j"], pairs["v"]
    close = dist < ra[i] + rb[j] + _GAP_PX
    if same:
        close &= i < j
        hit[j[close]] = True
    else:
        hit[i[close]] = True
    return hit


class FreeSpots:
    """Clash test of proposed centres against the placed particles: a k-d tree of those placed
    so far plus a short list of those placed since (rebuilt past :attr:`REBUILD`), the same test
    as comparing with every placed particle, in time that does not grow with their number."""

    REBUILD = 256
    #: free space between non-touching particles (px)
    gap = _GAP_PX

    def __init__(self, ys, xs, bound, placed):
        self.ys, self.xs, self.bound, self.placed = ys, xs, bound, placed
        self._build()

    def _build(self):
        from scipy.spatial import cKDTree

        self.indexed = np.flatnonzero(self.placed)
        self.tree = cKDTree(np.column_stack([self.ys[self.indexed], self.xs[self.indexed]])) if self.indexed.size else None
        self.reach = float(self.bound[self.indexed].max()) if self.indexed.size else 0.0
        self.recent: list[int] = []

    def add(self, i: int) -> None:
        self.recent.append(i)
        if len(self.recent) > self.REBUILD:
            self._build()

    def clash(self, py, px, radius: float) -> np.ndarray:
        """Per proposal: closer than the two bounding radii plus ``_GAP_PX`` to a placed particle."""
        from scipy.spatial import cKDTree

        out = np.zeros(len(py), bool)
        if self.tree is not None:  # candidate pairs from the trees, the test itself as below
            pairs = cKDTree(np.column_stack([py, px])).sparse_distance_matrix(
                self.tree, self.reach + radius + _GAP_PX + 1e-6, output_type="ndarray")
            k, j = pairs["i"], self.indexed[pairs["j"]]
            close = np.hypot(py[k] - self.ys[j], px[k] - self.xs[j]) < self.bound[j] + radius + _GAP_PX
            out[k[close]] = True
        if self.recent:
            j = np.asarray(self.recent)
            out |= np.any(np.hypot(py[:, None] - self.ys[j], px[:, None] - self.xs[j])
                          < self.bound[j] + radius + _GAP_PX, axis=1)
        return out


def place_particles(rng, shape, a, b, theta, *, touching_fraction, bound=None, margin=None,
                    strict=True, max_rounds=200):
    """Place particles without overlap, some in contact with another one.

    Each particle is, with probability ``touching_fraction``, a "touching" one. The others are
    placed first by batched random sequential adsorption: all still unplaced ones get random
    centres at once and those clear of the placed ones and of earlier proposals (``_GAP_PX``
    between bounding circles of radius ``bound``, default the semi-major axis) are accepted.
    Then each touching particle goes at ``_NECK`` times the sum of the two radii along a random
    direction from a random placed particle, clear of all the rest. Centres stay inside the
    frame, ``margin`` px from its edges.

    Returns the centres (y, x) and indices of the placed particles (sorted) and their contacts.
    """
    h, w = shape
    n = len(a)
    bound = np.asarray(a if bound is None else bound, float)
    margin = np.zeros(n) if margin is None else np.asarray(margin, float)
    ys, xs = np.full(n, np.nan), np.full(n, np.nan)
    touching_wanted = rng.random(n) < touching_fraction
    touching: dict[int, set] = {}

    def propose(idx):
        return (rng.uniform(margin[idx], h - 1 - margin[idx]),
                rng.uniform(margin[idx], w - 1 - margin[idx]))

    placed = np.zeros(n, bool)
    todo = np.flatnonzero(~touching_wanted)
    if touching_wanted.all() and n:
        todo = np.array([0])      # the first particle needs no partner
        touching_wanted[0] = False
    for _ in range(max_rounds):
        if todo.size == 0:
            break
        py, px = propose(todo)
        done = np.flatnonzero(placed)
        bad = _conflicts(py, px, bound[todo], ys[done], xs[done], bound[done])
        bad |= _conflicts(py, px, bound[todo], py, px, bound[todo], same=True)
        ok = todo[~bad]
        ys[ok], xs[ok] = py[~bad], px[~bad]
        placed[ok] = True
        todo = todo[bad]
    failed = list(todo)
    for i in np.flatnonzero(touching_wanted):
        lo_y, hi_y, lo_x, hi_x = margin[i], h - 1 - margin[i], margin[i], w - 1 - margin[i]
        done = np.flatnonzero(placed)
        success = False
        for _ in range(8 if done.size else 0):
            j = int(rng.choice(done))
            phi = rng.uniform(0, 2 * np.pi)
            dist = _NECK * (_radius_along(a[i], b[i], theta[i], phi)
                            + _radius_along(a[j], b[j], theta[j], phi))
            y, x = ys[j] + dist * np.sin(phi), xs[j] + dist * np.cos(phi)
            if not (lo_y <= y <= hi_y and lo_x <= x <= hi_x):
                continue
            others = done[done != j]
            if np.any(np.hypot(ys[others] - y, xs[others] - x)
                      < bound[others] + bound[i] + _GAP_PX):
                continue
            ys[i], xs[i], placed[i], success = y, x, True, True
            touching.setdefault(i, set()).add(j)
            touching.setdefault(j, set()).add(i)
            break
        if not success:
            failed.append(i)
    free = FreeSpots(ys, xs, bound, placed)
    for i in failed:            # last resort: a free spot, tried 32 x 128 times
        for _ in range(32):
            py, px = propose(np.full(128, i))
            clash = free.clash(py, px, bound[i])
            if not clash.all():
                k = int(np.argmin(clash))
                ys[i], xs[i], placed[i] = py[k], px[k], True
                free.add(i)
                break
    keep = np.flatnonzero(placed)
    if strict and keep.size < n:
        raise ValueError(f"could not place {n} particles without overlap in a {h}x{w} image "
                         f"(placed {keep.size}); ask for fewer or smaller particles")
    remap = {int(old): new for new, old in enumerate(keep)}
    contacts = [{remap[j] for j in touching.get(int(old), ()) if j in remap} for old in keep]
    return ys[keep], xs[keep], keep, contacts


def draw_shapes(rng, d_px, p: dict) -> Particles:
    """Outlines, orientations, contrasts and fringe settings for particles of diameters ``d_px``.

    ``p`` is the resolved parameter record (``ellipticity``, ``low_contrast_fraction``,
    ``lattice_spacing_nm``, ``irregularity``). Positions are left at NaN (see
    :func:`place_particles`).
    """
    n = len(d_px)
    e = rng.uniform(0.0, p["ellipticity"], n)
    a, b = d_px / 2 / np.sqrt(1 - e), d_px / 2 * np.sqrt(1 - e)
    theta = rng.uniform(0, np.pi, n)
    weight = rng.uniform(0.8, 1.2, n)
    low = rng.random(n) < p["low_contrast_fraction"]
    weight[low] = rng.uniform(0.25, 0.45, int(low.sum()))
    fringe_angle = rng.uniform(0, np.pi, n) if p["lattice_spacing_nm"] else np.full(n, np.nan)
    fringe_phase = rng.uniform(0, 2 * np.pi, n)
    sigma = p["irregularity"]
    outline = np.stack([np.clip(rng.normal(0, sigma, (n, len(_HARMONICS))), -2.5 * sigma,
                                2.5 * sigma),
                        rng.uniform(0, 2 * np.pi, (n, len(_HARMONICS)))], axis=-1)
    nan = np.full(n, np.nan)
    return Particles(nan, nan.copy(), a, b, theta, weight, fringe_angle, fringe_phase, outline,
                     [set() for _ in range(n)])


def bounding_radius(parts: Particles) -> np.ndarray:
    """Radius of a circle that holds each (irregular) outline."""
    return parts.a * (1.0 + np.abs(parts.outline[..., 0]).sum(axis=-1))


def random_particles(rng, shape, p: dict) -> Particles:
    """Draw sizes and shapes, then place the particles (see :func:`place_particles`).

    ``p`` is the resolved parameter record; warns when fewer than ``p["n_particles"]`` fit.
    """
    n = p["n_particles"]
    mean, std = p["particle_diameter_nm"]
    d = lognormal_diameters(rng, n, mean, std, p["pixel_size_nm"], min(shape) / 2)
    parts = draw_shapes(rng, d, p)
    y, x, keep, contacts = place_particles(rng, shape, parts.a, parts.b, parts.theta,
                                           touching_fraction=p["touching_fraction"],
                                           bound=bounding_radius(parts),
                                           strict=not p["n_particles_from_coverage"])
    if len(keep) < n:
        warnings.warn(f"placed {len(keep)} of {n} particles: the requested coverage does not fit "
                      f"without overlap", RuntimeWarning, stacklevel=3)
    placed = parts.subset(keep, y=y, x=x)
    placed.touching = contacts
    return placed


def rasterise(shape, parts: Particles, pixel_size_nm, lattice_spacing_nm):
    """Projected thickness maps and instance labels of spheroidal particles.

    Returns ``thickness`` = sum of weight * t (nm), ``fringes`` = sum of weight * t * cos(lattice
    phase) and the int32 instance image, in which a pixel belongs to the particle whose
    normalised elliptical radius there is smallest (necks of touching particles are split).
    """
    h, w = shape
    thickness = np.zeros(shape, np.float64)
    fringes = np.zeros(shape, np.float64) if lattice_spacing_nm else None
    instances = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf)
    k_lat = 2 * np.pi * pixel_size_nm / lattice_spacing_nm if lattice_spacing_nm else 0.0
    d_nm = parts.diameter_px * pixel_size_nm
    for i in range(len(parts)):
        a, b, th = parts.a[i], parts.b[i], parts.theta[i]
        c, s = math.cos(th), math.sin(th)
        grow = 1.0 + float(np.abs(parts.outline[i, :, 0]).sum())
        hy = math.sqrt((a * s) ** 2 + (b * c) ** 2) * grow
        hx = math.sqrt((a * c) ** 2 + (b * s) ** 2) * grow
        y0 = max(int(math.floor(parts.y[i] - hy)), 0)
        y1 = min(int(math.ceil(parts.y[i] + hy)) + 1, h)
        x0 = max(int(math.floor(parts.x[i] - hx)), 0)
        x1 = min(int(math.ceil(parts.x[i] + hx)) + 1, w)
        if y1 <= y0 or x1 <= x0:
            continue
        dy = np.arange(y0, y1)[:, None] - parts.y[i]
        dx = np.arange(x0, x1)[None, :] - parts.x[i]
        u, v = dx * c + dy * s, -dx * s + dy * c
        rho2 = (u / a) ** 2 + (v / b) ** 2
        if np.any(parts.outline[i, :, 0]):
            rho2 = rho2 / _outline_factor(np.arctan2(v, u), parts.outline[i]) ** 2
        inside = rho2 < 1.0
        t = parts.weight[i] * d_nm[i] * np.sqrt(np.clip(1.0 - rho2, 0.0, None))
        thickness[y0:y1, x0:x1] += t
        if fringes is not None:
            fa = parts.fringe_angle[i]
            fringes[y0:y1, x0:x1] += t * np.cos(k_lat * (dx * math.cos(fa) + dy * math.sin(fa))
                                                + parts.fringe_phase[i])
        win = inside & (rho2 < best[y0:y1, x0:x1])
        instances[y0:y1, x0:x1][win] = i + 1
        best[y0:y1, x0:x1][win] = rho2[win]
    return thickness, fringes, instances


def particle_records(parts: Particles, pixel_size_nm) -> list[dict]:
    """One JSON/DataFrame-ready record per particle (see :class:`.SyntheticImage`)."""
    px = pixel_size_nm
    out = []
    diameters = parts.diameter_px
    for i in range(len(parts)):
        d_px = float(diameters[i])
        out.append({
            "label": i + 1, "y_px": float(parts.y[i]), "x_px": float(parts.x[i]),
            "diameter_nm": d_px * px, "diameter_px": d_px,
            "major_axis_nm": float(2 * parts.a[i] * px),
            "minor_axis_nm": float(2 * parts.b[i] * px),
            "orientation_deg": float(np.degrees(parts.theta[i])),
            "contrast": float(parts.weight[i]), "low_contrast": bool(parts.weight[i] < 0.5),
            "touching": tuple(sorted(int(j) + 1 for j in parts.touching[i])),
            "fringe_angle_deg": float(np.degrees(parts.fringe_angle[i])),
        })
    return out
