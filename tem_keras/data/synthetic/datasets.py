"""A synthetic data set on disk in the tem_keras folder layout: :func:`make_dataset`."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from ...io.outputs import OutputFolder
from .images import make_image
from .params import SynthesisParams, canonical_mode, synthesis_params


def child_rng(seed: int, index: int) -> np.random.Generator:
    """Generator for item ``index`` of a collection: independent of how many items there are."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _legacy_dataset(folder: Path):
    """The files of a synthetic data set written before the manifest (``dataset.json`` with a
    generator record, and nothing but ``synthetic_*`` images and masks), else None."""
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if "dataset.json" not in visible or not set(visible) <= {"images", "masks", "dataset.json"}:
        return None
    try:
        if "generator" not in json.loads((folder / "dataset.json").read_text()):
            return None
    except (OSError, ValueError, TypeError):
        return None
    files = ["dataset.json"]
    for sub, pattern in (("images", "synthetic_*.tif"), ("masks", "synthetic_*.png")):
        if (folder / sub).is_dir():
            names = sorted(p.name for p in (folder / sub).iterdir())
            if not all(fnmatch(n, pattern) for n in names):
                return None
            files += [f"{sub}/{n}" for n in names]
    return files


def make_dataset(out_dir, n_images: int = 8, size=256, mode: str = "bright-field", *,
                 pixel_size_nm: float | None = None, params: SynthesisParams | None = None,
                 seed: int | None = 0, overwrite: bool = False, progress: bool | None = None,
                 **image_kwargs) -> Path:
    """Write a synthetic segmentation data set in the tem_keras folder layout.

    Writes ``out_dir/images/synthetic_000.tif`` ... (float32 ImageJ TIFF with the pixel size),
    ``out_dir/masks/synthetic_000.png`` ... (0 background, 1 particle) and
    ``out_dir/dataset.json`` with the name, mode, pixel size, classes, every generator
    parameter (with seed and tem_keras version) and the particle count of each image.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Target folder; it must be absent or empty, or hold an earlier synthetic data set (see
        ``overwrite``).
    n_images : int
        Number of images. Image ``i`` uses the child seed ``SeedSequence(seed, spawn_key=(i,))``,
        so asking for more images leaves the earlier ones unchanged.
    size, mode, pixel_size_nm, params, **image_kwargs
        Passed to :func:`.make_image` (``seed`` excluded); ``pixel_size_nm=None`` keeps the
        pixel size of ``params`` (or the mode's default).
    seed : int, optional
        Root seed; None draws one and records it in ``dataset.json``.
    overwrite : bool
        Replace a data set written here before by ``make_dataset``: its files (listed in the
        folder's manifest, ``.tem_keras_output``) are removed first so the folder holds exactly
        this data set. A folder holding other files is refused, whatever ``overwrite``.
    progress : bool, optional
        Show a tqdm progress bar; default only for 50 images or more.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        ``out_dir`` holds an earlier data set and ``overwrite`` is False, or files
        ``make_dataset`` did not write.
    ValueError, TypeError
        Invalid or unknown generator parameters (checked before anything is written).
    """
    from tqdm.auto import tqdm

    from ... import __version__
    from ...io import write_image, write_mask
    from ...validation import check_bool, check_int

    out_dir = Path(out_dir)
    n_images = check_int("n_images", n_images, 1)
    check_bool("overwrite", overwrite)
    if "seed" in image_kwargs:
        raise TypeError("make_dataset takes one root seed; image i uses a child of it")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    seed = int(seed)
    mode = canonical_mode(mode)
    if pixel_size_nm is not None:
        image_kwargs["pixel_size_nm"] = pixel_size_nm
    params = synthesis_params(params, image_kwargs, caller="make_dataset")
    params.resolve(size, mode)  # mode-dependent checks, before anything is written
    stems = [f"synthetic_{i:03d}" for i in range(int(n_images))]
    OutputFolder(out_dir, "dataset").prepare(
        overwrite=overwrite, legacy=_legacy_dataset,
        entries=[f"images/{s}.tif" for s in stems] + [f"masks/{s}.png" for s in stems] + ["dataset.json"])
    images, masks = out_dir / "images", out_dir / "masks"
    for folder in (images, masks):
        folder.mkdir(parents=True, exist_ok=True)
    counts, record = {}, None
    show = n_images >= 50 if progress is None else progress
    for i in tqdm(range(int(n_images)), desc="synthetic images", disable=not show, unit="img"):
        sample = make_image(size, mode, params=params, seed=child_rng(seed, i))
        stem = stems[i]
        write_image(images / f"{stem}.tif", sample.image, sample.pixel_size_nm, overwrite=True)
        write_mask(masks / f"{stem}.png", sample.mask, overwrite=True)
        counts[stem] = sample.n_particles
        record = sample.params
    generator = {"function": "tem_keras.data.synthetic.make_image", **record, "seed": seed,
                 "child_seeds": "numpy.random.SeedSequence(seed, spawn_key=(i,))",
                 "tem_keras_version": __version__}
    meta = {"name": out_dir.name or f"synthetic-{mode}", "mode": mode,
            "pixel_size_nm": record["pixel_size_nm"],
            "classes": {"0": "background", "1": "particle"}, "generator": generator,
            "n_images": int(n_images), "particles": counts}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir
