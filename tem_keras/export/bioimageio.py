"""The bioimage.io package of an export folder (``bioimageio/``: ``rdf.yaml`` format 0.5, the
zipped SavedModel, test tensors, cover, card) and its offline validation.

References
----------
W. Ouyang et al., "BioImage Model Zoo: a community-driven resource for accessible deep learning in
bioimage analysis", bioRxiv 2022.06.07.495102.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from ..inference.masks import foreground_probability
from .card import model_card
from .saved_model import save_serving_module

__all__ = ["write_bioimageio", "validate_bioimageio"]


def _cover(image: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """2:1 PNG: the test image (1–99 % stretch) beside the particle probability."""
    from PIL import Image

    lo, hi = np.percentile(image, (1, 99))
    grey = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    prob = np.clip(foreground_probability(probabilities), 0, 1)
    side = 256
    left = Image.fromarray((grey * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.BILINEAR)
    right = Image.fromarray((prob * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.BILINEAR)
    canvas = Image.new("L", (2 * side, side))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (side, 0))
    canvas.save(path)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "tem-keras-model"


def _bioimageio_name(name: str) -> str:
    """A bioimage.io model name: 5-128 characters of letters, digits, spaces and ``_-()+``."""
    import re

    name = re.sub(r"[^A-Za-z0-9 _\-()+]+", "-", str(name)).strip(" -") or "model"
    if len(name) < 5:
        name = f"TEM nanoparticle segmentation {name}"
    return name[:128]


def write_bioimageio(out_dir: Path, meta: dict, image: np.ndarray, reference: np.ndarray,
                      authors, module) -> str:
    """Write the bioimage.io package ``out_dir/bioimageio/`` and validate it.

    Parameters
    ----------
    out_dir : Path
        The export folder.
    meta : dict
        What :func:`tem_keras.export.export` writes to ``tem_keras.json`` (so far).
    image, reference : ndarray
        Raw test image ``[H, W]`` and the model's probabilities ``[H, W, C]`` (test tensors).
    authors : list of str or None
        Default: the user name.
    module : tf.Module
        The :func:`~tem_keras.export.serving.serving_module` of the export's ``saved_model/``,
        zipped as a SavedModel whose ``serve`` returns ``{"probabilities": ...}``, as
        bioimageio.core expects (its traced functions are reused, not traced again).

    Returns
    -------
    str
        The validation summary (:func:`validate_bioimageio`). No half-written package is left
        when writing fails.
    """
    folder = out_dir / "bioimageio"
    folder.mkdir()
    try:
        return _fill_bioimageio(folder, meta, image, reference, authors, module)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written package
        raise


def _fill_bioimageio(folder, meta, image, reference, authors, module) -> str:
    np.save(folder / "test_input.npy", image[None, ..., None].astype(np.float32))
    np.save(folder / "test_output.npy", reference[None].astype(np.float32))
    _cover(image, reference, folder / "cover.png")
    import tempfile

    # the same graph, but ``serve`` returns {"probabilities": ...}: bioimageio.core calls
    # TFSMLayer(call_endpoint="serve") and expects a dict
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "saved_model"
        save_serving_module(module, root, serve_returns_dict=True)
        with zipfile.ZipFile(folder / "saved_model.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(root.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(root).as_posix())
    import tifffile

    tifffile.imwrite(folder / "sample_input.tif", image.astype(np.float32))
    tifffile.imwrite(folder / "sample_output.tif", reference.astype(np.float32))
    # the card as it will be; export() rewrites it with the validation result
    (folder / "README.md").write_text(model_card({**meta, "files": {**meta["files"], "bioimageio": "bioimageio"},
                                                  "checks": {**meta["checks"], "bioimageio_validation":
                                                             "see tem_keras.json of the export folder"}}),
                                      encoding="utf-8")
    names = [meta["classes"].get(str(k), f"class_{k}") for k in range(meta["num_classes"])]
    if authors is None:
        import getpass

        try:
            authors = [getpass.getuser()]
        except Exception:  # noqa: BLE001
            authors = ["tem_keras user"]
    rf = meta["receptive_field_px"]
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": _bioimageio_name(meta["name"]),
        "id": None,
        "description": (f"Semantic segmentation of nanoparticles in TEM images ({meta['model'].get('name')}, "
                        f"{meta['parameters']:,} parameters, receptive field {rf} px); trained with tem_keras."),
        "authors": [{"name": a} for a in authors],
        "cite": [{"text": "Horwath et al. Understanding important features of deep learning models for "
                          "segmentation of high-resolution transmission electron microscopy images. "
                          "npj Comput. Mater. 6, 108 (2020)", "doi": "10.1038/s41524-020-00363-x"},
                 {"text": "Sytwu, Groschner & Scott. Understanding the influence of receptive field and "
                          "network complexity in neural network-guided TEM image analysis. "
                          "Microsc. Microanal. 28, 1896 (2022)", "doi": "10.1017/S1431927622012466"}],
        "license": "BSD-3-Clause",
        "tags": ["tem", "electron-microscopy", "nanoparticles", "semantic-segmentation", "unet", "2d",
                 "tensorflow"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": "raw",
            "description": "raw intensities; outlier removal, standardisation and padding run inside the model",
            "axes": [{"type": "batch"},
                     {"type": "space", "id": "y", "size": {"min": 8, "step": 1}},
                     {"type": "space", "id": "x", "size": {"min": 8, "step": 1}},
                     {"type": "channel", "channel_names": ["raw"]}],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.tif"},
            "data": {"type": "float32"},
        }],
        "outputs": [{
            "id": "probabilities",
            "description": "class probabilities (softmax over the channel axis)",
            "axes": [{"type": "batch"},
                     {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                     {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}},
                     {"type": "channel", "channel_names": [_slug(n).replace("-", "_") for n in names]}],
            "test_tensor": {"source": "test_output.npy"},
            "sample_tensor": {"source": "sample_output.tif"},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {"tensorflow_saved_model_bundle": {
            "source": "saved_model.zip",
            "tensorflow_version": meta["versions"]["tensorflow"],
            "authors": [{"name": a} for a in authors],
        }},
        "config": {"tem_keras": {k: meta[k] for k in ("classes", "pixel_size_nm", "preprocessing",
                                                     "threshold", "downsampling", "receptive_field_px",
                                                     "receptive_field_nm")}},
    }
    if meta["pixel_size_nm"]:
        scale = float(meta["pixel_size_nm"])
        for tensor in (rdf["inputs"][0], rdf["outputs"][0]):
            for axis in tensor["axes"]:
                if axis["type"] == "space":
                    axis["unit"], axis["scale"] = "nanometer", scale
    del rdf["id"]
    import yaml

    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True))
    return validate_bioimageio(folder / "rdf.yaml")


def validate_bioimageio(rdf_path, *, test_model: bool = False) -> str:
    """Validate a bioimage.io ``rdf.yaml`` offline; returns a one-line summary.

    Parameters
    ----------
    rdf_path : str or Path
    test_model : bool
        Also run the model with ``bioimageio.core.test_model`` (reproduces the test output from
        the test input and runs other sizes and batch sizes) when bioimageio.core is installed.
        Without it, ``bioimageio.spec.load_description`` checks the format and the files
        (hashes, test tensors, sample tensors, cover), which needs no network.

    Raises
    ------
    ValueError
        The package is invalid or the model test failed.
    """
    try:
        import bioimageio.spec as spec  # noqa: PLR0402
    except Exception as error:  # noqa: BLE001
        return f"written, not validated (bioimageio.spec not installed: {type(error).__name__})"
    if test_model:
        try:
            from bioimageio.core import test_model as run_test
        except Exception:  # noqa: BLE001
            test_model = False
    if test_model:
        import tempfile

        here = os.getcwd()
        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)  # bioimageio.core unzips the weights into the working directory
            try:
                summary = run_test(str(Path(here, rdf_path)))
            finally:
                os.chdir(here)
        status, version = summary.status, spec.__version__
        failed = [d for d in summary.details if d.status == "failed"]
        if status != "passed":
            raise ValueError(f"bioimage.io model test {status}: "
                             + "; ".join(f"{d.name}: {[e.msg[:200] for e in d.errors]}" for d in failed[:3]))
        return f"passed (bioimageio.core model test: test tensors reproduced, sizes and batches run; spec {version})"
    description = spec.load_description(str(rdf_path), perform_io_checks=True)
    summary = description.validation_summary
    status = summary.status
    if status not in ("passed", "valid-format"):
        details = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors[:5])
        raise ValueError(f"bioimage.io validation {status}: {details}")
    warnings = [(f"{'.'.join(map(str, w.loc))}: " if w.loc else "") + w.msg
                for d in summary.details for w in d.warnings]
    said = f"; {len(warnings)} warning{'s' if len(warnings) > 1 else ''}: {' | '.join(warnings)[:400]}"
    return (f"{status}, bioimageio.spec {spec.__version__}, format {description.format_version}"
            + (said if warnings else ""))
