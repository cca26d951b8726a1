"""Describe models: parameters, receptive field (px and nm), down-sampling, FLOPs per megapixel."""

from __future__ import annotations

import math
from pathlib import Path

import keras

from .table import CACHE_FILE, COLUMNS, TABLE_MODELS, cached_rows, format_rows, model_label
from .receptive_fields import graph_summary

__all__ = ["describe", "activation_bytes_per_pixel", "model_table", "format_model_table", "write_model_table",
           "TABLE_MODELS"]

def _count(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def describe(model: keras.Model, pixel_size_nm: float | None = None) -> dict:
    """Size, receptive field and cost of a model.

    Parameters
    ----------
    model : keras.Model
        A tem_keras model.
    pixel_size_nm : float, optional
        Pixel size of the images; gives the receptive field in nm.

    Returns
    -------
    dict
        ``name``, ``parameters``, ``trainable_parameters``, ``receptive_field_px``,
        ``receptive_field_nm`` (None without ``pixel_size_nm``), ``downsampling`` (input sizes must
        be a multiple of it), ``gflops_per_megapixel`` (2 FLOPs per multiply-add of the
        convolutions, per million input pixels; batch norm, activations and pooling not counted).

    Examples
    --------
    >>> from tem_keras.models import residual_unet, describe
    >>> info = describe(residual_unet(n_blocks=2, pool_sizes=(4, 4)), pixel_size_nm=0.02152)
    >>> info["receptive_field_px"], round(info["receptive_field_nm"], 2)
    (120, 2.58)
    """
    s = graph_summary(model)
    rf = s.receptive_field if math.isinf(s.receptive_field) else int(round(s.receptive_field))
    return {
        "name": model.name,
        "parameters": _count(model.weights),
        "trainable_parameters": _count(model.trainable_weights),
        "receptive_field_px": rf,
        "receptive_field_nm": None if pixel_size_nm is None else rf * float(pixel_size_nm),
        "downsampling": s.downsampling,
        "gflops_per_megapixel": s.flops_per_pixel * 1e6 / 1e9,
    }


def model_table(configs=TABLE_MODELS, pixel_size_nm: float | None = None):
    """Table of models: parameters, receptive field, down-sampling and GFLOPs per megapixel.

    Parameters
    ----------
    configs : sequence of str or dict
        Names or configs accepted by :func:`~tem_keras.models.registry.build_model`; default:
        every builder at its paper default and the residual UNets ``fit`` plans
        (:data:`TABLE_MODELS`; pretrained weights are not loaded).
    pixel_size_nm : float, optional
        Adds the receptive field in nm.

    Returns
    -------
    pandas.DataFrame
        One row per model, indexed by the configuration (name and arguments).
    """
    import pandas as pd

    from .registry import build_model

    rows = []
    for cfg in configs:
        model = build_model(cfg)
        row = {"model": model_label(cfg), **describe(model, pixel_size_nm)}
        if pixel_size_nm is None:
            row.pop("receptive_field_nm")
        rows.append(row)
        del model
        keras.backend.clear_session()
    return pd.DataFrame(rows).set_index("model")


def format_model_table(table=None) -> str:
    """Markdown version of :func:`model_table` (for ``tem-keras models`` and docs/models.md).

    Parameters
    ----------
    table : pandas.DataFrame, optional
        A table from :func:`model_table`; default: the table of :data:`TABLE_MODELS`, from the
        numbers cached for this version (:mod:`tem_keras.models.table`) or built.

    Returns
    -------
    str
    """
    rows = cached_rows() if table is None else None
    if rows is None:
        table = model_table() if table is None else table
        rows = [{"model": label, **row} for label, row in table.to_dict("index").items()]
    return format_rows(rows)


def write_model_table(path=CACHE_FILE) -> Path:
    """Build the networks of :data:`TABLE_MODELS` and cache their numbers for this version of
    tem_keras (what ``tem-keras models`` prints without building them); returns the file."""
    import json
    from .. import __version__

    table = model_table()
    rows = [{"model": label, **{k: row[k] for k in COLUMNS}} for label, row in table.to_dict("index").items()]
    path = Path(path)
    path.write_text(json.dumps({"tem_keras": __version__, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return path


def activation_bytes_per_pixel(model: keras.Model, dtype_bytes: int = 4, probe: int = 256) -> float:
    """Peak memory of the activations of one forward pass, in bytes per input pixel.

    Liveness analysis of the functional graph: the layers run in graph order, each tensor is held
    from the layer that makes it until its last consumer has run, and the peak of the live bytes is
    taken (input and output included; shapes from a ``probe`` × ``probe`` image). Library workspace
    (oneDNN scratch pads, weight reorders) is not counted. :func:`tem_keras.inference.predict`
    uses it to cap the tiles sent through the model at once.

    Parameters
    ----------
    model : keras.Model
        A functional model.
    dtype_bytes : int
        Bytes per activation value (4 for float32, 2 for bfloat16/float16).
    probe : int
        Side of the image whose tensor shapes are measured (a multiple of the down-sampling).

    Returns
    -------
    float
        Peak bytes per input pixel (per image of a batch); NaN for models whose graph cannot be
        walked.
    """
    nodes = [n for depth in sorted(getattr(model, "_nodes_by_depth", {}), reverse=True)
             for n in model._nodes_by_depth[depth]]
    if not nodes:
        return float("nan")
    tensors = {id(t): t for node in nodes for t in (*node.input_tensors, *node.outputs)}
    order = list(tensors)
    channels = model.inputs[0].shape[-1]
    try:
        view = keras.Model(model.inputs, [tensors[k] for k in order])
        specs = view.compute_output_spec(keras.KerasTensor((1, probe, probe, channels)))
    except Exception:
        return float("nan")
    size = {k: dtype_bytes * math.prod(int(d) for d in s.shape) for k, s in zip(order, specs)}
    last_use = {}
    for step, node in enumerate(nodes):
        for t in node.input_tensors:
            last_use[id(t)] = step
    for t in model.outputs:
        last_use[id(t)] = len(nodes)
    live, peak = {}, 0
    for step, node in enumerate(nodes):
        for t in (*node.input_tensors, *node.outputs):
            live[id(t)] = size[id(t)]
        peak = max(peak, sum(live.values()))
        for k in [k for k in live if last_use.get(k, step) <= step]:
            del live[k]
    return peak / probe**2
