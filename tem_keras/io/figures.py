"""Figures written into run and sweep folders (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=None, **subplot_kwargs):
    """A figure and its axes, made without pyplot: no global state, no backend switch (figures
    still show in Jupyter, and scripts never need a display).

    Parameters
    ----------
    nrows, ncols : int
        Grid of axes (``Figure.subplots``).
    figsize : (float, float), optional
        Inches.
    **subplot_kwargs
        Passed to ``Figure.subplots`` (e.g. ``squeeze=False``).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : Axes or array of Axes
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplot_kwargs)


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG (110 dpi, tight bounding box) to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_history(history, path) -> Path:
    """Loss and dice/IoU curves of a training history (pandas DataFrame from ``history.csv``)."""
    fig, (ax_loss, ax_score) = new_figure(1, 2, figsize=(10, 3.6))
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for key in ("loss", "val_loss"):
        if key in history:
            ax_loss.plot(epochs, history[key], label=key)
    for key in ("dice", "val_dice", "val_soft_dice", "val_iou"):
        if key in history:
            ax_score.plot(epochs, history[key], label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_score.set(xlabel="epoch", ylabel="score", title="particle class", ylim=(0, 1))
    for ax in (ax_loss, ax_score):
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_examples(images, masks, probabilities, path, n: int = 4) -> Path:
    """Image, truth and prediction (``argmax`` of ``probabilities [H, W, C]``) for the ``n``
    examples with the most particle pixels (sequences of arrays; sizes may differ)."""
    order = np.argsort([-np.count_nonzero(m) for m in masks])[:n]
    fig, axes = new_figure(len(order), 3, figsize=(9, 3 * len(order)), squeeze=False)
    picked = ((images[i], masks[i], probabilities[i]) for i in order)
    for row, (image, truth, prob) in enumerate(picked):
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 1].imshow(truth, cmap="viridis", interpolation="nearest")
        axes[row, 2].imshow(prob.argmax(-1), cmap="viridis", interpolation="nearest")
        for ax, title in zip(axes[row], ("image", "truth", "prediction")):
            ax.set_title(title)
            ax.axis("off")
    return save_figure(fig, path)


def plot_dice_vs_receptive_field(summary, path) -> Path:
    """Mean ± std dice against receptive field (nm when known), one point per configuration."""
    use_nm = "receptive_field_nm" in summary and summary["receptive_field_nm"].notna().all()
    x = summary["receptive_field_nm" if use_nm else "receptive_field_px"]
    fig, ax = new_figure(figsize=(5.5, 4))
    ax.errorbar(x, summary["dice_mean"], yerr=summary["dice_std"].fillna(0), fmt="o", capsize=3)
    for xi, yi, label in zip(x, summary["dice_mean"], summary["label"]):
        ax.annotate(label, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel=f"receptive field ({'nm' if use_nm else 'px'})", ylabel="test dice",
           title="dice against receptive field")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def scale_bar_length(width_nm: float, fraction: float = 0.25) -> float:
    """The longest round length (1, 2 or 5 times a power of ten, in nm) at most ``fraction`` of
    an image ``width_nm`` wide: the length of its scale bar.

    >>> scale_bar_length(128.0), scale_bar_length(2048 * 0.21), scale_bar_length(3.0)
    (20.0, 100.0, 0.5)
    """
    if not width_nm > 0:
        raise ValueError(f"image width must be positive nm, got {width_nm!r}")
    target = width_nm * fraction
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


def add_scale_bar(ax, pixel_size_nm: float, width_px: int, color: str = "white"):
    """Draw a scale bar of a round length (:func:`scale_bar_length`) with its label, on a dark
    box, in the lower right corner of an image shown in ``ax`` (data units: pixels); return its
    length in nm."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length_nm = scale_bar_length(width_px * pixel_size_nm)
    label = f"{length_nm:g} nm"
    bar = AnchoredSizeBar(ax.transData, length_nm / pixel_size_nm, label, "lower right", pad=0.3,
                          borderpad=0.6, color=color, frameon=True, size_vertical=max(1.0, width_px / 150),
                          label_top=True, fontproperties=FontProperties(size=9, weight="bold"))
    bar.patch.set(facecolor="black", alpha=0.45, edgecolor="none")  # readable on bright and dark images
    ax.add_artist(bar)
    return length_nm
