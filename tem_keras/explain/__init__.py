"""Explanations of what a segmentation model learned: Grad-CAM, kernels, activations, receptive field.

Every function works on NumPy arrays (images may also be Micrographs or file paths) and returns
NumPy arrays (or small dataclasses / a table of them); ``return_figure=True`` also returns a
matplotlib figure (Agg backend). ``tem-keras explain MODEL IMAGE --method ...`` writes both.

* :func:`grad_cam` — Grad-CAM / Grad-CAM++ for segmentation (Selvaraju et al. 2017;
  Chattopadhay et al. 2018).
* :func:`plot_kernels`, :func:`get_kernels`, :func:`mean_kernel`, :func:`match_kernels`,
  :func:`filter_bank` — learned kernels and their best classical counterparts (Horwath et al. 2020).
* :func:`activation_maps`, :func:`class_scores` — feature maps and the class scores before the
  softmax (Horwath et al. 2020, Fig. 3).
* :func:`effective_receptive_field` — gradient of the centre output pixel w.r.t. the input (Luo
  et al. 2016), with the analytic receptive field (Sytwu et al. 2022).
* :func:`line_profile` — intensity and probability along a line (Horwath et al. 2020, Fig. 5).

References
----------
R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.
A. Chattopadhay et al., "Grad-CAM++: Generalized Gradient-Based Visual Explanations for Deep
Convolutional Networks", WACV 2018.
W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016.
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, npj Computational Materials 6, 108 (2020).
K. Sytwu, C. Groschner, M. C. Scott, Microscopy and Microanalysis 28, 1896 (2022).
"""

from .activations import activation_maps, class_scores, plot_activation_maps
from .gradcam import default_cam_layer, grad_cam, plot_grad_cam
from .kernels import filter_bank, get_kernels, match_kernels, mean_kernel, plot_kernels
from .profile import LineProfile, line_profile
from .receptive import EffectiveReceptiveField, effective_receptive_field, plot_effective_receptive_field

__all__ = [
    "EffectiveReceptiveField",
    "LineProfile",
    "activation_maps",
    "class_scores",
    "default_cam_layer",
    "effective_receptive_field",
    "filter_bank",
    "get_kernels",
    "grad_cam",
    "line_profile",
    "match_kernels",
    "mean_kernel",
    "plot_activation_maps",
    "plot_effective_receptive_field",
    "plot_grad_cam",
    "plot_kernels",
]
