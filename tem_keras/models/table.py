"""The table of ``tem-keras models`` without TensorFlow: its configurations, its numbers cached per
version, and its Markdown.

Building the fourteen networks of the table (VGG16 and ResNet-34 among them) takes about a minute;
the numbers depend only on the builders, so they are computed once per version of tem_keras and
shipped in ``models/model_table.json``. The cache is used when it was written by this version for
exactly :data:`TABLE_MODELS`; otherwise the networks are built
(:func:`tem_keras.models.description.model_table`). Rewrite it after changing a builder or the list::

    python -c "from tem_keras.models.description import write_model_table; write_model_table()"

``tests/test_models.py`` checks the cache against the real builders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["CACHE_FILE", "COLUMNS", "PLANNED_MODELS", "TABLE_MODELS", "cached_rows", "format_rows", "model_label"]

#: the residual UNets ``fit`` plans when no model is given (16 base filters, the receptive field
#: set by the pools: 96, 200, 280, 504 px; :data:`tem_keras.training.plan.POOL_LADDER`)
PLANNED_MODELS = tuple({"name": "residual_unet", "n_blocks": len(pools), "base_filters": 16, "pool_sizes": pools}
                       for pools in ((2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 4), (2, 2, 4, 4)))

#: the configurations of the table: every builder at its paper default, then fit's planned models
TABLE_MODELS = (
    "unet_horwath_512",
    "unet_horwath_1024",
    "unet_groschner",
    "encoder_decoder_horwath",
    "residual_unet_sytwu",
    {"name": "residual_unet", "n_blocks": 2, "pool_sizes": (2, 2)},
    {"name": "residual_unet", "n_blocks": 2, "pool_sizes": (8, 8)},
    {"name": "residual_unet", "n_blocks": 3, "pool_sizes": (2, 2, 2)},
    {"name": "residual_unet", "n_blocks": 4, "pool_sizes": (2, 2, 2, 2)},
    {"name": "fcn8s", "weights": None},
    {"name": "fcn8s", "weights": None, "dilated": True},
    "shallow_cnn_single",
    "shallow_cnn_wide",
    {"name": "sm", "arch": "Unet", "backbone": "resnet34"},
    *PLANNED_MODELS,
)

#: the cached numbers of :data:`TABLE_MODELS` (``{"tem_keras": version, "rows": [...]}``)
CACHE_FILE = Path(__file__).parent / "model_table.json"

#: the numbers of a row, as :func:`tem_keras.models.description.describe` gives them
COLUMNS = ("parameters", "receptive_field_px", "downsampling", "gflops_per_megapixel")


def model_label(config) -> str:
    """A configuration as the table names it: ``unet_horwath_512``, ``fcn8s(weights=None)``."""
    if isinstance(config, str):
        return config
    args = {k: v for k, v in config.items() if k != "name"}
    return config["name"] + "(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def cached_rows(pixel_size_nm: float | None = None) -> list[dict] | None:
    """The rows of the table from :data:`CACHE_FILE`: dicts with ``model`` (the label),
    :data:`COLUMNS` and, with ``pixel_size_nm``, ``receptive_field_nm``. None when the cache is
    missing, unreadable, or was written by another version or for other configurations."""
    from .. import __version__

    try:
        cache = json.loads(CACHE_FILE.read_text(encoding="utf-8"))
        rows = cache["rows"]
        if cache["tem_keras"] != __version__ or [r["model"] for r in rows] != [model_label(c) for c in TABLE_MODELS]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pixel_size_nm is not None:
        rows = [{**r, "receptive_field_nm": r["receptive_field_px"] * float(pixel_size_nm)} for r in rows]
    return rows


def format_rows(rows) -> str:
    """A Markdown table of rows as :func:`cached_rows` gives them; the models ``fit`` plans are
    marked."""
    with_nm = any("receptive_field_nm" in r for r in rows)
    header = ["model", "parameters", "RF (px)"] + (["RF (nm)"] if with_nm else []) + [
        "down-sampling", "GFLOPs / MP"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    planned = {model_label(c) for c in PLANNED_MODELS}
    for row in rows:
        rf = row["receptive_field_px"]
        cells = [f"`{row['model']}`" + (" (planned by fit)" if row["model"] in planned else ""),
                 f"{int(row['parameters']):,}", "∞" if math.isinf(rf) else f"{int(rf)}"]
        if with_nm:
            cells.append(f"{row['receptive_field_nm']:.2f}")
        cells += [f"{int(row['downsampling'])}", f"{row['gflops_per_megapixel']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if planned & {r["model"] for r in rows}:
        lines.append("\n(planned by fit): without --model, `tem-keras fit DIR` trains the first of these "
                     "residual UNets whose receptive field covers twice the large particles plus 16 px.")
    return "\n".join(lines)
