"""The model card: the human-readable ``README.md`` of an export folder, made from its
``tem_keras.json`` and the template of :mod:`tem_keras.export.card_template`.

The card follows Mitchell et al.'s *model cards*: what the model is, its intended use (the pixel
size it was trained at), training data, preprocessing, metrics, threshold, limitations, how to
run it, and how the export was checked.

References
----------
M. Mitchell et al., "Model cards for model reporting", FAT* 2019.
"""

from __future__ import annotations

import json

from .card_template import BIOIMAGEIO_SECTION, CARD, TRUST

__all__ = ["model_card"]


def _fmt(value, digits=4):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _training_block(training: dict) -> str:
    if not training:
        return "Exported from a bare Keras model: no training record.\n"
    images = training.get("images", {})
    lines = [f"- Dataset: `{training.get('dataset_dir')}`"
             + (f" ({training.get('dataset_name')}, {training.get('dataset_mode')})"
                if training.get("dataset_name") else ""),
             "- Images: " + ", ".join(f"{v} {k}" for k, v in images.items()),
             (f"- Patches: {training.get('patch_size')} px; loss {training.get('loss')}; "
              f"{training.get('epochs')} epochs max; batch {training.get('batch_size')}; "
              f"learning rate {training.get('learning_rate')}; seed {training.get('seed')}; "
              f"{training.get('mixed_precision')}"),
             f"- Augmentation: {json.dumps(training.get('augmentation'))}"]
    return "".join(line + "\n" for line in lines)


def _metrics_block(metrics: dict) -> str:
    if not metrics:
        return "No test metrics recorded.\n"
    lines = ["| threshold | dice | IoU | precision | recall | soft dice |", "|---|---|---|---|---|---|"]
    for key, label in (("at_0.5", "0.5"), ("at_otsu", f"Otsu ({_fmt(metrics.get('otsu_threshold'), 3)})")):
        m = metrics.get(key)
        if isinstance(m, dict):
            lines.append(f"| {label} | " + " | ".join(_fmt(m.get(k)) for k in
                                                      ("dice", "iou", "precision", "recall", "soft_dice")) + " |")
    return "".join(line + "\n" for line in lines)


_ONNX_BLOCK = """\
Without TensorFlow (`predict.py`: onnxruntime and NumPy only, a copy of `tem_keras.runtime`):

```
pip install onnxruntime numpy tifffile pillow
python predict.py image.tif more_images/ -o masks/       # masks/<stem>_mask.png
python predict.py image.tif -o masks/ --threshold 0.4 --probabilities
```

Each image is predicted whole; the masks are those of `tem-keras predict` at the same threshold
(which tiles only images beyond its memory budget). `tem-keras predict` itself runs `model.onnx`
without starting TensorFlow when it can. Or from Python:

```python
import onnxruntime as ort
session = ort.InferenceSession("model.onnx")
probabilities = session.run(None, {session.get_inputs()[0].name: images})[0]   # images [N, H, W, 1], raw
```

"""


def model_card(meta: dict) -> str:
    """The ``README.md`` of an export folder, from its ``tem_keras.json`` contents.

    Parameters
    ----------
    meta : dict
        What :func:`tem_keras.export.export` writes to ``tem_keras.json``.

    Returns
    -------
    str
        Markdown.
    """
    pre = meta["preprocessing"]
    pixel = meta["pixel_size_nm"]
    rf, rf_nm = meta["receptive_field_px"], meta["receptive_field_nm"]
    model = meta["model"]
    arch = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
    skipped = meta.get("skipped") or {}
    bioimageio = ""
    if "bioimageio" in meta["files"] or "bioimageio" in skipped:
        bioimageio = BIOIMAGEIO_SECTION.substitute(
            validation=meta["checks"].get("bioimageio_validation", "not run"))
    fields = {
        "name": meta["name"],
        "version": meta["versions"]["tem_keras"],
        "created": meta["created"],
        "architecture": model.get("name"),
        "architecture_details": f" ({arch})" if arch else "",
        "parameters": f"{meta['parameters']:,}",
        "gflops": f"{meta['gflops_per_megapixel']:.3g}",
        "receptive_field": f"{rf} px" + (f" = {rf_nm:.3g} nm at {pixel:g} nm/px" if rf_nm else ""),
        "downsampling": meta["downsampling"],
        "classes": ", ".join(f"{k} = {v}" for k, v in meta["classes"].items()),
        "pixel_size_advice": (
            f"- Pixel size: trained at {_fmt(pixel)} nm/px. Use images within about ×0.8–×1.25 of it "
            "(rescale others first): the network sees particles and lattice fringes at the scale in pixels "
            "it was trained on, and the receptive field is fixed in pixels." if pixel else
            "- Pixel size: unknown at training; use images at the pixel size of the training data."),
        "training_block": _training_block(meta.get("training") or {}),
        "outlier_step": (f"Outlier removal: pixels above the 3×3 median by more than {pre['outlier_sigma']:g} "
                         "robust σ (1.4826 × MAD) are replaced by the mean of their non-outlier neighbours."
                         if pre["remove_outliers"] else "No outlier removal."),
        "normalisation_step": ("Per-image standardisation to mean 0, standard deviation 1."
                               if pre["normalization"] == "standard" else
                               f"Per-image percentile normalisation: percentiles {pre['percentiles']} map to 0 and 1."),
        "metrics_block": _metrics_block(meta.get("metrics") or {}),
        "threshold_rule": (f"Masks use probability(particle) ≥ {meta['threshold']:g}"
                           if meta["threshold"] is not None else "Masks are the argmax over the classes"),
        "otsu_note": (f" Otsu's threshold of the test probabilities was {meta['otsu_threshold']:.3g}."
                      if meta.get("otsu_threshold") else ""),
        "onnx_block": _ONNX_BLOCK if "model.onnx" in meta["files"].values() else "",
        "files_block": "".join(f"- `{v}` ({k})\n" for k, v in meta["files"].items()),
        "skipped_block": "".join(f"- {k}: not written — {why}\n" for k, why in skipped.items()),
        "bioimageio_block": bioimageio,
        "checks_block": "".join(f"- {k}: {_fmt(v, 3)} (test image: {meta['test_image']})\n"
                                for k, v in meta["checks"].items() if k != "bioimageio_validation"),
        "trust": TRUST,
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    }
    return CARD.substitute(fields)
