"""Learned convolution kernels: look at them, average them, and match them to classical filters.

Horwath et al. (2020) trained a single-filter CNN (one 9×9 kernel) and a shallow-wide CNN (32 7×7
kernels and a 1×1 read-out) on ETEM images and compared the learned kernels with classical image
filters (their Fig. 14): the single filter resembled a Gaussian-smoothed blob detector, the wide
model's kernels edge and blob filters. :func:`match_kernels` makes that comparison quantitative: the
normalised correlation of every learned kernel with a bank of Gabor, Gaussian, Laplacian of Gaussian
and Sobel filters and their sums (:func:`filter_bank`), and a table of the best matches.

References
----------
J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, "Understanding important features of deep
learning models for segmentation of high-resolution transmission electron microscopy images",
npj Computational Materials 6, 108 (2020).
"""

from __future__ import annotations

import numpy as np

from . import _common
from ..validation import check_bool, check_int

__all__ = ["filter_bank", "get_kernels", "plot_kernels", "mean_kernel", "match_kernels", "FAMILIES"]

#: family of each bank filter name prefix
FAMILIES = ("gaussian", "log", "sobel", "gabor", "gabor+gaussian")
GAUSSIAN_SIGMAS = (0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
LOG_SIGMAS = (0.75, 1.0, 1.5, 2.0, 3.0)
GABOR_SCALES = ((1.0, 4.0), (1.5, 6.0), (2.5, 9.0))  # (sigma, wavelength) in px
GABOR_ANGLES = (0, 45, 90, 135)


def _grid(size: int):
    c = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size].astype(np.float64)
    return y - c, x - c


