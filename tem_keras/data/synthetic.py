"""Synthetic TEM micrographs of nanoparticles with exact masks, instance labels and sizes.

Three imaging modes are modelled, each from the projected thickness of spheroidal particles
(thickness ``t = d * sqrt(1 - rho**2)`` through a particle of equivalent diameter ``d``, with
``rho`` the normalised elliptical radius), so particle edges are soft as in real micrographs:

``"bright-field"``
    Mass-thickness contrast: ``I = exp(-mu * t)`` -- particles darker than the support.
``"haadf"``
    Z-contrast: ``I = 1 + kappa * t`` -- particles brighter, roughly in proportion to thickness.
``"hrtem"``
    Weak-phase-object imaging through the contrast transfer function of an aberration-corrected
    microscope: lattice fringes inside the particles, Thon-ring speckle from the amorphous carbon,
    and particles only slightly different in mean intensity (the hard case of Sytwu et al. 2022).

Intensities are expected counts relative to the support (support ~ 1), multiplied by ``dose`` and
sampled with Poisson noise when ``dose`` is given. The module needs NumPy/SciPy only (no
TensorFlow), so tests, the demo and notebooks can make data quickly.

References
----------
.. [1] Horwath, J. P., Zakharov, D. N., Megret, R. & Stach, E. A. Understanding important features
   of deep learning models for segmentation of high-resolution transmission electron microscopy
   images. npj Comput. Mater. 6, 108 (2020).
.. [2] Sytwu, K., Groschner, C. & Scott, M. C. Understanding the influence of receptive field and
   network complexity in neural network-guided TEM image analysis. Microsc. Microanal. 28,
   1896-1904 (2022).
.. [3] Williams, D. B. & Carter, C. B. Transmission Electron Microscopy, 2nd ed., chapters 22
   (mass-thickness contrast), 28 (phase contrast, CTF). Springer (2009).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

__all__ = [
    "MODES",
    "SyntheticImage",
    "amorphous_support",
    "electron_wavelength_nm",
    "make_dataset",
    "make_image",
    "make_stack",
    "scherzer_like_defocus_nm",
]

MODES = ("bright-field", "haadf", "hrtem")
_MODE_ALIASES = {"bright-field": "bright-field", "brightfield": "bright-field",
                 "bf": "bright-field", "tem": "bright-field", "haadf": "haadf", "stem": "haadf",
                 "haadf-stem": "haadf", "hrtem": "hrtem"}

# Per-mode defaults (used where an argument is None). Sizes in nm; contrast as documented in
# make_image; texture as relative std of the support signal (HRTEM: phase in rad).
_DEFAULTS = {
    "bright-field": dict(pixel_size_nm=0.5, particle_diameter_nm=(8.0, 2.0), coverage=0.15,
                         contrast=0.45, background_texture=0.04, lattice_spacing_nm=0.0,
                         dose=200.0),
    "haadf": dict(pixel_size_nm=0.5, particle_diameter_nm=(8.0, 2.0), coverage=0.15,
                  contrast=1.5, background_texture=0.08, lattice_spacing_nm=0.0, dose=50.0),
    "hrtem": dict(pixel_size_nm=0.04, particle_diameter_nm=(2.5, 0.5), coverage=0.2,
                  contrast=0.08, background_texture=0.06, lattice_spacing_nm=0.235, dose=400.0),
}
_GAP_PX = 2.0            # free space between non-touching particles (one background pixel at least)
_NECK = 0.92             # touching pairs: centre distance = _NECK * (sum of radii along the line)
_FRINGE_AMPLITUDE = {"hrtem": 0.35, "haadf": 0.08, "bright-field": 0.08}  # lattice modulation
_HARMONICS = (3, 5)      # odd outline harmonics: they leave the ellipse area (to first order)
_HRTEM_PHASE = 0.35      # mean phase (rad) at the centre of a particle of mean diameter
_HRTEM_KV = 300.0
_HRTEM_INFO_LIMIT_NM = 0.1


# --------------------------------------------------------------------------------------------
# result type
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticImage:
    """A synthetic micrograph with its ground truth.

    Attributes
    ----------
    image : ndarray of float32, shape (H, W)
        Counts (``dose`` given; support ~ ``dose``) or noiseless relative intensity (support ~ 1).
    mask : ndarray of uint8, shape (H, W)
        0 = background, 1 = particle; equals ``instances > 0``.
    instances : ndarray of int32, shape (H, W)
        One label per particle, ``1..n`` in the order of ``particles``.
    particles : list of dict
        One record per particle (``pandas.DataFrame(particles)`` works): ``label``, ``y_px``,
        ``x_px`` (centre, pixel coordinates as in ``skimage.measure.regionprops``),
        ``diameter_nm`` (area-equivalent), ``diameter_px``, ``major_axis_nm``, ``minor_axis_nm``
        (full axes), ``orientation_deg`` (direction ``(cos, sin)`` of the major axis in
        ``(x, y) = (column, row)``, i.e. clockwise on screen from +x), ``contrast`` (relative
        scattering strength), ``low_contrast`` (bool), ``touching`` (tuple of labels of the
        particles it touches), ``fringe_angle_deg`` (direction of the lattice-fringe wave
        vector, same convention; NaN without fringes).
    pixel_size_nm : float
    mode : str
    params : dict
        Every generator parameter after defaults were filled in (JSON-ready).
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    particles: list
    pixel_size_nm: float
    mode: str
    params: dict = field(default_factory=dict)

    @property
    def n_particles(self) -> int:
        return len(self.particles)

    def table(self):
        """The particle records as a ``pandas.DataFrame`` (one row per particle)."""
        import pandas as pd

        return pd.DataFrame(self.particles)


