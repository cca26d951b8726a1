"""The labelled sets of ``benchmarks/accuracy.py``: synthetic imitations of four kinds of real TEM
set, and the real development set laid out as a standard dataset folder.

Every set is written in the standard layout ``DIR/images/<stem>.tif`` + ``DIR/masks/<stem>.png``
with a ``dataset.json`` (pixel size, classes, generator parameters; for ``real-dev`` also a fixed
split). All synthetic sets use fixed seeds, so a set made twice is the same set. A folder that
already holds a complete set with the same recipe is reused.

Synthetic sets (made with :func:`tem_keras.data.synthetic.make_image`, pixel size 0.5 nm/px):

``bf_tetrahedra``
    Bright-field, 18 images 512², faceted irregular particles of ~24 px (12 ± 4 nm), noisy
    (dose 100 e/px), support texture and illumination gradient, 25 % touching.
``bf_prisms``
    Bright-field, 12 images 512², large particles of ~70 px (35 ± 10 nm), strong contrast
    (0.6), dose 150, more blur, some low-contrast particles.
``insitu_small``
    Bright-field in-situ frames 369² (not a multiple of 16), 10 images, hundreds of small
    particles (~550) of ~6 px (3 ± 0.7 nm) at dose 80 e/px.
``mixed``
    40 images of mixed sizes (300–900 px, about a third non-square), HAADF and bright-field
    alternating, particle diameters 6–50 px varying per image (at most ~800 particles per
    image), dose and contrast varying.

``real-dev``: ``/work/shared/data/real-dev/pt-alumina-haadf-tomo`` (HAADF-STEM tomogram slices of Pt
on γ-alumina, 3 classes, Pt = class 2): symlinks with matching stems, the 15 ``val`` patches as the
test split, the 45 ``train`` patches split into train and val (every 5th to val).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TEM_KERAS_SHARED_DATA", ROOT.parent / "shared" / "data"))
REAL_DEV = SHARED_DATA / "real-dev" / "pt-alumina-haadf-tomo"

PIXEL_NM = 0.5

#: one entry per synthetic set: a list of image recipes (kwargs of make_image + "seed")
#: is built by ``_recipes(name, quick)``; the dicts below hold what is common to a set.
SYNTHETIC = {
    "bf_tetrahedra": dict(
        n_images=18, size=512, mode="bright-field", seed=1701,
        kwargs=dict(particle_diameter_nm=(12.0, 4.0), coverage=0.18, touching_fraction=0.25,
                    ellipticity=0.3, irregularity=0.08, low_contrast_fraction=0.15,
                    contrast=0.4, dose=100, blur_sigma_px=1.0, illumination_gradient=0.2,
                    background_texture=0.05),
        description="bright-field, 18 images 512², faceted irregular particles ~24 px "
                    "(12 ± 4 nm at 0.5 nm/px), contrast 0.4, dose 100, 25 % touching, "
                    "textured support, illumination gradient 0.2"),
    "bf_prisms": dict(
        n_images=12, size=512, mode="bright-field", seed=1702,
        kwargs=dict(particle_diameter_nm=(35.0, 10.0), coverage=0.2, touching_fraction=0.15,
                    ellipticity=0.35, irregularity=0.06, low_contrast_fraction=0.1,
                    contrast=0.6, dose=150, blur_sigma_px=1.2, illumination_gradient=0.15,
                    background_texture=0.05),
        description="bright-field, 12 images 512², large particles ~70 px (35 ± 10 nm), "
                    "strong contrast 0.6, dose 150, blur 1.2 px, 10 % low-contrast particles"),
    "insitu_small": dict(
        n_images=10, size=369, mode="bright-field", seed=1703,
        kwargs=dict(particle_diameter_nm=(3.0, 0.7), coverage=0.12, touching_fraction=0.1,
                    ellipticity=0.2, irregularity=0.03, low_contrast_fraction=0.1,
                    contrast=0.5, dose=80, blur_sigma_px=0.8, illumination_gradient=0.2,
                    background_texture=0.05),
        description="bright-field in-situ frames 369², 10 images, ~550 particles of ~6 px "
                    "(3 ± 0.7 nm) each, contrast 0.5, dose 80"),
    "mixed": dict(
        n_images=40, size=None, mode="mixed", seed=1704, kwargs={},
        description="40 images, 300–900 px (a third non-square), HAADF and bright-field "
                    "alternating, particle diameters 6–50 px per image, dose/contrast varying"),
}
QUICK_IMAGES = {"bf_tetrahedra": 8, "bf_prisms": 8, "insitu_small": 6, "mixed": 10}
REAL_SETS = ("real-dev",)
ALL_SETS = (*SYNTHETIC, *REAL_SETS)


def _mixed_recipe(i: int, seed: int) -> dict:
    """Image ``i`` of the mixed set: size, mode and particles drawn from a fixed child seed."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(10_000 + i,)))
    h = int(rng.integers(300, 901))
    w = int(rng.integers(300, 901)) if rng.random() < 0.35 else h
    mode = "haadf" if i % 2 else "bright-field"
    d_px = float(np.exp(rng.uniform(np.log(6), np.log(50))))
    d_nm = d_px * PIXEL_NM
    coverage = float(rng.uniform(0.06, 0.25))
    # at most ~800 particles per image (placement time grows with their number)
    coverage = min(coverage, 800 * np.pi / 4 * d_px**2 / (h * w))
    kw = dict(size=(h, w), mode=mode, particle_diameter_nm=(d_nm, 0.25 * d_nm),
              coverage=coverage, touching_fraction=float(rng.uniform(0, 0.3)),
              ellipticity=0.3, irregularity=float(rng.uniform(0.02, 0.08)),
              low_contrast_fraction=0.15, blur_sigma_px=float(rng.uniform(0.7, 1.5)),
              illumination_gradient=float(rng.uniform(0.05, 0.35)))
    if mode == "haadf":
        kw.update(contrast=float(rng.uniform(0.6, 1.5)), dose=float(rng.uniform(15, 60)),
                  background_texture=float(rng.uniform(0.03, 0.08)))
    else:
        kw.update(contrast=float(rng.uniform(0.25, 0.5)), dose=float(rng.uniform(40, 200)),
                  background_texture=float(rng.uniform(0.03, 0.08)))
    return kw


