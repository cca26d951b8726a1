"""Weights pre-trained on synthetic micrographs, shipped inside the package (``pretrained="tem"``).

The residual UNets that :func:`~tem_keras.training.plan.choose_model` plans (16 base filters, three
or four blocks) were trained on 240 synthetic bright-field, HAADF-STEM, HRTEM and SEM-like
micrographs of nanoparticles (:mod:`tem_keras.data.synthetic`, parameters drawn at random over
wide ranges: particles from 4 px to a third of the image, a quarter of the non-HRTEM images dense
in-situ frames of 4-8 px particles; :mod:`tem_keras.training.pretrain` rebuilds them, and each
file's record says how: :func:`tem_weights_info`). ``fit(..., pretrained="tem")``
starts from them instead of a random initialisation, as transfer learning from a related domain
does for small labelled sets [1]_.

The weights depend on the number of blocks and filters only, not on the pool sizes, so one file
serves every pool configuration of a depth. A layer is loaded when the file has weights of the same
name and shapes; the others (e.g. the softmax head of a model with another number of classes) keep
their initialisation.

Files (``tem_keras/models/tem_weights/<key>.npz``, about 1 MB each): convolution kernels as int8
with a float32 scale per output channel (symmetric quantisation; the error is below 0.4 % of each
channel's largest weight, far below what training changes), other weights as float16, and a JSON
record of how they were made.

References
----------
.. [1] Yosinski, J., Clune, J., Bengio, Y. & Lipson, H. How transferable are features in deep
   neural networks? NeurIPS 27 (2014).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["WEIGHTS_DIR", "weights_key", "available_keys", "save_tem_weights", "load_tem_weights",
           "tem_weights_info", "add_to_record"]

#: folder of the shipped files
WEIGHTS_DIR = Path(__file__).with_name("tem_weights")


def weights_key(spec) -> str | None:
    """File key of the weights for a model spec (``{"name": "residual_unet", ...}``), or None.

    Only residual UNets with one input channel and no dilation have shipped weights.
    """
    if not isinstance(spec, dict) or spec.get("name") != "residual_unet":
        return None
    if spec.get("dilation_rates") not in (None, 1) or int(spec.get("channels", 1)) != 1:
        return None
    return f"residual_unet_{int(spec.get('n_blocks', 2))}b{int(spec.get('base_filters', 4))}"


def available_keys() -> list[str]:
    """Keys of the weight files shipped with this installation."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def _quantise(array: np.ndarray) -> dict:
    if array.ndim >= 2:  # kernels: int8 per output channel
        scale = np.abs(array).reshape(-1, array.shape[-1]).max(axis=0) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        return {"q": np.round(array / scale).astype(np.int8), "scale": scale}
    return {"f16": array.astype(np.float16)}


def _dequantise(parts: dict) -> np.ndarray:
    if "q" in parts:
        return parts["q"].astype(np.float32) * parts["scale"]
    return parts["f16"].astype(np.float32)


def save_tem_weights(model, path, record: dict | None = None) -> Path:
    """Write ``model``'s weights in the shipped format (see the module docstring).

    Parameters
    ----------
    model : keras.Model
    path : str or os.PathLike
        Target ``.npz`` file.
    record : dict, optional
        Provenance stored beside the weights (training data, steps, validation dice, ...).
    """
    arrays = {}
    for layer in model.layers:
        for i, weight in enumerate(layer.get_weights()):
            for part, value in _quantise(np.asarray(weight, np.float32)).items():
                arrays[f"{layer.name}/{i}/{part}"] = value
    meta = {"model": model.name, "record": record or {}}
    arrays["__record__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _read(key: str) -> tuple[dict, dict]:
    path = WEIGHTS_DIR / f"{key}.npz"
    if not path.is_file():
        shipped = ", ".join(available_keys()) or "none"
        raise FileNotFoundError(f"no pre-trained TEM weights for {key} in {WEIGHTS_DIR} "
                                f"(shipped: {shipped})")
    with np.load(path) as data:
        meta = json.loads(bytes(data["__record__"]).decode())
        layers: dict = {}
        for name in data.files:
            if name == "__record__":
                continue
            layer, index, part = name.rsplit("/", 2)
            layers.setdefault(layer, {}).setdefault(int(index), {})[part] = data[name]
    weights = {layer: [_dequantise(parts[i]) for i in sorted(parts)] for layer, parts in layers.items()}
    return weights, meta


def tem_weights_info(key: str) -> dict:
    """The provenance record of a shipped weight file."""
    return _read(key)[1]


def add_to_record(path, **fields) -> dict:
    """Add ``fields`` to the record of the weight file ``path``; the weights stay bit for bit as
    they are. Returns the new record."""
    path = Path(path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(bytes(arrays["__record__"]).decode())
    meta["record"].update(fields)
    arrays["__record__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return meta["record"]


def load_tem_weights(model, key: str) -> dict:
    """Set the layers of ``model`` that the weight file ``key`` has (same name and shapes).

    Returns
    -------
    dict
        ``{"key", "loaded": [layer names], "kept": [layers with weights left as they were]}``.

    Raises
    ------
    FileNotFoundError
        When no file ``key`` is shipped.
    """
    weights, _ = _read(key)
    loaded, kept = [], []
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        stored = weights.get(layer.name)
        if stored is not None and [w.shape for w in stored] == [np.shape(w) for w in current]:
            layer.set_weights(stored)
            loaded.append(layer.name)
        else:
            kept.append(layer.name)
    return {"key": key, "loaded": loaded, "kept": kept}
