"""Imaging models: support texture, illumination, and the three contrast mechanisms.

From the projected thickness of the particles (see :mod:`.particles`) to the noiseless relative
intensity (support ~ 1) and the detected counts:

``"bright-field"``
    Mass-thickness contrast: ``I = exp(-mu * t)`` -- particles darker than the support.
``"haadf"``
    Z-contrast: ``I = 1 + kappa * t`` -- particles brighter, roughly in proportion to thickness.
``"hrtem"``
    Weak-phase-object imaging through the contrast transfer function (CTF) of an
    aberration-corrected microscope: lattice fringes inside the particles, Thon-ring speckle from
    the amorphous carbon, and particles only slightly different in mean intensity.

References: Williams & Carter, Transmission Electron Microscopy, 2nd ed., ch. 22 (mass-thickness
contrast) and 28 (phase contrast, CTF); Sytwu, Groschner & Scott 2022 (HRTEM of Au on carbon).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

HRTEM_VOLTAGE_KV = 300.0
"""Accelerating voltage (kV) of the simulated HRTEM microscope."""

_FRINGE_AMPLITUDE = {"hrtem": 0.35, "haadf": 0.08, "bright-field": 0.08}  # lattice modulation
_HRTEM_PHASE = 0.35      # mean phase (rad) at the centre of a particle of mean diameter
_HRTEM_INFO_LIMIT_NM = 0.1


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


def support_texture(shape, p: dict, rng):
    """Support texture for ``p["mode"]`` (0.0 when ``p["background_texture"]`` is 0).

    ``p`` is a resolved parameter record (:meth:`.SynthesisParams.resolve`). HRTEM sees the
    fine (0.06 nm) structure of the carbon through the CTF.
    """
    if not p["background_texture"]:
        return 0.0
    if p["mode"] == "hrtem":
        return amorphous_support(shape, p["pixel_size_nm"], rng, grain_nm=0.06, mottle_nm=3.0,
                                 mottle_weight=0.2)
    return amorphous_support(shape, p["pixel_size_nm"], rng)


def illumination_ramp(shape, gradient, rng) -> np.ndarray | float:
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


def scherzer_like_defocus_nm(spacing_nm: float, voltage_kv: float = HRTEM_VOLTAGE_KV) -> float:
    """Defocus (Cs = 0) at which the phase-contrast transfer ``sin(chi)`` peaks at 1/spacing.

    With ``chi(k) = pi * lambda * defocus * k**2``, ``chi = pi/2`` at ``k = 1/spacing`` gives
    ``defocus = spacing**2 / (2 lambda)`` (14 nm for Au {111}, 0.235 nm, at 300 kV).
    """
    return spacing_nm ** 2 / (2 * electron_wavelength_nm(voltage_kv))


def hrtem_intensity(phase, absorption, pixel_size_nm, defocus_nm, blur_sigma_px):
    """Linear (weak-phase, weak-amplitude) HRTEM image of an object ``exp(i phase - absorption)``.

    ``I = 1 + 2 F^-1[(Phase sin chi - Absorption cos chi) E]`` with ``chi = pi lambda df k^2``
    (aberration-corrected, Cs = 0), a Gaussian information-limit envelope ``E`` and the detector
    blur (Williams & Carter ch. 28).
    """
    shape = phase.shape
    lam = electron_wavelength_nm(HRTEM_VOLTAGE_KV)
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


def relative_intensity(mode, thickness, fringes, support, p: dict, mean_d_nm, illumination):
    """Noiseless relative intensity (support ~ 1) of one frame for the given mode.

    ``thickness`` and ``fringes`` come from :func:`.particles.rasterise`, ``support`` from
    :func:`support_texture`, ``illumination`` from :func:`illumination_ramp`; ``p`` is the
    resolved parameter record and ``mean_d_nm`` the mean particle diameter that ``contrast``
    refers to.
    """
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
        img = hrtem_intensity(phase, absorption, p["pixel_size_nm"], p["defocus_nm"],
                               p["blur_sigma_px"])
    return np.clip(img * illumination, 0.0, None)


def detect_counts(intensity, dose, rng) -> np.ndarray:
    """Counts: Poisson(dose * intensity), or the noiseless intensity when ``dose`` is None."""
    if dose is None:
        return intensity.astype(np.float32)
    return rng.poisson(intensity * dose).astype(np.float32)


def sem_like(intensity, dose: float, rng, *, edge: float = 0.6, texture: float = 0.08,
             edge_sigma_px: float = 1.0) -> np.ndarray:
    """An SEM-like secondary-electron image from a noiseless HAADF one (particles bright).

    Secondary-electron yield rises where the beam meets a surface obliquely, so particles look
    bright with brighter rims on a granular substrate (Goldstein et al., *Scanning Electron
    Microscopy and X-Ray Microanalysis*, 4th ed., ch. 2).

    The particle signal (``intensity - 1``, scaled to at most 1) is kept at 0.8 of its strength
    and its edges are brightened by its Gaussian gradient magnitude (the edge effect of secondary
    electrons); a granular substrate texture (:func:`amorphous_support` at a 2 px grain and an
    8 px mottle) is added, then Poisson noise at ``dose`` counts per pixel.

    Parameters
    ----------
    intensity : (H, W) ndarray
        Noiseless relative intensity of :func:`~tem_keras.data.synthetic.make_image` with
        ``mode="haadf", dose=None``.
    dose : float
        Counts per pixel of the substrate.
    rng : numpy.random.Generator
    edge, texture : float
        Relative strength of the edge brightening and of the substrate texture.
    edge_sigma_px : float
        Scale of the edge brightening.

    Returns
    -------
    ndarray of float32
    """
    signal = np.clip(intensity - 1.0, 0, None)
    signal /= max(float(signal.max()), 1e-6)
    rim = ndi.gaussian_gradient_magnitude(signal, edge_sigma_px)
    rim /= max(float(np.percentile(rim, 99.9)), 1e-6)
    substrate = amorphous_support(signal.shape, 1.0, rng, grain_nm=2.0, mottle_nm=8.0)
    clean = np.clip(1.0 + 0.8 * signal + edge * rim + texture * substrate, 0.05, None)
    return (rng.poisson(dose * clean) / dose).astype(np.float32)
