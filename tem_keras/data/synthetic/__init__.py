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
sampled with Poisson noise when ``dose`` is given. The package needs NumPy/SciPy only (no
TensorFlow), so tests, the demo and notebooks can make data quickly.

Modules: :mod:`.params` (:class:`SynthesisParams`, modes, per-mode defaults), :mod:`.particles`
(sizes, outlines, placement, rasterising), :mod:`.imaging` (support, illumination, the three
contrast models, the HRTEM CTF, shot noise, and :func:`sem_like`, an SEM-like
secondary-electron image made from a HAADF one), :mod:`.images` (:func:`make_image`),
:mod:`.datasets` (:func:`make_dataset`) and :mod:`.stacks` (:func:`make_stack`).

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

from .datasets import make_dataset
from .images import SyntheticImage, make_image
from .imaging import amorphous_support, electron_wavelength_nm, scherzer_like_defocus_nm, sem_like
from .params import MODES, SynthesisParams
from .stacks import make_stack

__all__ = [
    "MODES",
    "SynthesisParams",
    "SyntheticImage",
    "amorphous_support",
    "electron_wavelength_nm",
    "make_dataset",
    "make_image",
    "make_stack",
    "scherzer_like_defocus_nm",
    "sem_like",
]
