"""A synthetic data set on disk in the tem_keras folder layout: :func:`make_dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .images import make_image
from .params import SynthesisParams, canonical_mode, synthesis_params


def child_rng(seed: int, index: int) -> np.random.Generator:
    """Generator for item ``index`` of a collection: independent of how many items there are."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


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
        Target folder; it must be absent or empty unless ``overwrite`` is True.
    n_images : int
        Number of images. Image ``i`` uses the child seed ``SeedSequence(seed, spawn_key=(i,))``,
        so asking for more images leaves the earlier ones unchanged.
    size, mode, pixel_size_nm, params, **image_kwargs
        Passed to :func:`.make_image` (``seed`` excluded); ``pixel_size_nm=None`` keeps the
        pixel size of ``params`` (or the mode's default).
    seed : int, optional
        Root seed; None draws one and records it in ``dataset.json``.
    overwrite : bool
        Allow writing into a non-empty folder; earlier ``synthetic_*`` images and masks there
        are removed first so the folder holds exactly this data set.
    progress : bool, optional
        Show a tqdm progress bar; default only for 50 images or more.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is False.
    ValueError, TypeError
        Invalid or unknown generator parameters (checked before anything is written).
    """
    from tqdm.auto import tqdm

    from ... import __version__
    from ...io import write_image, write_mask

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: folder is not empty; pass overwrite=True to write "
                              f"the synthetic data set into it")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
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
    images, masks = out_dir / "images", out_dir / "masks"
    for folder, pattern in ((images, "synthetic_*.tif"), (masks, "synthetic_*.png")):
        if folder.is_dir():
            for old in folder.glob(pattern):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    counts, record = {}, None
    show = n_images >= 50 if progress is None else progress
    for i in tqdm(range(int(n_images)), desc="synthetic images", disable=not show, unit="img"):
        sample = make_image(size, mode, params=params, seed=child_rng(seed, i))
        stem = f"synthetic_{i:03d}"
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
