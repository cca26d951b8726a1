"""The generator's parameters: :class:`SynthesisParams`, the imaging modes and per-mode defaults."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .imaging import HRTEM_VOLTAGE_KV, scherzer_like_defocus_nm

MODES = ("bright-field", "haadf", "hrtem")
_MODE_ALIASES = {"bright-field": "bright-field", "brightfield": "bright-field",
                 "bf": "bright-field", "tem": "bright-field", "haadf": "haadf", "stem": "haadf",
                 "haadf-stem": "haadf", "hrtem": "hrtem"}

# Per-mode defaults (used where a parameter is None). Sizes in nm; contrast as documented in
# make_image; texture as relative std of the support signal (HRTEM: phase in rad).
MODE_DEFAULTS = {
    "bright-field": dict(pixel_size_nm=0.5, particle_diameter_nm=(8.0, 2.0), coverage=0.15,
                         contrast=0.45, background_texture=0.04, lattice_spacing_nm=0.0,
                         dose=200.0),
    "haadf": dict(pixel_size_nm=0.5, particle_diameter_nm=(8.0, 2.0), coverage=0.15,
                  contrast=1.5, background_texture=0.08, lattice_spacing_nm=0.0, dose=50.0),
    "hrtem": dict(pixel_size_nm=0.04, particle_diameter_nm=(2.5, 0.5), coverage=0.2,
                  contrast=0.08, background_texture=0.06, lattice_spacing_nm=0.235, dose=400.0),
}
"""Values used for the parameters left at None, per mode."""

# keys of a resolved record (``SyntheticImage.params``, ``dataset.json`` "generator") that are
# not parameters: from_dict skips them
_RECORD_ONLY = frozenset({"function", "size", "mode", "seed", "child_seeds", "tem_keras_version",
                          "n_particles_from_coverage", "voltage_kv"})


#: the largest synthetic image, in pixels (8192² px: a few float64 arrays of 0.5 GB each)
MAX_PIXELS = 8192 * 8192


def image_shape(size) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair; both sides at least 8 px, at most
    :data:`MAX_PIXELS` in all (refused before any memory is taken).

    Raises
    ------
    TypeError, ValueError
        For anything else.
    """
    from ...validation import check_int

    pair = [size, size] if np.isscalar(size) or isinstance(size, bool) else list(size)
    if len(pair) != 2:
        raise ValueError(f"size must be an int or (H, W) with both at least 8, got {size!r}")
    shape = tuple(check_int("size", s, 8) for s in pair)
    if shape[0] * shape[1] > MAX_PIXELS:
        raise ValueError(f"size {shape[0]} × {shape[1]} px is too large for a synthetic image: at most "
                         f"{MAX_PIXELS / 1e6:.0f} Mpx (8192 × 8192), which already takes about "
                         f"{MAX_PIXELS * 8 * 6 / 2**30:.0f} GB while it is made")
    return shape


def canonical_mode(mode: str) -> str:
    """The name in :data:`MODES` of ``mode`` or an alias (``"bf"``, ``"stem"``, ``"tem"``, ...).

    Raises
    ------
    ValueError
        For an unknown mode.
    """
    key = str(mode).lower().replace("_", "-").replace(" ", "-")
    if key not in _MODE_ALIASES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return _MODE_ALIASES[key]


