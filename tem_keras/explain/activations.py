"""Feature maps of chosen layers and the class scores before the softmax (Horwath et al. 2020, Fig. 3).

The class scores are the input of the zoo's shared softmax head (the layer named ``softmax``, see
:func:`tem_keras.models.blocks.softmax_head`): the output of the ``*_logits`` 1×1 convolution for the
UNets, residual UNet and shallow CNNs, of ``upscore8_align`` for FCN-8s and of the linear network
output for segmentation-models networks.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Computational Materials 6, 108 (2020).
"""

from __future__ import annotations

import numpy as np

from . import _common
from ..validation import check_int

__all__ = ["activation_maps", "class_scores", "default_activation_layers", "plot_activation_maps"]

#: key of the pre-softmax class scores in the dictionary returned by :func:`activation_maps`
SCORES_KEY = "class_scores"


def default_activation_layers(model) -> list[str]:
    """Names of the non-linearities before the class scores (all feature layers when there are none)."""
    layers = _common.feature_layers(model)
    active = [layer.name for layer in layers if _common.is_activation(layer)]
    return active or [layer.name for layer in layers]


def activation_maps(model, image, layers=None, *, preprocessing=None, max_channels: int = 8,
                    return_figure: bool = False):
    """Feature maps of ``layers`` and the pre-softmax class scores for one image.

    Parameters
    ----------
    model : keras.Model
        A tem_keras model.
    image : ndarray ``[H, W]``, Micrograph or path
        Standardised like the training images unless ``preprocessing`` says otherwise; padded to the
        model's down-sampling (the maps are cropped back to the part that covers the image).
    layers : str or list of str, optional
        Layer names. Default: :func:`default_activation_layers` (every ReLU / leaky ReLU / activated
        convolution before the class scores).
    preprocessing : callable or False, optional
        See :func:`~tem_keras.explain._common.prepare_image`.
    max_channels : int
        Channels shown per layer in the figure (all are returned).
    return_figure : bool
        Also return a figure: one row per layer (first ``max_channels`` channels) and a last row
        with the score of every class and the particle probability.

    Returns
    -------
    maps : dict
        Layer name → float32 ``[h_l, w_l, channels]`` (at the layer's resolution), in graph order,
        and ``"class_scores"`` → float32 ``[H, W, classes]``: the scores before the softmax.
    figure : matplotlib.figure.Figure
        Only with ``return_figure=True``.

    References
    ----------
    Horwath et al. 2020, Fig. 3 (feature maps and raw per-class scores).
    """
    from ..hardware import float32_model

    model = float32_model(model)  # gradients and maps in float32, also for mixed-precision runs
    import keras

    max_channels = check_int("max_channels", max_channels, 1)
    if layers is None:
        names = default_activation_layers(model)
    else:
        names = [layers] if isinstance(layers, str) else list(layers)  # []: the class scores only
    found = [_common.get_layer(model, name) for name in names]
    batch, (h, w) = _common.model_input_image(model, image, preprocessing)
    targets = [layer.output for layer in found] + [_common.logits_tensor(model)]
    probe = keras.Model(_common.model_inputs(model), targets)
    outputs = probe(batch, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    H, W = batch.shape[1:3]
    maps = {}
    for layer, out in zip(found, outputs[:-1]):
        a = np.asarray(out, dtype=np.float32)[0]
        if a.ndim != 3:
            raise ValueError(f"layer {layer.name!r} output has shape {a.shape}; expected a feature map")
        # keep the part of the map that covers the image (not the padding)
        rh = max(1, int(np.ceil(h * a.shape[0] / H)))
        rw = max(1, int(np.ceil(w * a.shape[1] / W)))
        maps[layer.name] = a[:rh, :rw]
    maps[SCORES_KEY] = np.asarray(outputs[-1], dtype=np.float32)[0, :h, :w]
    if not return_figure:
        return maps
    return maps, plot_activation_maps(maps, batch[0, :h, :w, 0], max_channels=max_channels)


def class_scores(model, image, *, preprocessing=None) -> np.ndarray:
    """The pre-softmax class scores ``[H, W, classes]`` of one image (see :func:`activation_maps`)."""
    return activation_maps(model, image, layers=[], preprocessing=preprocessing)[SCORES_KEY]


def plot_activation_maps(maps: dict, image: np.ndarray | None = None, *, max_channels: int = 8):
    """Figure of :func:`activation_maps`' result: one row per layer, class scores in the last row.

    Parameters
    ----------
    maps : dict
        As returned by :func:`activation_maps`.
    image : ndarray ``[H, W]``, optional
        Shown first in the last row.
    max_channels : int
        Channels shown per layer.

    Returns
    -------
    matplotlib.figure.Figure
    """
    layer_names = [k for k in maps if k != SCORES_KEY]
    scores = maps.get(SCORES_KEY)
    last = [] if scores is None else ([("image", image)] if image is not None else [])
    if scores is not None:
        n_cls = scores.shape[-1]
        last += [(f"score {c}", scores[..., c]) for c in range(n_cls)]
        shifted = scores - scores.max(-1, keepdims=True)
        prob = np.exp(shifted)
        prob /= prob.sum(-1, keepdims=True)
        last.append((f"p(class {min(1, n_cls - 1)})", prob[..., min(1, n_cls - 1)]))
    cols = max([min(max_channels, maps[k].shape[-1]) for k in layer_names] + [len(last), 1])
    rows = len(layer_names) + (1 if last else 0)
    fig, axes = _common.figure(rows, cols, figsize=(1.6 * cols + 0.8, 1.7 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, name in enumerate(layer_names):
        a = maps[name]
        for c in range(min(max_channels, a.shape[-1])):
            axes[r, c].imshow(a[..., c], cmap="viridis")
            axes[r, c].set_title(f"{name}[{c}]" if c == 0 else f"[{c}]", fontsize=7)
    for c, (title, data) in enumerate(last):
        cmap = "gray" if title == "image" else ("magma" if title.startswith("p(") else "RdBu_r")
        kwargs = {}
        if title.startswith("score"):
            lim = float(np.abs(data).max()) or 1.0
            kwargs = dict(vmin=-lim, vmax=lim)
        axes[rows - 1, c].imshow(data, cmap=cmap, **kwargs)
        axes[rows - 1, c].set_title(title, fontsize=7)
    fig.suptitle("feature maps and class scores before the softmax", fontsize=9)
    return fig
