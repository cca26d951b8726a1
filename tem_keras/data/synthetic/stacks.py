"""In-situ videos: particles that ripen, grow and drift between frames (:func:`make_stack`)."""

from __future__ import annotations

import warnings

import numpy as np

from .imaging import detect_counts, illumination_ramp, relative_intensity, support_texture
from .params import SynthesisParams, canonical_mode, image_shape, synthesis_params
from .shapes import (bounding_radius, draw_shapes, lognormal_diameters, particle_records,
                        place_particles, rasterise)


def coarsen_radii(radius, n_frames, growth, coarsening_rate, min_radius):
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
               params: SynthesisParams | None = None, seed=None, **image_kwargs):
    """Make an in-situ video: particles that ripen (Ostwald), grow and drift between frames.

    Radii follow :func:`coarsen_radii` (LSW-type ripening: larger particles grow at the expense of
    smaller ones, which can dissolve and disappear) plus uniform growth; every particle does a
    small random walk. The support texture and illumination are fixed, the shot noise is new
    in each frame. Particles never touch (positions are chosen so they cannot collide).

    Parameters
    ----------
    n_frames : int
    size, mode, params
        As in :func:`.make_image`.
    growth_rate : float
        Uniform radius growth per frame as a fraction of the initial mean radius (negative
        shrinks all particles).
    coarsening_rate : float
        Ripening strength per frame (dimensionless, ``K / <r0>**3``); 0 keeps sizes fixed.
    drift_px : float
        Standard deviation of each particle's step per frame, in pixels.
    seed : int, numpy.random.Generator or SeedSequence, optional
    **image_kwargs
        Other :func:`.make_image` parameters (``touching_fraction`` is not used).

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
    shape = image_shape(size)
    mode = canonical_mode(mode)
    image_kwargs["touching_fraction"] = 0.0
    p = synthesis_params(params, image_kwargs, caller="make_stack").resolve(shape, mode)
    rng = np.random.default_rng(seed)
    rng_geometry, rng_support, rng_noise = rng.spawn(3)
    n = p["n_particles"]
    px = p["pixel_size_nm"]
    # sizes and their evolution first: they decide how much room each particle needs
    mean, std = p["particle_diameter_nm"]
    d0 = lognormal_diameters(rng_geometry, n, mean, std, px, min(shape) / 2)
    radii = coarsen_radii(d0 / 2, int(n_frames), growth_rate * np.mean(d0) / 2 if n else 0.0,
                          coarsening_rate, min_radius=1.5)
    scale = radii / (d0 / 2)                                     # [T, n], NaN once dissolved
    steps = rng_geometry.normal(0.0, drift_px, (int(n_frames), n, 2))
    steps[0] = 0.0
    walk = np.cumsum(steps, axis=0)
    reach = np.max(np.hypot(walk[..., 0], walk[..., 1]), axis=0) if n else np.zeros(0)
    grow = np.nanmax(np.nan_to_num(scale, nan=0.0), axis=0) if n else np.zeros(0)
    parts = draw_shapes(rng_geometry, d0, p)
    y, x, keep, _ = place_particles(rng_geometry, shape, parts.a, parts.b, parts.theta,
                                    touching_fraction=0.0,
                                    bound=bounding_radius(parts) * grow + reach,
                                    margin=np.ceil(reach) + 1,
                                    strict=not p["n_particles_from_coverage"])
    if len(keep) < n:
        warnings.warn(f"placed {len(keep)} of {n} particles: the requested coverage does not fit "
                      f"without overlap", RuntimeWarning, stacklevel=2)
    support = support_texture(shape, p, rng_support)
    illumination = illumination_ramp(shape, p["illumination_gradient"], rng_support)
    frames = np.empty((int(n_frames),) + shape, np.float32)
    masks = np.empty((int(n_frames),) + shape, np.uint8)
    rows = []
    for t in range(int(n_frames)):
        s = scale[t, keep]
        alive = np.flatnonzero(np.isfinite(s))                   # positions in keep / y / x
        frame_parts = parts.subset(keep[alive], y=y[alive] + walk[t, keep[alive], 0],
                                   x=x[alive] + walk[t, keep[alive], 1], scale=s[alive])
        thickness, fringes, instances = rasterise(shape, frame_parts, px,
                                                  p["lattice_spacing_nm"])
        intensity = relative_intensity(mode, thickness, fringes, support, p, mean, illumination)
        frames[t] = detect_counts(intensity, p["dose"], rng_noise)
        masks[t] = instances > 0
        for j, rec in zip(alive, particle_records(frame_parts, px)):
            rows.append({"frame": t, "particle_id": int(j) + 1, "y_px": rec["y_px"],
                         "x_px": rec["x_px"], "diameter_nm": rec["diameter_nm"],
                         "major_axis_nm": rec["major_axis_nm"],
                         "minor_axis_nm": rec["minor_axis_nm"]})
    columns = ["frame", "particle_id", "y_px", "x_px", "diameter_nm", "major_axis_nm",
               "minor_axis_nm"]
    return frames, masks, pd.DataFrame(rows, columns=columns)
