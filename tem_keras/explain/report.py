"""Write explanations of one model (and image) to a folder: PNG figures and ``.npy`` arrays.

Used by ``tem-keras explain MODEL IMAGE --method gradcam|kernels|activations|erf -o OUT``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..io.outputs import OutputFolder
from . import _common
from ..validation import check_bool

__all__ = ["METHODS", "write_explanation"]

METHODS = ("gradcam", "gradcam++", "kernels", "activations", "erf")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def write_explanation(model, image, method: str, out_dir, *, layer=None, class_index: int = 1,
                      target="particle", preprocessing=None, overwrite: bool = False,
                      class_names: dict | None = None) -> list[Path]:
    """Compute one explanation and write its figure(s) and arrays into ``out_dir``.

    ========================  =========================================================================
    method                    files
    ========================  =========================================================================
    ``gradcam``/``gradcam++`` ``gradcam.npy`` (``[H, W]`` map), ``gradcam.png`` (overlay)
    ``kernels``               ``kernels.npy`` (``[filters, channels, kh, kw]``), ``mean_kernel.npy``,
                              ``kernel_matches.csv``, ``kernels.png``, ``kernel_matches.png``
    ``activations``           ``activation_<layer>.npy`` per layer, ``class_scores.npy`` (pre-softmax),
                              ``activations.png``
    ``erf``                   ``erf.npy`` (gradient map), ``erf.png``; random inputs when ``image`` is None
    ========================  =========================================================================

    Parameters
    ----------
    model : keras.Model
    image : ndarray, Micrograph, path or None
        Needed for ``gradcam`` and ``activations``.
    method : str
        One of :data:`METHODS`.
    out_dir : str or Path
        Output folder (created).
    layer : str, optional
        Layer for Grad-CAM / kernels; for activations a comma-separated list of layers.
    class_index : int
        Class explained.
    target : {"particle", "all"}
        Grad-CAM target pixels.
    preprocessing : callable, optional
        Image preprocessing (a run's); default standardisation.
    class_names : dict, optional
        ``{"1": "particle", ...}`` (a run's classes): the explained class by name in the figure.
    overwrite : bool
        Replace files an earlier explanation wrote (listed in the folder's manifest,
        ``.tem_keras_output``); otherwise an existing file raises ``FileExistsError`` before
        anything is computed. Files tem_keras did not write are never replaced.

    Returns
    -------
    list of Path
        The files written.
    """
    from .activations import SCORES_KEY, activation_maps
    from .gradcam import grad_cam
    from .kernels import get_kernels, match_kernels, mean_kernel, plot_kernels
    from .receptive import effective_receptive_field

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in ("gradcam", "gradcam++", "activations") and image is None:
        raise ValueError(f"--method {method} needs an image")
    check_bool("overwrite", overwrite)
    class_index = _common.check_class_index(model, class_index)
    if layer is not None:  # the layer(s) exist: said before anything is computed or written
        for name in str(layer).split(",") if isinstance(layer, str) else [layer]:
            if name != "":
                _common.get_layer(model, name)
    out = Path(out_dir)
    fixed = {"gradcam": ["gradcam.npy", "gradcam.png"], "gradcam++": ["gradcam.npy", "gradcam.png"],
             "kernels": ["kernels.npy", "mean_kernel.npy", "kernel_matches.csv", "kernels.png",
                         "kernel_matches.png"],
             "activations": ["class_scores.npy", "activations.png"], "erf": ["erf.npy", "erf.png"]}[method]
    folder = OutputFolder(out, inputs=[image] if isinstance(image, (str, os.PathLike)) else [])
    for name in fixed:  # before anything is computed
        folder.check(name, overwrite=overwrite)
    written = []

    def save_array(name, array):
        path = folder.claim(name, overwrite=overwrite)
        np.save(path, np.asarray(array))
        written.append(path)

    def save_fig(name, fig):
        written.append(_common.save_figure(fig, folder.claim(name, overwrite=overwrite)))

    if method in ("gradcam", "gradcam++"):
        cam, fig = grad_cam(model, image, layer=layer, target=target, class_index=class_index,
                            method=method, preprocessing=preprocessing, return_figure=True,
                            class_name=(class_names or {}).get(str(class_index)))
        save_array("gradcam.npy", cam)
        save_fig("gradcam.png", fig)
    elif method == "kernels":
        save_array("kernels.npy", get_kernels(model, layer))
        save_array("mean_kernel.npy", mean_kernel(model, layer))
        table, fig = match_kernels(model, layer, return_figure=True)
        written.append(folder.claim("kernel_matches.csv", overwrite=overwrite))
        table.to_csv(written[-1], index=False)
        save_fig("kernels.png", plot_kernels(model, layer))
        save_fig("kernel_matches.png", fig)
    elif method == "activations":
        layers = None if layer is None else [name for name in str(layer).split(",") if name]
        maps, fig = activation_maps(model, image, layers, preprocessing=preprocessing, return_figure=True)
        for name, array in maps.items():
            save_array("class_scores.npy" if name == SCORES_KEY else f"activation_{_safe(name)}.npy", array)
        save_fig("activations.png", fig)
    else:
        erf, fig = effective_receptive_field(model, image, class_index=class_index,
                                             preprocessing=preprocessing, return_figure=True)
        save_array("erf.npy", erf.gradient)
        save_fig("erf.png", fig)
    return written