def _unit(k: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(k)
    return k / n if n > 0 else k


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """``exp(-r²/2σ²)`` on a ``size × size`` grid centred on the middle pixel."""
    y, x = _grid(size)
    return np.exp(-(x**2 + y**2) / (2 * sigma**2))


def log_kernel(size: int, sigma: float) -> np.ndarray:
    """Laplacian of Gaussian ``(r² − 2σ²)/σ⁴ · exp(−r²/2σ²)``, made zero-mean.

    Its centre is negative: with sign −1 it detects bright blobs, with sign +1 dark blobs.
    """
    y, x = _grid(size)
    r2 = x**2 + y**2
    k = (r2 - 2 * sigma**2) / sigma**4 * np.exp(-r2 / (2 * sigma**2))
    return k - k.mean()


def sobel_kernel(size: int, axis: str = "x") -> np.ndarray:
    """The 3×3 Sobel derivative along ``axis`` ("x": columns, "y": rows), zero-padded to ``size``."""
    s = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    if axis == "y":
        s = s.T
    k = np.zeros((size, size))
    c = size // 2
    lo = c - 1
    if size < 3:
        raise ValueError("Sobel kernels need size >= 3")
    k[lo:lo + 3, lo:lo + 3] = s
    return k


def gabor_kernel(size: int, sigma: float, wavelength: float, angle_deg: float, phase: str = "even") -> np.ndarray:
    """Gabor filter: Gaussian envelope ``σ`` times a cosine ("even") or sine ("odd") carrier of
    ``wavelength`` px along the direction ``angle_deg`` (0: varies along x, i.e. vertical stripes)."""
    y, x = _grid(size)
    t = np.deg2rad(angle_deg)
    u = x * np.cos(t) + y * np.sin(t)
    env = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    carrier = np.cos(2 * np.pi * u / wavelength) if phase == "even" else np.sin(2 * np.pi * u / wavelength)
    return env * carrier


def filter_bank(size: int) -> dict[str, np.ndarray]:
    """Classical filters of ``size × size`` px, each scaled to unit Euclidean norm.

    Families (name prefixes): ``gaussian_s{σ}``; ``log_s{σ}`` (Laplacian of Gaussian);
    ``sobel_x``, ``sobel_y``; ``gabor_{even|odd}_a{angle}_s{σ}_l{λ}`` at 0/45/90/135° and three
    scales; and sums ``gabor_h+v+gaussian_s{σ}`` (horizontal + vertical even Gabor + Gaussian of the
    same σ, each of unit norm before adding) and ``gabor_h+v_s{σ}``. Scales that do not fit the
    kernel (σ > size/2) are left out.

    Parameters
    ----------
    size : int
        Kernel side.

    Returns
    -------
    dict
        Name → ``[size, size]`` float64 array.
    """
    size = check_int("size", size, 1)
    bank = {}
    for s in GAUSSIAN_SIGMAS:
        if s <= size / 2:
            bank[f"gaussian_s{s:g}"] = gaussian_kernel(size, s)
    for s in LOG_SIGMAS:
        if 2 * s <= size / 1.5 or s == LOG_SIGMAS[0]:
            bank[f"log_s{s:g}"] = log_kernel(size, s)
    if size >= 3:
        bank["sobel_x"] = sobel_kernel(size, "x")
        bank["sobel_y"] = sobel_kernel(size, "y")
    for sigma, lam in GABOR_SCALES:
        if sigma > size / 2:
            continue
        for phase in ("even", "odd"):
            for a in GABOR_ANGLES:
                bank[f"gabor_{phase}_a{a}_s{sigma:g}_l{lam:g}"] = gabor_kernel(size, sigma, lam, a, phase)
        h = _unit(gabor_kernel(size, sigma, lam, 90))
        v = _unit(gabor_kernel(size, sigma, lam, 0))
        bank[f"gabor_h+v_s{sigma:g}"] = h + v
        bank[f"gabor_h+v+gaussian_s{sigma:g}"] = h + v + _unit(gaussian_kernel(size, sigma))
    return {name: _unit(k) for name, k in bank.items()}


def family(name: str) -> str:
    """Family of a :func:`filter_bank` name: gaussian, log, sobel, gabor or gabor+gaussian."""
    if name.startswith("gabor_h+v+gaussian"):
        return "gabor+gaussian"
    return name.split("_")[0]


def _kernel_layer(model, layer):
    if layer is not None:
        found = _common.get_layer(model, layer)
        if not hasattr(found, "kernel"):
            raise ValueError(f"layer {found.name!r} has no kernel")
        return found
    for candidate in _common.feature_layers(model) or model.layers:
        if _common.is_conv(candidate) and max(candidate.kernel_size) > 1:
            return candidate
    raise ValueError(f"model {model.name!r} has no spatial convolution")


def get_kernels(model, layer=None) -> np.ndarray:
    """Kernels of a convolution layer as ``[filters, in_channels, kh, kw]`` (float32).

    Parameters
    ----------
    model : keras.Model
    layer : str or keras.layers.Layer, optional
        Default: the first convolution with a spatial kernel (``filters`` of the shallow CNNs,
        ``block1_conv1`` of FCN-8s).
    """
    found = _kernel_layer(model, layer)
    kernel = np.asarray(found.kernel.numpy() if hasattr(found.kernel, "numpy") else found.kernel, np.float32)
    if kernel.ndim != 4:
        raise ValueError(f"layer {found.name!r} has a {kernel.ndim}-D kernel, expected a 2-D convolution")
    return np.transpose(kernel, (3, 2, 0, 1))


def plot_kernels(model, layer=None, *, max_filters: int = 64, max_channels: int = 8, title: str | None = None):
    """Grid of the learned kernels of one layer (as Horwath et al. 2020, Fig. 14).

    One panel per kernel, each with its own symmetric grey scale (white positive, black negative).
    With one input channel the filters are laid out in a near-square grid; with several, one row
    per filter and one column per input channel (up to ``max_channels``).

    Parameters
    ----------
    model : keras.Model
    layer : str or keras.layers.Layer, optional
        See :func:`get_kernels`.
    max_filters, max_channels : int
        Most filters / input channels shown.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    max_filters, max_channels = check_int("max_filters", max_filters, 1), check_int("max_channels", max_channels, 1)
    kernels = get_kernels(model, layer)[:max_filters, :max_channels]
    n_f, n_c = kernels.shape[:2]
    if n_c == 1:
        cols = int(np.ceil(np.sqrt(n_f)))
        rows = int(np.ceil(n_f / cols))
        panels = [(i, 0) for i in range(n_f)]
    else:
        rows, cols = n_f, n_c
        panels = [(i, c) for i in range(n_f) for c in range(n_c)]
    fig, axes = _common.figure(rows, cols, figsize=(1.3 * cols + 0.6, 1.3 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for p, (i, c) in enumerate(panels):
        ax = axes.ravel()[p]
        k = kernels[i, c]
        lim = float(np.abs(k).max()) or 1.0
        ax.imshow(k, cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"{i}" if n_c == 1 else f"{i}/{c}", fontsize=7)
    found = _kernel_layer(model, layer)
    fig.suptitle(title or f"{model.name}: kernels of {found.name}", fontsize=9)
    return fig


def _readout_weights(model, layer, class_index: int) -> np.ndarray | None:
    """Particle-minus-mean coefficient of each filter in the 1×1 convolution that follows ``layer``."""
    found = _kernel_layer(model, layer)
    after = False
    for candidate in model.layers:
        if candidate is found:
            after = True
            continue
        if after and _common.is_conv(candidate):
            k = np.asarray(candidate.kernel.numpy(), np.float64)
            if k.shape[:2] == (1, 1) and k.shape[2] == found.filters and k.shape[3] > class_index:
                w = k[0, 0]  # [filters, classes]
                return w[:, class_index] - w.mean(axis=1)
            return None
    return None


def mean_kernel(model, layer=None, *, weighting: str = "none", class_index: int = 1,
                return_figure: bool = False):
    """Average kernel of a layer over its filters and input channels.

    Parameters
    ----------
    model : keras.Model
    layer : str or keras.layers.Layer, optional
        See :func:`get_kernels`.
    weighting : {"none", "readout"}
        ``"none"``: plain mean. ``"readout"``: each filter weighted by its coefficient for class
        ``class_index`` (minus the mean over classes) in the 1×1 convolution that follows, i.e. the
        linear filter the class score sees before the non-linearity (shallow-wide CNN of Horwath
        et al.); the sign of every filter is then meaningful.
    class_index : int
        Class of the read-out weighting.
    return_figure : bool
        Also return a figure of the mean kernel.

    Returns
    -------
    kernel : ndarray ``[kh, kw]``
    figure : matplotlib.figure.Figure
        Only with ``return_figure=True``.
    """
    class_index = _common.check_class_index(model, class_index)
    kernels = get_kernels(model, layer).astype(np.float64)
    if weighting == "none":
        mean = kernels.mean(axis=(0, 1))
    elif weighting == "readout":
        w = _readout_weights(model, layer, class_index)
        if w is None:
            raise ValueError("weighting='readout' needs a 1×1 convolution right after the layer")
        mean = np.tensordot(w, kernels.mean(axis=1), axes=(0, 0)) / max(np.abs(w).sum(), 1e-12)
    else:
        raise ValueError(f"weighting must be 'none' or 'readout', got {weighting!r}")
    mean = mean.astype(np.float32)
    if not return_figure:
        return mean
    fig, ax = _common.figure(figsize=(3.2, 3.2))
    lim = float(np.abs(mean).max()) or 1.0
    ax.imshow(mean, cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(f"mean kernel ({weighting})", fontsize=9)
    ax.axis("off")
    return mean, fig


def correlation(a: np.ndarray, b: np.ndarray, centered: bool = False) -> float:
    """Normalised correlation ``<a, b> / (|a| |b|)`` (after removing the means when ``centered``)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if centered:
        a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def match_kernels(model, layer=None, *, bank: dict | None = None, centered: bool = False,
                  top: int = 3, return_figure: bool = False):
    """Best-matching classical filters for every learned kernel of a layer.

    For each kernel ``k`` (one per filter and input channel) and each bank filter ``f`` the
    normalised correlation ``ρ = <k, f> / (|k| |f|)`` is computed (kernels as Keras applies them,
    i.e. as cross-correlation templates); matches are ranked by ``|ρ|``, since a kernel and its
    negative detect the same structure (the sign goes into the next layer's weights).

    Parameters
    ----------
    model : keras.Model
    layer : str or keras.layers.Layer, optional
        See :func:`get_kernels`.
    bank : dict, optional
        Name → kernel of the kernel size; default :func:`filter_bank`.
    centered : bool
        Remove the mean of both kernels first (Pearson correlation: ignores the response to the
        mean intensity).
    top : int
        Number of best matches reported per kernel (columns ``match_1`` ... with ``correlation_1`` ...).
    return_figure : bool
        Also return a figure: each learned kernel beside its best match (up to 16 kernels).

    Returns
    -------
    table : pandas.DataFrame
        One row per (filter, channel): ``layer, filter, channel, best, family, correlation,
        abs_correlation`` and the ``top`` best matches, sorted by ``abs_correlation`` (descending).
    figure : matplotlib.figure.Figure
        Only with ``return_figure=True``.

    References
    ----------
    Horwath et al. 2020 (Fig. 14).
    """
    import pandas as pd

    top = check_int("top", top, 1)
    check_bool("centered", centered)
    if bank is not None and (not isinstance(bank, dict) or not bank):
        got = "an empty dict" if isinstance(bank, dict) else f"a {type(bank).__name__}"
        raise ValueError(f"bank must be a non-empty dict of name -> kernel, got {got}")
    found = _kernel_layer(model, layer)
    kernels = get_kernels(model, found)
    size = kernels.shape[-2:]
    if bank is None:
        if size[0] != size[1]:
            raise ValueError(f"the default filter bank is square; kernels are {size}: pass bank=")
        bank = filter_bank(size[0])
    names = list(bank)
    matrix = np.stack([np.asarray(bank[n], np.float64).ravel() for n in names])
    if matrix.shape[1] != size[0] * size[1]:
        raise ValueError(f"bank filters must be {size}, got {np.asarray(bank[names[0]]).shape}")
    rows = []
    for i in range(kernels.shape[0]):
        for c in range(kernels.shape[1]):
            rho = np.array([correlation(kernels[i, c], f, centered) for f in matrix])
            order = np.argsort(-np.abs(rho))
            row = {"layer": found.name, "filter": i, "channel": c, "best": names[order[0]],
                   "family": family(names[order[0]]), "correlation": float(rho[order[0]]),
                   "abs_correlation": float(abs(rho[order[0]]))}
            for r in range(min(top, len(names))):
                row[f"match_{r + 1}"] = names[order[r]]
                row[f"correlation_{r + 1}"] = float(rho[order[r]])
            rows.append(row)
    table = pd.DataFrame(rows).sort_values("abs_correlation", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    if not return_figure:
        return table
    shown = table.head(16)
    fig, axes = _common.figure(len(shown), 2, figsize=(3.6, 1.7 * len(shown) + 0.4), squeeze=False)
    for r, row in enumerate(shown.itertuples(index=False)):
        k = kernels[row.filter, row.channel]
        f = np.asarray(bank[row.best]) * np.sign(row.correlation or 1.0)
        for ax, img, label in ((axes[r, 0], k, f"kernel {row.filter}/{row.channel}"),
                               (axes[r, 1], f, f"{row.best}\nρ = {row.correlation:+.2f}")):
            lim = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    return table, fig