@dataclass
class _Particles:
    """Geometry of n particles in pixel units (arrays of length n)."""

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
        return _Particles(self.y[idx] if y is None else y, self.x[idx] if x is None else x,
                          self.a[idx] * scale, self.b[idx] * scale, self.theta[idx],
                          self.weight[idx], self.fringe_angle[idx], self.fringe_phase[idx],
                          self.outline[idx], [set() for _ in np.atleast_1d(idx)])

    @property
    def diameter_px(self):
        """Area-equivalent diameters of the (irregular) elliptical outlines."""
        phi = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        r = _outline_radius(self.a[:, None], self.b[:, None], phi[None, :], self.outline)
        return 2.0 * np.sqrt(np.mean(r ** 2, axis=1))  # area = 1/2 integral r^2 dphi


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------
def _shape(size) -> tuple[int, int]:
    if np.isscalar(size):
        shape = (int(size), int(size))
    else:
        shape = tuple(int(s) for s in size)
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"size must be an int or (H, W) with both at least 8, got {size!r}")
    return shape


def _mode(mode: str) -> str:
    key = str(mode).lower().replace("_", "-").replace(" ", "-")
    if key not in _MODE_ALIASES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return _MODE_ALIASES[key]


def _resolve(shape, mode, *, pixel_size_nm=None, particle_diameter_nm=None, n_particles=None,
             coverage=None, touching_fraction=0.1, ellipticity=0.2, irregularity=0.02,
             low_contrast_fraction=0.1,
             contrast=None, dose="auto", blur_sigma_px=0.8, illumination_gradient=0.1,
             background_texture=None, lattice_spacing_nm=None, defocus_nm=None) -> dict:
    """Fill in per-mode defaults and check ranges; returns a JSON-ready dict."""
    d = _DEFAULTS[mode]
    p = dict(
        size=list(shape), mode=mode,
        pixel_size_nm=float(d["pixel_size_nm"] if pixel_size_nm is None else pixel_size_nm),
        particle_diameter_nm=[float(v) for v in (d["particle_diameter_nm"]
                                                 if particle_diameter_nm is None
                                                 else particle_diameter_nm)],
        coverage=float(d["coverage"] if coverage is None else coverage),
        touching_fraction=float(touching_fraction), ellipticity=float(ellipticity),
        irregularity=float(irregularity),
        low_contrast_fraction=float(low_contrast_fraction),
        contrast=float(d["contrast"] if contrast is None else contrast),
        dose=None if dose is None else float(d["dose"] if dose == "auto" else dose),
        blur_sigma_px=float(blur_sigma_px), illumination_gradient=float(illumination_gradient),
        background_texture=float(d["background_texture"] if background_texture is None
                                 else background_texture),
        lattice_spacing_nm=float(d["lattice_spacing_nm"] if lattice_spacing_nm is None
                                 else (lattice_spacing_nm or 0.0)),
    )
    if len(p["particle_diameter_nm"]) != 2 or p["particle_diameter_nm"][0] <= 0 \
            or p["particle_diameter_nm"][1] < 0:
        raise ValueError(f"particle_diameter_nm must be (mean > 0, std >= 0), "
                         f"got {particle_diameter_nm!r}")
    if p["pixel_size_nm"] <= 0:
        raise ValueError(f"pixel_size_nm must be positive, got {pixel_size_nm!r}")
    for name in ("touching_fraction", "low_contrast_fraction"):
        if not 0.0 <= p[name] <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p[name]}")
    if not 0.0 <= p["ellipticity"] < 0.9:
        raise ValueError(f"ellipticity (1 - minor/major) must be in [0, 0.9), got {ellipticity}")
    if not 0.0 <= p["irregularity"] <= 0.1:
        raise ValueError(f"irregularity must be in [0, 0.1], got {irregularity}")
    if not 0.0 <= p["coverage"] < 0.6:
        raise ValueError(f"coverage must be in [0, 0.6), got {coverage}")
    if p["dose"] is not None and p["dose"] <= 0:
        raise ValueError(f"dose must be positive electrons per pixel or None, got {dose!r}")
    spacing_px = p["lattice_spacing_nm"] / p["pixel_size_nm"]
    if p["lattice_spacing_nm"] and spacing_px < 2.0:
        raise ValueError(f"lattice spacing {p['lattice_spacing_nm']} nm is {spacing_px:.2f} px at "
                         f"{p['pixel_size_nm']} nm/px, below the Nyquist limit of 2 px; use a "
                         f"smaller pixel_size_nm or lattice_spacing_nm=0")
    if mode == "hrtem":
        p["defocus_nm"] = float(scherzer_like_defocus_nm(p["lattice_spacing_nm"] or 0.25)
                                if defocus_nm is None else defocus_nm)
        p["voltage_kv"] = _HRTEM_KV
    if n_particles is None:
        mean, std = p["particle_diameter_nm"]
        mean_d2_px = (mean ** 2 + std ** 2) / p["pixel_size_nm"] ** 2   # E[d^2] of the log-normal
        n_particles = int(round(p["coverage"] * shape[0] * shape[1] / (math.pi / 4 * mean_d2_px)))
        p["n_particles_from_coverage"] = True
    else:
        p["n_particles_from_coverage"] = False
    if int(n_particles) < 0:
        raise ValueError(f"n_particles must be >= 0, got {n_particles}")
    p["n_particles"] = int(n_particles)
    return p


