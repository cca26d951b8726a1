"""The labelled sets of ``benchmarks/accuracy.py``: the real sets first, then synthetic imitations.

Every set is laid out in the standard layout ``DIR/images/<stem>.<ext>`` +
``DIR/masks/<stem>.<ext>`` with a ``dataset.json`` under the scratch folder. Real sets are
symlinks to ``../shared/data/real-dev`` (never copied; a set whose source is absent is skipped)
with a fixed split in ``dataset.json``; synthetic sets are generated with fixed seeds, so a set
made twice is the same set. A folder that already holds the same set is reused.

Real sets (``../shared/data/real-dev``, see its ``SOURCES.md``):

``tem-sinter-tiles``
    40 bright-field 512² tiles of one in-situ sintering experiment, binary. The authors' split:
    the 20 ``test_*`` tiles are the test set, the 20 ``train_*`` tiles train (every 5th of them
    validates).
``tem-soot-aggregates-fold1`` .. ``-fold3``
    6 bright-field micrographs 2240×1952 of soot aggregates, binary. Three folds: the stems in
    sorted order, two consecutive ones testing per fold (fold 1 holds the two images of sample
    A9); of the other four, one validates (a different one per fold) and three train.
    ``--sets tem-soot-aggregates`` names the three folds.
``pt-alumina-haadf-tomo``
    60 HAADF-STEM 512² slices of tomograms of Pt on γ-alumina, 3 classes, Pt (class 2) scored.
    The source's split is by slice, so most of its val slices have a near twin in train. Here
    slices are grouped by pixel correlation (union-find on the pairs with Pearson correlation
    ≥ 0.9 of their 128² area-averaged thumbnails, :func:`correlation_groups`) and whole groups
    are drawn (seeded) into test (15 images) and val (9), the rest train.

Synthetic sets (:func:`tem_keras.data.synthetic.make_image`, 0.5 nm/px unless uncalibrated):

``bf_tetrahedra``
    Bright-field, 18 images 512², faceted irregular particles of ~24 px (12 ± 4 nm), noisy
    (dose 100 e/px), support texture and illumination gradient, 25 % touching.
``bf_prisms``
    Bright-field, 12 images 512², large particles of ~70 px (35 ± 10 nm), strong contrast
    (0.6), dose 150, more blur, some low-contrast particles.
``insitu_tiny``
    Bright-field in-situ frames 369² (not a multiple of 16), 16 frames, ~500 particles each of
    5–8 px (3.25 ± 0.4 nm) at dose 80 e/px.
``mixed``
    40 images of mixed sizes (300–900 px, about a third non-square), HAADF and bright-field
    alternating, particle diameters 6–50 px varying per image (at most ~800 particles per
    image), dose and contrast varying.
``mixed_collection``
    300 uncalibrated micrographs (no pixel size anywhere) 500–1100 px, a third non-square, in
    turn bright-field, HAADF and SEM-like contrast (:func:`tem_keras.data.synthetic.sem_like`:
    bright particles with brightened edges on a textured substrate), particle diameters log-uniform 5–200 px across
    images (at most 3000 particles per image), dose, contrast and blur varying; written as
    8-bit PNG, as such collections usually are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TEM_KERAS_SHARED_DATA", ROOT.parent / "shared" / "data"))
REAL_DEV = SHARED_DATA / "real-dev"
PT_ALUMINA = REAL_DEV / "pt-alumina-haadf-tomo"

PIXEL_NM = 0.5
THUMBNAIL = 128
GROUP_CORRELATION = 0.9

#: one entry per synthetic set: what is common to its images; ``recipes(name, quick)`` builds
#: the list of per-image recipes (kwargs of make_image + "stem" and "seed")
SYNTHETIC = {
    "bf_tetrahedra": dict(
        n_images=18, quick=8, size=512, mode="bright-field", seed=1701,
        kwargs=dict(particle_diameter_nm=(12.0, 4.0), coverage=0.18, touching_fraction=0.25,
                    ellipticity=0.3, irregularity=0.08, low_contrast_fraction=0.15,
                    contrast=0.4, dose=100, blur_sigma_px=1.0, illumination_gradient=0.2,
                    background_texture=0.05),
        description="bright-field, 18 images 512², faceted irregular particles ~24 px "
                    "(12 ± 4 nm at 0.5 nm/px), contrast 0.4, dose 100, 25 % touching, "
                    "textured support, illumination gradient 0.2"),
    "bf_prisms": dict(
        n_images=12, quick=8, size=512, mode="bright-field", seed=1702,
        kwargs=dict(particle_diameter_nm=(35.0, 10.0), coverage=0.2, touching_fraction=0.15,
                    ellipticity=0.35, irregularity=0.06, low_contrast_fraction=0.1,
                    contrast=0.6, dose=150, blur_sigma_px=1.2, illumination_gradient=0.15,
                    background_texture=0.05),
        description="bright-field, 12 images 512², large particles ~70 px (35 ± 10 nm), "
                    "strong contrast 0.6, dose 150, blur 1.2 px, 10 % low-contrast particles"),
    "insitu_tiny": dict(
        n_images=16, quick=6, size=369, mode="bright-field", seed=1703,
        kwargs=dict(particle_diameter_nm=(3.25, 0.4), coverage=0.12, touching_fraction=0.1,
                    ellipticity=0.2, irregularity=0.03, low_contrast_fraction=0.1,
                    contrast=0.5, dose=80, blur_sigma_px=0.8, illumination_gradient=0.2,
                    background_texture=0.05),
        description="bright-field in-situ frames 369², 16 frames, ~500 particles of 5–8 px "
                    "(3.25 ± 0.4 nm) each, contrast 0.5, dose 80"),
    "mixed": dict(
        n_images=40, quick=10, seed=1704,
        description="40 images, 300–900 px (a third non-square), HAADF and bright-field "
                    "alternating, particle diameters 6–50 px per image, dose/contrast varying"),
    "mixed_collection": dict(
        n_images=300, quick=24, seed=1705, calibrated=False, suffix=".png",
        description="300 uncalibrated 8-bit micrographs 500–1100 px (a third non-square), "
                    "bright-field / HAADF / SEM-like in turn, particle diameters 5–200 px "
                    "log-uniform across images, dose/contrast/blur varying"),
}
SOOT_FOLDS = tuple(f"tem-soot-aggregates-fold{k}" for k in (1, 2, 3))
REAL_SETS = ("tem-sinter-tiles", *SOOT_FOLDS, "pt-alumina-haadf-tomo")
ALL_SETS = (*REAL_SETS, *SYNTHETIC)
#: names that stand for several sets
GROUPS = {"tem-soot-aggregates": SOOT_FOLDS, "real": REAL_SETS, "synthetic": tuple(SYNTHETIC)}
#: the class scored ("particle class vs rest"); 1 elsewhere
PARTICLE_CLASS = {"pt-alumina-haadf-tomo": 2}


def expand(names) -> list[str]:
    """Set names with the names of :data:`GROUPS` replaced by their sets, in order, once each."""
    out = []
    for name in names:
        for n in GROUPS.get(name, (name,)):
            if n not in ALL_SETS:
                raise ValueError(f"unknown set {n!r}; known: {', '.join([*ALL_SETS, *GROUPS])}")
            if n not in out:
                out.append(n)
    return out


def particle_class(name: str) -> int:
    return PARTICLE_CLASS.get(name, 1)


# --------------------------------------------------------------------------------------------
# near-duplicates: thumbnails and their correlation
# --------------------------------------------------------------------------------------------

def read_gray(path) -> np.ndarray:
    """A 2-D float32 image read with :func:`tem_keras.read_image` (channels averaged)."""
    import tem_keras

    image = np.asarray(tem_keras.read_image(path).data, np.float32)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image.mean(-1)
    return image


def thumbnail(image, size: int = THUMBNAIL) -> np.ndarray:
    """``image`` resized to ``size``² by area averaging (whatever its aspect ratio), float64."""
    import cv2

    return cv2.resize(np.asarray(image, np.float32), (size, size),
                      interpolation=cv2.INTER_AREA).astype(np.float64)


def correlations(a, b) -> np.ndarray:
    """Pearson correlation of every thumbnail of ``a`` with every one of ``b``: ``[len(a), len(b)]``."""
    def unit(ts):
        x = np.stack([np.ravel(t) for t in ts]).astype(np.float64)
        x -= x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return unit(a) @ unit(b).T


def correlation_groups(thumbs, threshold: float = GROUP_CORRELATION) -> list[list[int]]:
    """Connected components (union-find) of the graph linking images whose thumbnails correlate
    at ``threshold`` or more; each group a sorted list of indices, groups ordered by first index."""
    c = correlations(thumbs, thumbs)
    parent = list(range(len(thumbs)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(c >= threshold, 1))):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(thumbs)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def group_split(groups, sizes: dict, seed: int = 0) -> dict[str, list[int]]:
    """Whole groups drawn in a seeded random order into the splits of ``sizes`` (in order, each
    filled up to its size without exceeding it), the remaining groups into ``"train"``."""
    order = np.random.default_rng(seed).permutation(len(groups))
    out = {k: [] for k in (*sizes, "train")}
    for g in order:
        dest = next((k for k, n in sizes.items() if len(out[k]) + len(groups[g]) <= n), "train")
        out[dest] += groups[g]
    return {k: sorted(v) for k, v in out.items()}


def check_groups() -> None:
    """Known answers of the grouping on made-up thumbnails: twins group, others stay apart."""
    rng = np.random.default_rng(0)
    base = [rng.random((16, 16)) for _ in range(4)]
    thumbs = [base[0], base[1], base[0] + 0.05 * rng.random((16, 16)), base[2], base[3],
              base[3] * 2 + 1]
    assert correlation_groups(thumbs) == [[0, 2], [1], [3], [4, 5]]
    split = group_split(correlation_groups(thumbs), {"test": 2, "val": 1}, seed=0)
    assert sorted(sum(split.values(), [])) == list(range(6))
    assert all({0, 2} <= set(v) or not {0, 2} & set(v) for v in split.values())


# --------------------------------------------------------------------------------------------
# real sets: symlinked folders with a fixed split
# --------------------------------------------------------------------------------------------

def _same_json(path: Path, meta: dict) -> bool:
    try:
        return json.loads(path.read_text()) == meta
    except (OSError, json.JSONDecodeError):
        return False


def _link_set(out_dir: Path, links: dict, split: dict, meta: dict, log=print) -> Path:
    """Folder of symlinks ``images/<stem><ext>`` / ``masks/<stem><ext>`` to ``links[stem] =
    (image, mask)`` with ``dataset.json`` = ``meta`` + the split + the sources; reused when it
    already holds exactly that."""
    meta = {**meta, "split": split,
            "sources": {s: [str(a), str(b)] for s, (a, b) in sorted(links.items())}}
    meta_path = out_dir / "dataset.json"
    if _same_json(meta_path, meta) and all(
            (out_dir / "images" / f"{s}{a.suffix}").exists() for s, (a, _) in links.items()):
        return out_dir
    for sub in ("images", "masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for old in (out_dir / sub).iterdir():
            old.unlink()
    for stem, (img, msk) in links.items():
        (out_dir / "images" / f"{stem}{img.suffix}").symlink_to(img.resolve())
        (out_dir / "masks" / f"{stem}{msk.suffix}").symlink_to(msk.resolve())
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    log(f"[{meta['name']}] laid out {len(links)} symlinked pairs in {out_dir}")
    return out_dir


def _pairs_by_name(folder: Path) -> dict:
    """``{stem: (image, mask)}`` of a folder with ``images/`` and ``masks/`` of equal names."""
    return {p.stem: (p, folder / "masks" / p.name) for p in sorted((folder / "images").iterdir())}


def _sinter_tiles(quick: bool):
    pairs = _pairs_by_name(REAL_DEV / "tem-sinter-tiles")
    train = sorted(s for s in pairs if s.startswith("train_"))
    test = sorted(s for s in pairs if s.startswith("test_"))
    if quick:
        train, test = train[:8], test[:4]
    split = {"train": [s for i, s in enumerate(train) if i % 5 != 4],
             "val": [s for i, s in enumerate(train) if i % 5 == 4], "test": test}
    meta = {"description": "bright-field TEM tiles 512² of in-situ sintering; authors' "
                           "train/test split (every 5th train tile validates)",
            "classes": {"0": "background", "1": "particle"}}
    return pairs, split, meta


def _soot_fold(fold: int, quick: bool):
    pairs = _pairs_by_name(REAL_DEV / "tem-soot-aggregates")
    stems = sorted(pairs)
    test = stems[2 * (fold - 1):2 * fold]
    rest = [s for s in stems if s not in test]
    val = [rest[fold - 1]]
    split = {"train": [s for s in rest if s not in val], "val": val, "test": test}
    meta = {"description": f"bright-field TEM 2240×1952 of soot aggregates, fold {fold} of 3 "
                           "(2 test images per fold)",
            "classes": {"0": "background", "1": "aggregate"}, "fold": fold}
    return pairs, split, meta


def pt_alumina_sources() -> tuple[list[str], dict]:
    """Stems ``srctrain_NNN`` / ``srcval_NNN`` of the 60 slices (the source split in the name)
    and ``{stem: (image, mask)}``; images and masks of each source split pair in sorted order."""
    stems, pairs = [], {}
    for part in ("train", "val"):
        imgs = sorted((PT_ALUMINA / part / f"{part}_images").iterdir())
        msks = sorted((PT_ALUMINA / part / f"{part}_masks").iterdir())
        if len(imgs) != len(msks):
            raise RuntimeError(f"{PT_ALUMINA / part}: {len(imgs)} images but {len(msks)} masks")
        for i, pair in enumerate(zip(imgs, msks)):
            stems.append(f"src{part}_{i:03d}")
            pairs[stems[-1]] = pair
    return stems, pairs


def pt_alumina_split() -> tuple[dict, list, dict]:
    """The leak-free split of pt-alumina: ``(split, groups, pairs)``. Slices are grouped by
    :func:`correlation_groups` of their thumbnails and whole groups drawn (seed 2022) into test
    (15 images) and val (9); the rest train. ``groups`` are lists of stems."""
    stems, pairs = pt_alumina_sources()
    groups = correlation_groups([thumbnail(read_gray(pairs[s][0])) for s in stems])
    idx = group_split(groups, {"test": 15, "val": 9}, seed=2022)
    split = {k: [stems[i] for i in idx[k]] for k in ("train", "val", "test")}
    return split, [[stems[i] for i in g] for g in groups], pairs


def _pt_alumina(quick: bool):
    split, groups, pairs = pt_alumina_split()
    if quick:                             # parts of a leak-free split stay leak-free
        split = {"train": split["train"][:10], "val": split["val"][:2], "test": split["test"][:4]}
        pairs = {s: pairs[s] for s in sum(split.values(), [])}
    meta = {"description": "HAADF-STEM tomogram slices 512², Pt on γ-alumina, 3 classes (Pt "
                           "scored); split by groups of near-identical slices (Pearson ≥ "
                           f"{GROUP_CORRELATION} of {THUMBNAIL}² thumbnails)",
            "classes": {"0": "background/pores", "1": "alumina", "2": "Pt"},
            "groups": groups}
    return pairs, split, meta


def make_real(name: str, out_dir: Path, quick: bool = False, log=print) -> Path | None:
    """Lay out real set ``name`` in ``out_dir``; None (and a line logged) when its source is absent."""
    source = REAL_DEV / ("tem-soot-aggregates" if name in SOOT_FOLDS else name)
    if not source.is_dir():
        log(f"[{name}] skipped: {source} is absent")
        return None
    if name == "tem-sinter-tiles":
        pairs, split, meta = _sinter_tiles(quick)
    elif name in SOOT_FOLDS:
        pairs, split, meta = _soot_fold(SOOT_FOLDS.index(name) + 1, quick)
    else:
        pairs, split, meta = _pt_alumina(quick)
    links = {s: pairs[s] for s in sum(split.values(), [])}
    mode = "haadf" if name == "pt-alumina-haadf-tomo" else "bright-field"
    return _link_set(Path(out_dir), links, split,
                     {"name": name, "source": str(source), "quick": quick, **meta,
                      "modes": {s: mode for s in sorted(links)}}, log)


# --------------------------------------------------------------------------------------------
# synthetic sets
# --------------------------------------------------------------------------------------------

def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _mixed_recipe(rng, i: int) -> dict:
    """Image ``i`` of ``mixed``: size, mode and particles drawn from ``rng``."""
    h = int(rng.integers(300, 901))
    w = int(rng.integers(300, 901)) if rng.random() < 0.35 else h
    mode = "haadf" if i % 2 else "bright-field"
    d_px = _log_uniform(rng, 6, 50)
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


def _collection_recipe(rng, i: int) -> dict:
    """Image ``i`` of ``mixed_collection``: bright-field, HAADF and SEM-like in turn; the particle
    diameter log-uniform 5–200 px; at most 3000 particles."""
    h = int(rng.integers(500, 1101))
    w = int(rng.integers(500, 1101)) if rng.random() < 0.35 else h
    mode = ("bright-field", "haadf", "sem")[i % 3]
    d_px = _log_uniform(rng, 5, 200)
    d_nm = d_px * PIXEL_NM
    coverage = min(float(rng.uniform(0.05, 0.3)), 3000 * np.pi / 4 * d_px**2 / (h * w))
    kw = dict(size=(h, w), mode=mode, particle_diameter_nm=(d_nm, 0.2 * d_nm), coverage=coverage,
              touching_fraction=float(rng.uniform(0, 0.3)), ellipticity=0.3,
              irregularity=float(rng.uniform(0.02, 0.08)), low_contrast_fraction=0.1,
              blur_sigma_px=float(rng.uniform(0.6, 1.6)),
              illumination_gradient=float(rng.uniform(0.0, 0.3)),
              background_texture=float(rng.uniform(0.02, 0.08)))
    if mode == "bright-field":
        kw.update(contrast=float(rng.uniform(0.25, 0.6)), dose=float(rng.uniform(40, 200)))
    else:                                 # SEM-like starts from a HAADF image (sem_like)
        kw.update(contrast=float(rng.uniform(0.5, 1.5)), dose=float(rng.uniform(15, 80)))
    return kw


def recipes(name: str, quick: bool = False) -> list[dict]:
    """``[{"stem", "seed", **make_image kwargs}]`` for the images of a synthetic set."""
    spec = SYNTHETIC[name]
    drawn = {"mixed": _mixed_recipe, "mixed_collection": _collection_recipe}.get(name)
    out = []
    for i in range(spec["quick"] if quick else spec["n_images"]):
        seed = np.random.SeedSequence(spec["seed"], spawn_key=(i,))
        if drawn:
            kw = drawn(np.random.default_rng(np.random.SeedSequence(spec["seed"],
                                                                    spawn_key=(10_000 + i,))), i)
        else:
            kw = dict(size=spec["size"], mode=spec["mode"], **spec["kwargs"])
        out.append({"stem": f"{name}_{i:03d}", "seed": seed, **kw})
    return out


def _recipe_json(recipe: dict) -> dict:
    r = {k: (list(v) if isinstance(v, tuple) else v) for k, v in recipe.items()}
    s = r.pop("seed")
    r["seed"] = {"entropy": int(s.entropy), "spawn_key": list(s.spawn_key)}
    return r


def render(recipe: dict, pixel_size_nm: float = PIXEL_NM):
    """``(image, SyntheticImage)`` of one recipe; mode ``"sem"`` goes through :func:`sem_like`."""
    from tem_keras.data.synthetic import make_image, sem_like

    kw = {k: v for k, v in recipe.items() if k != "stem"}
    if kw["mode"] != "sem":
        s = make_image(pixel_size_nm=pixel_size_nm, **kw)
        return s.image, s
    dose, seed = kw.pop("dose"), recipe["seed"]
    s = make_image(pixel_size_nm=pixel_size_nm, **{**kw, "mode": "haadf"}, dose=None)
    rng = np.random.default_rng(np.random.SeedSequence(seed.entropy,
                                                       spawn_key=(*seed.spawn_key, 1)))
    return sem_like(s.image, dose, rng), s


def make_synthetic(name: str, out_dir: Path, quick: bool = False, log=print) -> Path:
    """Write synthetic set ``name`` to ``out_dir`` (reused when it already holds the same set)."""
    import warnings

    from tem_keras import __version__
    from tem_keras.io import write_image, write_mask

    spec = SYNTHETIC[name]
    calibrated, suffix = spec.get("calibrated", True), spec.get("suffix", ".tif")
    out_dir = Path(out_dir)
    todo = recipes(name, quick)
    meta_recipes = [_recipe_json(r) for r in todo]
    meta_path = out_dir / "dataset.json"
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    if (old.get("recipes") == meta_recipes and old.get("description") == spec["description"]
            and all((out_dir / "images" / f"{r['stem']}{suffix}").is_file()
                    and (out_dir / "masks" / f"{r['stem']}.png").is_file() for r in todo)):
        return out_dir
    for sub in ("images", "masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / sub).iterdir():
            stale.unlink()
    log(f"[{name}] generating {len(todo)} synthetic images in {out_dir}")
    modes, counts, diam = {}, {}, {}
    for r in todo:
        with warnings.catch_warnings():    # "not all particles placed": the recipe caps them
            warnings.simplefilter("ignore")
            image, s = render(r)
        write_image(out_dir / "images" / f"{r['stem']}{suffix}", image,
                    s.pixel_size_nm if calibrated else None, overwrite=True)
        write_mask(out_dir / "masks" / f"{r['stem']}.png", s.mask, overwrite=True)
        modes[r["stem"]] = r["mode"]
        counts[r["stem"]] = int(s.n_particles)
        diam[r["stem"]] = float(np.median([p["diameter_px"] for p in s.particles])) \
            if s.particles and "diameter_px" in s.particles[0] else None
    meta = {"name": name, "description": spec["description"],
            **({"pixel_size_nm": PIXEL_NM} if calibrated else {}),
            "classes": {"0": "background", "1": "particle"}, "quick": quick,
            "generator": {"function": "tem_keras.data.synthetic.make_image",
                          **({"sem": "tem_keras.data.synthetic.sem_like"}
                             if "sem" in modes.values() else {}),
                          "tem_keras_version": __version__},
            "recipes": meta_recipes, "modes": modes, "particles": counts,
            "median_diameter_px": diam}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def make_set(name: str, work: Path, quick: bool = False, log=print) -> Path | None:
    """Folder of set ``name`` under ``work`` (``<name>`` or ``<name>-quick``), made if needed;
    None for a real set whose source is absent."""
    folder = Path(work) / (f"{name}-quick" if quick else name)
    if name in REAL_SETS:
        return make_real(name, folder, quick, log)
    if name not in SYNTHETIC:
        raise ValueError(f"unknown set {name!r}; known: {', '.join(ALL_SETS)}")
    return make_synthetic(name, folder, quick, log)