@dataclass(frozen=True)
class SynthesisParams:
    """Everything :func:`.make_image` draws an image from, except its size, mode and seed.

    A parameter left at None takes the per-mode default (:data:`MODE_DEFAULTS`) when the
    parameters are resolved for a mode (:meth:`resolve`). Values are checked when the object is
    made; the lattice-spacing check needs the pixel size of the mode and happens in
    :meth:`resolve`. Parameters are documented in :func:`.make_image`.

    Examples
    --------
    >>> p = SynthesisParams(n_particles=5, dose=None)
    >>> SynthesisParams.from_dict(p.to_dict()) == p
    True
    >>> from tem_keras.data.synthetic import make_image
    >>> make_image(64, "haadf", params=p, seed=0).image.shape
    (64, 64)
    """

    pixel_size_nm: float | None = None
    particle_diameter_nm: tuple[float, float] | None = None
    n_particles: int | None = None
    coverage: float | None = None
    touching_fraction: float = 0.1
    ellipticity: float = 0.2
    irregularity: float = 0.02
    low_contrast_fraction: float = 0.1
    contrast: float | None = None
    dose: float | None | str = "auto"
    blur_sigma_px: float = 0.8
    illumination_gradient: float = 0.1
    background_texture: float | None = None
    lattice_spacing_nm: float | None = None
    defocus_nm: float | None = None

    def __post_init__(self):
        def store(name, value):
            object.__setattr__(self, name, value)

        diameter = self.particle_diameter_nm
        if diameter is not None:
            try:
                values = tuple(float(v) for v in diameter)
            except TypeError:
                values = ()
            if len(values) != 2 or values[0] <= 0 or values[1] < 0:
                raise ValueError(f"particle_diameter_nm must be (mean > 0, std >= 0), "
                                 f"got {diameter!r}")
            store("particle_diameter_nm", values)
        if self.pixel_size_nm is not None:
            if float(self.pixel_size_nm) <= 0:
                raise ValueError(f"pixel_size_nm must be positive, got {self.pixel_size_nm!r}")
            store("pixel_size_nm", float(self.pixel_size_nm))
        for name in ("touching_fraction", "low_contrast_fraction"):
            store(name, float(getattr(self, name)))
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= float(self.ellipticity) < 0.9:
            raise ValueError(f"ellipticity (1 - minor/major) must be in [0, 0.9), "
                             f"got {self.ellipticity}")
        if not 0.0 <= float(self.irregularity) <= 0.1:
            raise ValueError(f"irregularity must be in [0, 0.1], got {self.irregularity}")
        if self.coverage is not None and not 0.0 <= float(self.coverage) < 0.6:
            raise ValueError(f"coverage must be in [0, 0.6), got {self.coverage}")
        if self.dose is not None and not (isinstance(self.dose, str) and self.dose == "auto"):
            if isinstance(self.dose, str) or float(self.dose) <= 0:
                raise ValueError(f"dose must be positive electrons per pixel or None, "
                                 f"got {self.dose!r}")
            store("dose", float(self.dose))
        if self.n_particles is not None:
            if int(self.n_particles) < 0:
                raise ValueError(f"n_particles must be >= 0, got {self.n_particles}")
            store("n_particles", int(self.n_particles))
        if float(self.blur_sigma_px) < 0:
            raise ValueError(f"blur_sigma_px must be >= 0, got {self.blur_sigma_px}")
        for name in ("ellipticity", "irregularity", "blur_sigma_px", "illumination_gradient"):
            store(name, float(getattr(self, name)))
        for name in ("coverage", "contrast", "background_texture", "lattice_spacing_nm",
                     "defocus_nm"):
            if getattr(self, name) is not None:
                store(name, float(getattr(self, name)))

    # ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The parameters as a JSON-ready dict (None = per-mode default)."""
        out = dataclasses.asdict(self)
        if out["particle_diameter_nm"] is not None:
            out["particle_diameter_nm"] = list(out["particle_diameter_nm"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthesisParams:
        """Parameters from :meth:`to_dict`, ``SyntheticImage.params`` or a ``dataset.json``
        ``"generator"`` record.

        Record-only keys (``function``, ``size``, ``mode``, ``seed``, ``voltage_kv``, ...) are
        skipped; a particle count that was derived from ``coverage`` is dropped so that it is
        derived again.

        Raises
        ------
        ValueError
            For keys that are neither parameters nor record keys, or invalid values.
        """
        data = dict(data)
        if data.get("n_particles_from_coverage"):
            data.pop("n_particles", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _RECORD_ONLY)
        if unknown:
            raise ValueError(f"unknown synthesis parameter(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(names))}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes) -> SynthesisParams:
        """A copy with ``changes`` applied (checked again)."""
        names = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in names:
                raise TypeError(f"unknown synthesis parameter {name!r}")
        return dataclasses.replace(self, **changes)

    def resolve(self, size, mode: str) -> dict:
        """The JSON-ready record of every value for an image of ``size`` in ``mode``.

        Per-mode defaults filled in; ``n_particles`` derived from ``coverage`` when None
        (``n_particles_from_coverage`` says which); HRTEM adds ``defocus_nm`` and
        ``voltage_kv``. This is ``SyntheticImage.params`` and the ``dataset.json`` record.

        Raises
        ------
        ValueError
            If the lattice spacing is below 2 px at the pixel size of the mode.
        """
        shape, mode = image_shape(size), canonical_mode(mode)
        d = MODE_DEFAULTS[mode]

        def pick(name):
            value = getattr(self, name)
            return float(d[name] if value is None else value)

        p = dict(
            size=list(shape), mode=mode, pixel_size_nm=pick("pixel_size_nm"),
            particle_diameter_nm=[float(v) for v in (d["particle_diameter_nm"]
                                                     if self.particle_diameter_nm is None
                                                     else self.particle_diameter_nm)],
            coverage=pick("coverage"), touching_fraction=self.touching_fraction,
            ellipticity=self.ellipticity, irregularity=self.irregularity,
            low_contrast_fraction=self.low_contrast_fraction, contrast=pick("contrast"),
            dose=None if self.dose is None else float(d["dose"] if self.dose == "auto"
                                                      else self.dose),
            blur_sigma_px=self.blur_sigma_px, illumination_gradient=self.illumination_gradient,
            background_texture=pick("background_texture"),
            lattice_spacing_nm=float(d["lattice_spacing_nm"] if self.lattice_spacing_nm is None
                                     else (self.lattice_spacing_nm or 0.0)),
        )
        spacing_px = p["lattice_spacing_nm"] / p["pixel_size_nm"]
        if p["lattice_spacing_nm"] and spacing_px < 2.0:
            raise ValueError(f"lattice spacing {p['lattice_spacing_nm']} nm is {spacing_px:.2f} px "
                             f"at {p['pixel_size_nm']} nm/px, below the Nyquist limit of 2 px; use "
                             f"a smaller pixel_size_nm or lattice_spacing_nm=0")
        if mode == "hrtem":
            p["defocus_nm"] = float(scherzer_like_defocus_nm(p["lattice_spacing_nm"] or 0.25)
                                    if self.defocus_nm is None else self.defocus_nm)
            p["voltage_kv"] = HRTEM_VOLTAGE_KV
        n_particles = self.n_particles
        if n_particles is None:
            mean, std = p["particle_diameter_nm"]
            mean_d2_px = (mean ** 2 + std ** 2) / p["pixel_size_nm"] ** 2   # E[d^2], log-normal
            n_particles = int(round(p["coverage"] * shape[0] * shape[1]
                                    / (math.pi / 4 * mean_d2_px)))
        p["n_particles_from_coverage"] = self.n_particles is None
        p["n_particles"] = int(n_particles)
        return p


def synthesis_params(params=None, overrides: Mapping | None = None, *,
                     caller: str = "make_image") -> SynthesisParams:
    """``params`` (a :class:`SynthesisParams`, a dict of them or None) with keyword ``overrides``.

    Raises
    ------
    TypeError
        For an override that is not a parameter (as for an unexpected keyword of ``caller``).
    """
    if params is None:
        params = SynthesisParams()
    elif isinstance(params, Mapping):
        params = SynthesisParams.from_dict(params)
    elif not isinstance(params, SynthesisParams):
        raise TypeError(f"params must be a SynthesisParams or a dict, got "
                        f"{type(params).__name__}")
    names = {f.name for f in dataclasses.fields(SynthesisParams)}
    for name in overrides or {}:
        if name not in names:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    return dataclasses.replace(params, **overrides) if overrides else params