# --------------------------------------------------------------------------------------------
# particle sizes and positions
# --------------------------------------------------------------------------------------------
def _lognormal_diameters(rng, n, mean_nm, std_nm, pixel_size_nm, max_px):
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


def _place(rng, shape, a, b, theta, *, touching_fraction, bound=None, margin=None,
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
    for i in failed:            # last resort: a free spot, tried 32 x 128 times
        done = np.flatnonzero(placed)
        for _ in range(32):
            py, px = propose(np.full(128, i))
            clash = np.any(np.hypot(py[:, None] - ys[done], px[:, None] - xs[done])
                           < bound[done] + bound[i] + _GAP_PX, axis=1)
            if not clash.all():
                k = int(np.argmin(clash))
                ys[i], xs[i], placed[i] = py[k], px[k], True
                break
    keep = np.flatnonzero(placed)
    if strict and keep.size < n:
        raise ValueError(f"could not place {n} particles without overlap in a {h}x{w} image "
                         f"(placed {keep.size}); ask for fewer or smaller particles")
    remap = {int(old): new for new, old in enumerate(keep)}
    contacts = [{remap[j] for j in touching.get(int(old), ()) if j in remap} for old in keep]
    return ys[keep], xs[keep], keep, contacts


def _draw_shapes(rng, d_px, p) -> _Particles:
    """Outlines, orientations, contrasts and fringe settings for particles of diameters ``d_px``.

    Positions are left at NaN (see :func:`_place`).
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
    return _Particles(nan, nan.copy(), a, b, theta, weight, fringe_angle, fringe_phase, outline,
                      [set() for _ in range(n)])


def _bounding_radius(parts: _Particles) -> np.ndarray:
    """Radius of a circle that holds each (irregular) outline."""
    return parts.a * (1.0 + np.abs(parts.outline[..., 0]).sum(axis=-1))


def _random_particles(rng, shape, p) -> _Particles:
    """Draw sizes and shapes, then place the particles (see :func:`_place`)."""
    n = p["n_particles"]
    mean, std = p["particle_diameter_nm"]
    d = _lognormal_diameters(rng, n, mean, std, p["pixel_size_nm"], min(shape) / 2)
    parts = _draw_shapes(rng, d, p)
    y, x, keep, contacts = _place(rng, shape, parts.a, parts.b, parts.theta,
                                  touching_fraction=p["touching_fraction"],
                                  bound=_bounding_radius(parts),
                                  strict=not p["n_particles_from_coverage"])
    if len(keep) < n:
        warnings.warn(f"placed {len(keep)} of {n} particles: the requested coverage does not fit "
                      f"without overlap", RuntimeWarning, stacklevel=3)
    placed = parts.subset(keep, y=y, x=x)
    placed.touching = contacts
    return placed


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def _rasterise(shape, parts: _Particles, pixel_size_nm, lattice_spacing_nm):
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


def amorphous_support(shape, pixel_size_nm: float, rng, *, grain_nm: float = 0.35,
                      mottle_nm: float = 6.0, mottle_weight: float = 0.6) -> np.ndarray:
    """Zero-mean, unit-variance texture of an amorphous carbon support film.

    White noise filtered in Fourier space by the sum of two Gaussians: a fine "grain" (the
    ~0.3 nm short-range order of amorphous carbon) and a coarse "mottle" (thickness variations
    over a few nm). Scales are in nm, so the texture follows the pixel size.

    Parameters
    ----------
    shape : tuple of int
    pixel_size_nm : float
    rng : numpy.random.Generator
    grain_nm, mottle_nm : float
        Gaussian correlation lengths (sigma) of the two components.
    mottle_weight : float
        Share of the variance in the coarse component (0..1).

    Returns
    -------
    ndarray of float64, shape ``shape``
    """
    noise = rng.standard_normal(shape)
    ky = sfft.fftfreq(shape[0])[:, None]
    kx = sfft.rfftfreq(shape[1])[None, :]
    k2 = ky ** 2 + kx ** 2
    spectrum = np.zeros_like(k2)
    for sigma_nm, weight in ((grain_nm, 1 - mottle_weight), (mottle_nm, mottle_weight)):
        sigma = max(sigma_nm / pixel_size_nm, 0.3)
        # unit variance for Gaussian-filtered unit white noise needs a factor 2 sqrt(pi) sigma
        spectrum += math.sqrt(weight) * 2 * math.sqrt(math.pi) * sigma \
            * np.exp(-2 * math.pi ** 2 * sigma ** 2 * k2)
    field_ = sfft.irfft2(sfft.rfft2(noise, workers=-1) * spectrum, s=shape, workers=-1)
    field_ -= field_.mean()
    return field_ / (field_.std() + 1e-12)


def _support(shape, p, rng):
    """Support texture for the mode: HRTEM sees the fine (0.06 nm) structure through the CTF."""
    if not p["background_texture"]:
        return 0.0
    if p["mode"] == "hrtem":
        return amorphous_support(shape, p["pixel_size_nm"], rng, grain_nm=0.06, mottle_nm=3.0,
                                 mottle_weight=0.2)
    return amorphous_support(shape, p["pixel_size_nm"], rng)


def _illumination(shape, gradient, rng) -> np.ndarray | float:
    """Multiplicative illumination: a linear ramp of total relative change ``gradient``."""
    if not gradient:
        return 1.0
    phi = rng.uniform(0, 2 * np.pi)
    y = (np.arange(shape[0]) / max(shape[0] - 1, 1) - 0.5)[:, None]
    x = (np.arange(shape[1]) / max(shape[1] - 1, 1) - 0.5)[None, :]
    ramp = x * math.cos(phi) + y * math.sin(phi)
    span = ramp.max() - ramp.min()
    return 1.0 + gradient * ramp / (span if span > 0 else 1.0)


def electron_wavelength_nm(voltage_kv: float = 300.0) -> float:
    """Relativistic electron wavelength in nm (0.00197 nm at 300 kV)."""
    v = voltage_kv * 1e3
    return 1.226426 / math.sqrt(v * (1 + 0.978476e-6 * v))


def scherzer_like_defocus_nm(spacing_nm: float, voltage_kv: float = _HRTEM_KV) -> float:
    """Defocus (Cs = 0) at which the phase-contrast transfer ``sin(chi)`` peaks at 1/spacing.

    With ``chi(k) = pi * lambda * defocus * k**2``, ``chi = pi/2`` at ``k = 1/spacing`` gives
    ``defocus = spacing**2 / (2 lambda)`` (14 nm for Au {111}, 0.235 nm, at 300 kV).
    """
    return spacing_nm ** 2 / (2 * electron_wavelength_nm(voltage_kv))


def _hrtem_intensity(phase, absorption, pixel_size_nm, defocus_nm, blur_sigma_px):
    """Linear (weak-phase, weak-amplitude) HRTEM image of an object ``exp(i phase - absorption)``.

    ``I = 1 + 2 F^-1[(Phase sin chi - Absorption cos chi) E]`` with ``chi = pi lambda df k^2``
    (aberration-corrected, Cs = 0), a Gaussian information-limit envelope ``E`` and the detector
    blur (Williams & Carter ch. 28).
    """
    shape = phase.shape
    lam = electron_wavelength_nm(_HRTEM_KV)
    ky = sfft.fftfreq(shape[0], d=pixel_size_nm)[:, None]
    kx = sfft.rfftfreq(shape[1], d=pixel_size_nm)[None, :]
    k2 = ky ** 2 + kx ** 2
    chi = math.pi * lam * defocus_nm * k2
    envelope = np.exp(-k2 * _HRTEM_INFO_LIMIT_NM ** 2 * math.pi ** 2 / 2)
    if blur_sigma_px:
        envelope = envelope * np.exp(-2 * math.pi ** 2 * (blur_sigma_px * pixel_size_nm) ** 2 * k2)
    spec = (sfft.rfft2(phase, workers=-1) * np.sin(chi)
            - sfft.rfft2(absorption, workers=-1) * np.cos(chi)) * envelope
    return 1.0 + 2.0 * sfft.irfft2(spec, s=shape, workers=-1)


def _intensity(mode, thickness, fringes, support, p, mean_d_nm, illumination):
    """Noiseless relative intensity (support ~ 1) of one frame for the given mode."""
    amp = p["background_texture"]
    t = thickness if fringes is None else thickness + _FRINGE_AMPLITUDE[mode] * fringes
    if mode == "bright-field":
        # attenuation giving the requested darkening at the centre of a particle of mean size
        mu = -math.log(max(1.0 - p["contrast"], 1e-3)) / mean_d_nm
        img = np.exp(-mu * t - amp * support)
        if p["blur_sigma_px"]:
            img = ndi.gaussian_filter(img, p["blur_sigma_px"], mode="nearest")
    elif mode == "haadf":
        img = 1.0 + p["contrast"] / mean_d_nm * t + amp * support
        if p["blur_sigma_px"]:
            img = ndi.gaussian_filter(img, p["blur_sigma_px"], mode="nearest")
    else:
        phase = _HRTEM_PHASE / mean_d_nm * t + amp * support
        absorption = p["contrast"] / 2 / mean_d_nm * thickness
        img = _hrtem_intensity(phase, absorption, p["pixel_size_nm"], p["defocus_nm"],
                               p["blur_sigma_px"])
    return np.clip(img * illumination, 0.0, None)


def _detect(intensity, dose, rng) -> np.ndarray:
    """Counts: Poisson(dose * intensity), or the noiseless intensity when ``dose`` is None."""
    if dose is None:
        return intensity.astype(np.float32)
    return rng.poisson(intensity * dose).astype(np.float32)


def _records(parts: _Particles, pixel_size_nm) -> list[dict]:
    """One JSON/DataFrame-ready record per particle (see :class:`SyntheticImage`)."""
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


# --------------------------------------------------------------------------------------------
# public generators
# --------------------------------------------------------------------------------------------
def make_image(size=256, mode: str = "bright-field", *, pixel_size_nm: float | None = None,
               particle_diameter_nm: tuple[float, float] | None = None,
               n_particles: int | None = None, coverage: float | None = None,
               touching_fraction: float = 0.1, ellipticity: float = 0.2,
               irregularity: float = 0.02, low_contrast_fraction: float = 0.1,
               contrast: float | None = None,
               dose: float | None | str = "auto", blur_sigma_px: float = 0.8,
               illumination_gradient: float = 0.1, background_texture: float | None = None,
               lattice_spacing_nm: float | None = None, defocus_nm: float | None = None,
               seed=None) -> SyntheticImage:
    """Make one synthetic TEM/STEM micrograph of nanoparticles with its exact ground truth.

    Particles are spheroids (area-equivalent diameters log-normal, elliptical outline, depth
    equal to the equivalent diameter) on an amorphous carbon support; the image is computed from
    their projected thickness, so edges are soft, small particles are fainter and touching
    particles merge in the binary mask while keeping separate instance labels.

    Parameters
    ----------
    size : int or (int, int)
        Image size ``H`` (square) or ``(H, W)`` in pixels.
    mode : {"bright-field", "haadf", "hrtem"}
        Contrast mechanism: bright-field (mass-thickness, particles dark), HAADF-STEM
        (Z-contrast, particles bright, ~ thickness) or HRTEM (weak phase contrast through the
        CTF; lattice fringes, particles barely different in mean intensity -- Sytwu et al. 2022).
    pixel_size_nm : float, optional
        Default 0.5 nm/px (bright-field, HAADF) or 0.04 nm/px (HRTEM).
    particle_diameter_nm : (float, float), optional
        Mean and standard deviation of the log-normal area-equivalent diameter; default
        (8, 2) nm, or (2.5, 0.5) nm for HRTEM. Diameters are clipped to 3 px .. min(H, W)/2.
    n_particles : int, optional
        Number of particles; all are placed (centres inside the frame) or ValueError is raised.
        Default: from ``coverage`` (placing as many as fit, with a warning when not all do).
    coverage : float, optional
        Expected area fraction covered by particles when ``n_particles`` is None (default 0.15,
        HRTEM 0.2).
    touching_fraction : float
        Probability that a particle is placed in contact with an earlier one (slight neck);
        the others keep at least 2 px of background to every neighbour.
    ellipticity : float
        Maximum ``1 - minor/major``; each particle draws uniformly from [0, ellipticity].
    irregularity : float
        Standard deviation of the 3rd and 5th harmonic of the outline radius (faceted, not
        perfectly elliptical particles); 0 for exact ellipses. Recorded diameters include it.
    low_contrast_fraction : float
        Fraction of particles scattering only 25-45 % as strongly as the others (all particles
        vary by +-20 %).
    contrast : float, optional
        Strength of the particle signal for a particle of mean diameter at its centre:
        bright-field -- fractional darkening (default 0.45); HAADF -- fractional brightening
        over the support (default 1.5); HRTEM -- twice the amplitude (absorption) contrast, i.e.
        roughly the fractional darkening of the mean (default 0.08).
    dose : float or None
        Electrons (counts) per pixel on the support: the image is ``Poisson(dose * I)``.
        None gives the noiseless relative intensity ``I`` (support ~ 1). Default per mode:
        200 (bright-field), 50 (HAADF), 400 (HRTEM).
    blur_sigma_px : float
        Gaussian point-spread function (probe/detector) applied before the noise.
    illumination_gradient : float
        Total relative change of the illumination across the field (random direction).
    background_texture : float, optional
        Standard deviation of the amorphous-carbon support signal (relative intensity; HRTEM:
        phase in rad); 0 for a flat support. Default 0.04 / 0.08 / 0.06.
    lattice_spacing_nm : float, optional
        Lattice-plane spacing of fringes inside particles, one random orientation and phase per
        particle. Default 0.235 nm (Au {111}) for HRTEM and none (0) otherwise; pass 0 to
        switch fringes off. Must be at least 2 px.
    defocus_nm : float, optional
        HRTEM only: defocus of the Cs-corrected CTF; default puts the first transfer maximum on
        the lattice spacing (``spacing**2 / (2 lambda)``, 300 kV).
    seed : int, numpy.random.Generator or SeedSequence, optional
        Randomness; the same seed gives identical output. Particle geometry, support texture and
        shot noise use separate child streams, so changing ``dose`` keeps the same particles.

    Returns
    -------
    SyntheticImage
        ``image`` (float32), ``mask`` (uint8), ``instances`` (int32), ``particles`` (records),
        ``pixel_size_nm``, ``mode`` and the resolved ``params``.

    References
    ----------
    Horwath et al., npj Comput. Mater. 6, 108 (2020): bright-field ETEM of Au nanoparticles.
    Sytwu, Groschner & Scott, Microsc. Microanal. 28, 1896 (2022): HRTEM of Au nanoparticles on
    amorphous carbon, where lattice fringes, not mean intensity, tell particle from support.

    Examples
    --------
    >>> s = make_image(128, "haadf", n_particles=5, seed=0)
    >>> s.image.shape, s.mask.dtype, int(s.instances.max())
    ((128, 128), dtype('uint8'), 5)
    """
    shape = _shape(size)
    mode = _mode(mode)
    p = _resolve(shape, mode, pixel_size_nm=pixel_size_nm,
                 particle_diameter_nm=particle_diameter_nm, n_particles=n_particles,
                 coverage=coverage, touching_fraction=touching_fraction, ellipticity=ellipticity,
                 irregularity=irregularity, low_contrast_fraction=low_contrast_fraction,
                 contrast=contrast, dose=dose,
                 blur_sigma_px=blur_sigma_px, illumination_gradient=illumination_gradient,
                 background_texture=background_texture, lattice_spacing_nm=lattice_spacing_nm,
                 defocus_nm=defocus_nm)
    rng = np.random.default_rng(seed)
    rng_geometry, rng_support, rng_noise = rng.spawn(3)
    parts = _random_particles(rng_geometry, shape, p)
    thickness, fringes, instances = _rasterise(shape, parts, p["pixel_size_nm"],
                                               p["lattice_spacing_nm"])
    support = _support(shape, p, rng_support)
    illumination = _illumination(shape, p["illumination_gradient"], rng_support)
    intensity = _intensity(mode, thickness, fringes, support, p, p["particle_diameter_nm"][0],
                           illumination)
    image = _detect(intensity, p["dose"], rng_noise)
    return SyntheticImage(image=image, mask=(instances > 0).astype(np.uint8), instances=instances,
                          particles=_records(parts, p["pixel_size_nm"]),
                          pixel_size_nm=p["pixel_size_nm"], mode=mode, params=p)


def _child_rng(seed: int, index: int) -> np.random.Generator:
    """Generator for item ``index`` of a collection: independent of how many items there are."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def make_dataset(out_dir, n_images: int = 8, size=256, mode: str = "bright-field", *,
                 pixel_size_nm: float | None = None, seed: int | None = 0,
                 overwrite: bool = False, progress: bool | None = None,
                 **image_kwargs) -> Path:
    """Write a synthetic segmentation data set in the tem_keras folder layout.

    Writes ``out_dir/images/synthetic_000.tif`` ... (float32 ImageJ TIFF with the pixel size),
    ``out_dir/masks/synthetic_000.png`` ... (0 background, 1 particle) and
    ``out_dir/dataset.json`` with the name, mode, pixel size, classes, every generator
    parameter (with seed and tem_keras version) and the particle count of each image.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Target folder; it must be absent or empty unless ``overwrite`` is True.
    n_images : int
        Number of images. Image ``i`` uses the child seed ``SeedSequence(seed, spawn_key=(i,))``,
        so asking for more images leaves the earlier ones unchanged.
    size, mode, pixel_size_nm, **image_kwargs
        Passed to :func:`make_image` (``seed`` excluded).
    seed : int, optional
        Root seed; None draws one and records it in ``dataset.json``.
    overwrite : bool
        Allow writing into a non-empty folder; earlier ``synthetic_*`` images and masks there
        are removed first so the folder holds exactly this data set.
    progress : bool, optional
        Show a tqdm progress bar; default only for 50 images or more.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is False.
    """
    from tqdm.auto import tqdm

    from .. import __version__
    from ..io import write_image, write_mask

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: folder is not empty; pass overwrite=True to write "
                              f"the synthetic data set into it")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    if "seed" in image_kwargs:
        raise TypeError("make_dataset takes one root seed; image i uses a child of it")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    seed = int(seed)
    mode = _mode(mode)
    images, masks = out_dir / "images", out_dir / "masks"
    for folder, pattern in ((images, "synthetic_*.tif"), (masks, "synthetic_*.png")):
        if folder.is_dir():
            for old in folder.glob(pattern):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    counts, params = {}, None
    show = n_images >= 50 if progress is None else progress
    for i in tqdm(range(int(n_images)), desc="synthetic images", disable=not show, unit="img"):
        sample = make_image(size, mode, pixel_size_nm=pixel_size_nm, seed=_child_rng(seed, i),
                            **image_kwargs)
        stem = f"synthetic_{i:03d}"
        write_image(images / f"{stem}.tif", sample.image, sample.pixel_size_nm, overwrite=True)
        write_mask(masks / f"{stem}.png", sample.mask, overwrite=True)
        counts[stem] = sample.n_particles
        params = sample.params
    generator = {"function": "tem_keras.data.synthetic.make_image", **params, "seed": seed,
                 "child_seeds": "numpy.random.SeedSequence(seed, spawn_key=(i,))",
                 "tem_keras_version": __version__}
    meta = {"name": out_dir.name or f"synthetic-{mode}", "mode": mode,
            "pixel_size_nm": params["pixel_size_nm"],
            "classes": {"0": "background", "1": "particle"}, "generator": generator,
            "n_images": int(n_images), "particles": counts}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def _coarsen(radius, n_frames, growth, coarsening_rate, min_radius):
    """Radii over time under Lifshitz-Slyozov-Wagner-type ripening plus uniform growth.

    ``dr/dt = K / r * (1/<r> - 1/r) + g`` with ``K = coarsening_rate * <r0>**3``: particles above
    the mean radius grow, those below shrink, and the total volume is conserved (to first order
    in the step) while ``g = 0``; a particle below ``min_radius`` has dissolved (NaN from then on).
    """
    r = np.array(radius, dtype=float)
    out = np.full((n_frames, r.size), np.nan)
    k = coarsening_rate * np.mean(r) ** 3 if r.size else 0.0
    for t in range(n_frames):
        out[t] = r
        alive = np.isfinite(r)
        if not alive.any():
            continue
        rc = np.mean(r[alive])
        r = r + k / r * (1 / rc - 1 / r) + growth
        r[r < min_radius] = np.nan
    return out