def recipes(name: str, quick: bool = False) -> list[dict]:
    """``[{"stem", "seed", **make_image kwargs}]`` for the images of a synthetic set."""
    spec = SYNTHETIC[name]
    n = QUICK_IMAGES[name] if quick else spec["n_images"]
    out = []
    for i in range(n):
        seed = np.random.SeedSequence(spec["seed"], spawn_key=(i,))
        if spec["mode"] == "mixed":
            kw = _mixed_recipe(i, spec["seed"])
        else:
            kw = dict(size=spec["size"], mode=spec["mode"], **spec["kwargs"])
        out.append({"stem": f"{name}_{i:03d}", "seed": seed, **kw})
    return out


def _recipe_json(recipe: dict) -> dict:
    r = dict(recipe)
    s = r.pop("seed")
    r["seed"] = {"entropy": int(s.entropy), "spawn_key": list(s.spawn_key)}
    if isinstance(r.get("size"), tuple):
        r["size"] = list(r["size"])
    if isinstance(r.get("particle_diameter_nm"), tuple):
        r["particle_diameter_nm"] = list(r["particle_diameter_nm"])
    return r


def make_synthetic(name: str, out_dir: Path, quick: bool = False, log=print) -> Path:
    """Write synthetic set ``name`` to ``out_dir`` (reused when it already holds the same set)."""
    from tem_keras import __version__
    from tem_keras.data.synthetic import make_image
    from tem_keras.io import write_image, write_mask

    out_dir = Path(out_dir)
    todo = recipes(name, quick)
    meta_recipes = [_recipe_json(r) for r in todo]
    meta_path = out_dir / "dataset.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if (old.get("recipes") == meta_recipes
                and old.get("description") == SYNTHETIC[name]["description"]
                and all((out_dir / "images" / f"{r['stem']}.tif").is_file()
                        and (out_dir / "masks" / f"{r['stem']}.png").is_file() for r in todo)):
            return out_dir
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    for old in [*(out_dir / "images").glob("*"), *(out_dir / "masks").glob("*")]:
        old.unlink()
    log(f"[{name}] generating {len(todo)} synthetic images in {out_dir}")
    modes, counts, diam = {}, {}, {}
    for r in todo:
        kw = {k: v for k, v in r.items() if k != "stem"}
        s = make_image(pixel_size_nm=PIXEL_NM, **kw)
        write_image(out_dir / "images" / f"{r['stem']}.tif", s.image, s.pixel_size_nm,
                    overwrite=True)
        write_mask(out_dir / "masks" / f"{r['stem']}.png", s.mask, overwrite=True)
        modes[r["stem"]] = s.mode
        counts[r["stem"]] = int(s.n_particles)
        diam[r["stem"]] = float(np.median([p["diameter_px"] for p in s.particles])) \
            if s.particles and "diameter_px" in s.particles[0] else None
    meta = {"name": name, "description": SYNTHETIC[name]["description"], "pixel_size_nm": PIXEL_NM,
            "classes": {"0": "background", "1": "particle"}, "quick": quick,
            "generator": {"function": "tem_keras.data.synthetic.make_image",
                          "tem_keras_version": __version__},
            "recipes": meta_recipes, "modes": modes, "particles": counts,
            "median_diameter_px": diam}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def make_real_dev(out_dir: Path, quick: bool = False, log=print) -> Path | None:
    """Lay out ``real-dev`` as a standard folder of symlinks with a fixed split; None if absent.

    Images and masks of each source split pair in sorted order (their names differ); stems are
    ``train_NNN`` / ``test_NNN``. Test = the 15 source ``val`` patches; of the 45 source
    ``train`` patches every 5th goes to val, the rest to train. ``quick`` keeps 10 train
    (2 of them val) and 4 test patches.
    """
    if not REAL_DEV.is_dir():
        log(f"[real-dev] skipped: {REAL_DEV} is absent")
        return None
    out_dir = Path(out_dir)
    pairs = {}
    for part in ("train", "val"):
        imgs = sorted((REAL_DEV / part / f"{part}_images").iterdir())
        msks = sorted((REAL_DEV / part / f"{part}_masks").iterdir())
        if len(imgs) != len(msks):
            raise RuntimeError(f"{REAL_DEV / part}: {len(imgs)} images but {len(msks)} masks")
        pairs[part] = list(zip(imgs, msks))
    if quick:
        pairs = {"train": pairs["train"][:10], "val": pairs["val"][:4]}
    split = {"train": [], "val": [], "test": []}
    links = {}
    for i, (img, msk) in enumerate(pairs["train"]):
        stem = f"train_{i:03d}"
        split["val" if i % 5 == 4 else "train"].append(stem)
        links[stem] = (img, msk)
    for i, (img, msk) in enumerate(pairs["val"]):
        stem = f"test_{i:03d}"
        split["test"].append(stem)
        links[stem] = (img, msk)
    meta = {"name": "real-dev", "source": str(REAL_DEV),
            "description": "HAADF-STEM tomogram slices, Pt on gamma-alumina, 512² uint8 patches",
            "classes": {"0": "background/pores", "1": "alumina", "2": "Pt"},
            "split": split, "modes": {s: "haadf" for s in links}, "quick": quick,
            "sources": {s: [str(a), str(b)] for s, (a, b) in links.items()}}
    meta_path = out_dir / "dataset.json"
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return out_dir
        except json.JSONDecodeError:
            pass
    for sub in ("images", "masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for old in (out_dir / sub).iterdir():
            old.unlink()
    for stem, (img, msk) in links.items():
        (out_dir / "images" / f"{stem}{img.suffix}").symlink_to(img.resolve())
        (out_dir / "masks" / f"{stem}{msk.suffix}").symlink_to(msk.resolve())
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    log(f"[real-dev] laid out {len(links)} symlinked pairs in {out_dir}")
    return out_dir


def make_set(name: str, work: Path, quick: bool = False, log=print) -> Path | None:
    """Folder of set ``name`` under ``work`` (``<name>`` or ``<name>-quick``), made if needed."""
    folder = Path(work) / (f"{name}-quick" if quick else name)
    if name == "real-dev":
        return make_real_dev(folder, quick, log)
    if name not in SYNTHETIC:
        raise ValueError(f"unknown set {name!r}; known: {', '.join(ALL_SETS)}")
    return make_synthetic(name, folder, quick, log)
