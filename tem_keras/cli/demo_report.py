"""The demo's report: figures with scale bars, and ``index.html``, one page that shows them
with the numbers (images as relative links to the PNG files beside it)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

#: the headline of ``summary.json`` and of the page: (key, label, format)
HEADLINE = (("dice_mean", "dice per image, mean", ".3f"),
            ("dice_std", "dice per image, std", ".3f"),
            ("particles_found", "particles found", "d"),
            ("particles_true", "particles true", "d"),
            ("mean_diameter_nm_found", "mean diameter found (nm)", ".2f"),
            ("mean_diameter_nm_true", "mean diameter true (nm)", ".2f"))

#: the per-image table (``scores_per_image.csv``): (column, heading, format)
PER_IMAGE = (("image", "image", ""), ("dice", "dice", ".3f"), ("soft_dice", "soft dice", ".3f"),
             ("iou", "IoU", ".3f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
             ("particles_found", "particles found", "d"), ("particles_true", "particles true", "d"),
             ("mean_diameter_nm_found", "mean diameter found (nm)", ".2f"),
             ("mean_diameter_nm_true", "mean diameter true (nm)", ".2f"))


def plot_overlay(image, truth, predicted, pixel_size_nm, path, title) -> Path:
    """The micrograph with the outlines of the predicted (red) and true (green) particles and a
    scale bar (none without a pixel size)."""
    from skimage.segmentation import find_boundaries

    from ..io.figures import add_scale_bar, new_figure, save_figure

    fig, ax = new_figure(figsize=(5, 5))
    ax.imshow(image, cmap="gray")
    rgba = np.zeros((*image.shape, 4))
    found = find_boundaries(predicted, mode="inner")
    rgba[find_boundaries(truth, mode="inner") & ~found] = (0.2, 0.9, 0.2, 0.8)
    rgba[found] = (1.0, 0.2, 0.2, 1.0)
    ax.imshow(rgba)
    if pixel_size_nm:
        add_scale_bar(ax, pixel_size_nm, image.shape[1])
    ax.set_title(title + "\nred: found, green: true", fontsize=9)
    ax.axis("off")
    return save_figure(fig, path)


def plot_size_comparison(true_nm, found_nm, path) -> Path:
    """Histograms of the true and found equivalent diameters (nm) on the same bins."""
    from ..io.figures import new_figure, save_figure

    true_nm, found_nm = np.asarray(true_nm, float), np.asarray(found_nm, float)
    both = np.concatenate([true_nm, found_nm])
    edges = np.histogram_bin_edges(both[np.isfinite(both)], bins="auto") if both.size else 10
    fig, ax = new_figure(figsize=(6, 3.8))
    for values, label, style in ((true_nm, "true", dict(color="0.75", edgecolor="0.45")),
                                 (found_nm, "found", dict(histtype="step", color="C3", lw=2))):
        mean = f", mean {values.mean():.2f} nm" if values.size else ""
        ax.hist(values, bins=edges, label=f"{label}: {values.size} particles{mean}", **style)
    ax.set(xlabel="equivalent disk diameter (nm)", ylabel="particles",
           title="particle sizes in the test images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plural(count: int, noun: str) -> str:
    """``"1 image"``, ``"5 images"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cell(value, fmt: str, key: str | None = None) -> str:
    """A table cell showing ``value`` formatted; with ``key``, the exact value in ``data-value``."""
    text = "" if value is None else (format(value, fmt) if fmt else str(value))
    data = "" if key is None else f' data-key="{key}" data-value="{html.escape(json.dumps(value))}"'
    return f"<td{data}>{html.escape(text)}</td>"


def _figure(name: str, caption: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return (f'<figure><a href="{name}"><img src="{name}" alt="{html.escape(caption)}"{size}></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


_STYLE = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}.headline{font-size:1.3em}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.85em;color:#555}
.overlays img{width:22em}"""


def write_index(report, summary: dict, scores, about: str, overlays: dict) -> Path:
    """Write ``report/index.html``: the headline numbers of ``summary`` (``summary.json``), the
    overlays (``{file name: caption}``), the size distributions, the training curve and the
    per-image table ``scores`` (a DataFrame with the :data:`PER_IMAGE` columns); the files it
    links to are those present in ``report``."""
    report = Path(report)
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in HEADLINE)
    cells = "".join(_cell(summary[key], fmt, key) for key, _, fmt in HEADLINE)
    dice = f"{summary['dice_mean']:.3f} ± {summary['dice_std']:.3f}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>tem_keras demo: particles in synthetic micrographs</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>tem_keras demo: particles in synthetic micrographs</h1>",
        f"<p>{html.escape(about)}</p>",
        f'<p class="headline">Dice per test image: <b>{html.escape(dice)}</b> (mean ± std over '
        f"{plural(summary['test_images'], 'image')}); {summary['particles_found']} particles found, "
        f"{summary['particles_true']} true; mean diameter {summary['mean_diameter_nm_found']:.2f} nm "
        f"found, {summary['mean_diameter_nm_true']:.2f} nm true.</p>",
        f'<table id="summary"><tr>{head}</tr><tr>{cells}</tr></table>',
        "<h2>Test images</h2>",
        '<div class="overlays">' + "".join(_figure(n, c) for n, c in overlays.items()) + "</div>",
    ]
    if (report / "size_distribution.png").is_file():
        parts += ["<h2>Particle sizes</h2>", _figure("size_distribution.png",
                  "equivalent disk diameters of the particles found and of the true ones")]
    if (report / "training_history.png").is_file():
        parts += ["<h2>Training</h2>", _figure("training_history.png",
                  "loss and validation scores per epoch", width=800)]
    if (report / "training_examples.png").is_file():
        parts.append(_figure("training_examples.png", "test images: image, truth, prediction",
                             width=500))
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in PER_IMAGE)
    rows = "".join("<tr>" + "".join(_cell(row[c], fmt) for c, _, fmt in PER_IMAGE) + "</tr>"
                   for row in scores.to_dict("records"))
    parts += ["<h2>Per-image scores</h2>", f'<table id="per-image"><tr>{head}</tr>{rows}</table>']
    files = [n for n in ("particles.csv", "particles_true.csv", "scores_per_image.csv",
                         "summary.json", "model_card.md") if (report / n).is_file()]
    if (report / "masks").is_dir():
        files.append("masks/")
    parts += ["<h2>Files</h2><ul>"] + [f'<li><a href="{n}">{n}</a></li>' for n in files] + ["</ul>"]
    parts.append("</body></html>")
    path = report / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