def make_stack(n_frames: int = 10, size=256, mode: str = "bright-field", *,
               growth_rate: float = 0.0, coarsening_rate: float = 0.03, drift_px: float = 0.3,
               seed=None, **image_kwargs):
    """Make an in-situ video: particles that ripen (Ostwald), grow and drift between frames.

    Radii follow :func:`_coarsen` (LSW-type ripening: larger particles grow at the expense of
    smaller ones, which can dissolve and disappear) plus uniform growth; every particle does a
    small random walk. The support texture and illumination are fixed, the shot noise is new
    in each frame. Particles never touch (positions are chosen so they cannot collide).

    Parameters
    ----------
    n_frames : int
    size, mode
        As in :func:`make_image`.
    growth_rate : float
        Uniform radius growth per frame as a fraction of the initial mean radius (negative
        shrinks all particles).
    coarsening_rate : float
        Ripening strength per frame (dimensionless, ``K / <r0>**3``); 0 keeps sizes fixed.
    drift_px : float
        Standard deviation of each particle's step per frame, in pixels.
    seed : int, numpy.random.Generator or SeedSequence, optional
    **image_kwargs
        Other :func:`make_image` parameters (``touching_fraction`` is not used).

    Returns
    -------
    frames : ndarray of float32, shape (T, H, W)
    masks : ndarray of uint8, shape (T, H, W)
    tracks : pandas.DataFrame
        One row per particle and frame in which it exists: ``frame``, ``particle_id`` (the same
        id in every frame), ``y_px``, ``x_px``, ``diameter_nm``, ``major_axis_nm``,
        ``minor_axis_nm``.
    """
    import pandas as pd

    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    image_kwargs.pop("touching_fraction", None)
    shape = _shape(size)
    mode = _mode(mode)
    p = _resolve(shape, mode, touching_fraction=0.0, **image_kwargs)
    rng = np.random.default_rng(seed)
    rng_geometry, rng_support, rng_noise = rng.spawn(3)
    n = p["n_particles"]
    px = p["pixel_size_nm"]
    # sizes and their evolution first: they decide how much room each particle needs
    mean, std = p["particle_diameter_nm"]
    d0 = _lognormal_diameters(rng_geometry, n, mean, std, px, min(shape) / 2)
    radii = _coarsen(d0 / 2, int(n_frames), growth_rate * np.mean(d0) / 2 if n else 0.0,
                     coarsening_rate, min_radius=1.5)
    scale = radii / (d0 / 2)                                     # [T, n], NaN once dissolved
    steps = rng_geometry.normal(0.0, drift_px, (int(n_frames), n, 2))
    steps[0] = 0.0
    walk = np.cumsum(steps, axis=0)
    reach = np.max(np.hypot(walk[..., 0], walk[..., 1]), axis=0) if n else np.zeros(0)
    grow = np.nanmax(np.nan_to_num(scale, nan=0.0), axis=0) if n else np.zeros(0)
    parts = _draw_shapes(rng_geometry, d0, p)
    y, x, keep, _ = _place(rng_geometry, shape, parts.a, parts.b, parts.theta,
                           touching_fraction=0.0, bound=_bounding_radius(parts) * grow + reach,
                           margin=np.ceil(reach) + 1, strict=not p["n_particles_from_coverage"])
    if len(keep) < n:
        warnings.warn(f"placed {len(keep)} of {n} particles: the requested coverage does not fit "
                      f"without overlap", RuntimeWarning, stacklevel=2)
    support = _support(shape, p, rng_support)
    illumination = _illumination(shape, p["illumination_gradient"], rng_support)
    frames = np.empty((int(n_frames),) + shape, np.float32)
    masks = np.empty((int(n_frames),) + shape, np.uint8)
    rows = []
    for t in range(int(n_frames)):
        s = scale[t, keep]
        alive = np.flatnonzero(np.isfinite(s))                   # positions in keep / y / x
        frame_parts = parts.subset(keep[alive], y=y[alive] + walk[t, keep[alive], 0],
                                   x=x[alive] + walk[t, keep[alive], 1], scale=s[alive])
        thickness, fringes, instances = _rasterise(shape, frame_parts, px,
                                                   p["lattice_spacing_nm"])
        intensity = _intensity(mode, thickness, fringes, support, p, mean, illumination)
        frames[t] = _detect(intensity, p["dose"], rng_noise)
        masks[t] = instances > 0
        for j, rec in zip(alive, _records(frame_parts, px)):
            rows.append({"frame": t, "particle_id": int(j) + 1, "y_px": rec["y_px"],
                         "x_px": rec["x_px"], "diameter_nm": rec["diameter_nm"],
                         "major_axis_nm": rec["major_axis_nm"],
                         "minor_axis_nm": rec["minor_axis_nm"]})
    columns = ["frame", "particle_id", "y_px", "x_px", "diameter_nm", "major_axis_nm",
               "minor_axis_nm"]
    return frames, masks, pd.DataFrame(rows, columns=columns)
