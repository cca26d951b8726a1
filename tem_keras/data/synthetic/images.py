"""One synthetic micrograph: :class:`SyntheticImage` and :func:`make_image`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .imaging import detect_counts, illumination_ramp, relative_intensity, support_texture
from .params import SynthesisParams, canonical_mode, image_shape, synthesis_params
from .shapes import particle_records, random_particles, rasterise


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
        """Number of particles placed."""
        return len(self.particles)

    def table(self):
        """The particle records as a ``pandas.DataFrame`` (one row per particle)."""
        import pandas as pd

        return pd.DataFrame(self.particles)


def make_image(size=256, mode: str = "bright-field", *, params: SynthesisParams | None = None,
               seed=None, **overrides) -> SyntheticImage:
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
    params : SynthesisParams or dict, optional
        The generator parameters below gathered in one object; keyword arguments override them.
        A dict is read with :meth:`SynthesisParams.from_dict` (e.g. ``SyntheticImage.params``
        or the ``"generator"`` record of a ``dataset.json``, which reproduces the images).
    seed : int, numpy.random.Generator or SeedSequence, optional
        Randomness; the same seed gives identical output. Particle geometry, support texture and
        shot noise use separate child streams, so changing ``dose`` keeps the same particles.
    **overrides
        Any field of :class:`SynthesisParams`, as documented under "Other Parameters".

    Other Parameters
    ----------------
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
    shape = image_shape(size)
    mode = canonical_mode(mode)
    p = synthesis_params(params, overrides).resolve(shape, mode)
    rng = np.random.default_rng(seed)
    rng_geometry, rng_support, rng_noise = rng.spawn(3)
    parts = random_particles(rng_geometry, shape, p)
    thickness, fringes, instances = rasterise(shape, parts, p["pixel_size_nm"],
                                              p["lattice_spacing_nm"])
    support = support_texture(shape, p, rng_support)
    illumination = illumination_ramp(shape, p["illumination_gradient"], rng_support)
    intensity = relative_intensity(mode, thickness, fringes, support, p,
                                   p["particle_diameter_nm"][0], illumination)
    image = detect_counts(intensity, p["dose"], rng_noise)
    return SyntheticImage(image=image, mask=(instances > 0).astype(np.uint8), instances=instances,
                          particles=particle_records(parts, p["pixel_size_nm"]),
                          pixel_size_nm=p["pixel_size_nm"], mode=mode, params=p)
