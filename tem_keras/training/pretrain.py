"""Pre-training of the planned residual UNets on synthetic micrographs (the ``pretrained="tem"`` weights).

``python -m tem_keras.training.pretrain OUT_DIR`` writes a corpus of synthetic bright-field,
HAADF-STEM, HRTEM and SEM-like micrographs (240 by default) whose generator parameters are drawn at
random over wide ranges (particle sizes from 4 px to a third of the image, dense in-situ frames of
4-8 px particles, coverage, contrast, dose, blur, illumination, support texture, pixel size),
trains each residual UNet of :data:`~tem_keras.training.plan.POOL_LADDER`'s depths on it with
:func:`~tem_keras.fit`'s default recipe (30 min each by default), and stores the weights with
:func:`~tem_keras.models.tem_weights.save_tem_weights`, with their provenance (:func:`provenance`).
The corpus seeds are disjoint from those of the tests and the benchmarks; the synthetic sets of
``benchmarks/accuracy.py`` come from the same generators, so only its real sets judge the warm
start without bias.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["CORPUS_MODES", "CORPUS_SEED", "HELD_OUT_SEED", "TINY_SHARE", "make_corpus", "pretrain",
           "provenance", "held_out_dice"]

#: root seed of the pre-training corpus (image i uses a child of it)
CORPUS_SEED = 20261201
#: root seed of fresh corpus images that no shipped network was trained on (:func:`held_out_dice`)
HELD_OUT_SEED = 20261207


#: imaging modes of the corpus, in turn; "sem" is an SEM-like image made from a HAADF one
CORPUS_MODES = ("bright-field", "haadf", "hrtem", "sem")
#: share of the non-HRTEM images drawn as in-situ frames: dense 4-8 px particles at low dose
TINY_SHARE = 0.25


def _draw(rng: np.random.Generator, mode: str, size: int = 384) -> dict:
    """Generator parameters of one corpus image, drawn over ranges seen in TEM practice.

    Particle diameters are log-uniform from 4 px to a third of the image (150 px at 384²), the
    magnification spread of a mixed collection; a quarter of the bright-field, HAADF and SEM-like
    images are in-situ frames of dense 4-8 px particles at a low dose (Horwath et al. 2020).
    """
    u = rng.uniform
    common = dict(touching_fraction=u(0.0, 0.3), ellipticity=u(0.0, 0.4), irregularity=u(0.0, 0.08),
                  low_contrast_fraction=u(0.0, 0.2), blur_sigma_px=u(0.4, 1.5),
                  illumination_gradient=u(0.0, 0.3), coverage=u(0.04, 0.3))
    if mode == "hrtem":
        mean = u(1.5, 5.0)
        return dict(common, particle_diameter_nm=(mean, mean * u(0.1, 0.3)), pixel_size_nm=u(0.03, 0.06),
                    contrast=u(0.05, 0.15), dose=float(np.exp(u(np.log(100), np.log(2000)))))
    if rng.random() < TINY_SHARE:
        mean_px, dose = u(4.0, 8.0), u(30, 150)
        common.update(coverage=u(0.15, 0.35), touching_fraction=u(0.0, 0.1), blur_sigma_px=u(0.4, 1.0))
    else:
        mean_px = float(np.exp(u(np.log(4), np.log(max(size / 3, 8)))))
        dose = float(np.exp(u(np.log(20), np.log(500))))
    pixel = u(0.2, 1.0)
    contrast = u(0.2, 0.7) if mode == "bright-field" else u(0.5, 3.0)
    return dict(common, particle_diameter_nm=(mean_px * pixel, mean_px * pixel * u(0.1, 0.35)),
                pixel_size_nm=pixel, contrast=contrast, background_texture=u(0.02, 0.1), dose=dose)


def _render(size: int, mode: str, rng: np.random.Generator):
    """``(image, SyntheticImage, record)`` of one corpus image; ``"sem"`` goes through
    :func:`~tem_keras.data.synthetic.sem_like`."""
    import warnings

    from ..data.synthetic import make_image, sem_like

    params = _draw(rng, mode, size)
    with warnings.catch_warnings():  # "not all particles placed": dense draws are capped
        warnings.simplefilter("ignore")
        if mode != "sem":
            sample = make_image(size, mode, seed=rng, **params)
            return sample.image, sample, sample.params
        dose = params.pop("dose")
        sample = make_image(size, "haadf", seed=rng, dose=None, **params)
    return sem_like(sample.image, dose, rng), sample, {**sample.params, "mode": "sem", "dose": dose}


def make_corpus(out_dir, n_images: int = 240, size: int = 384, seed: int = CORPUS_SEED) -> Path:
    """Write the pre-training corpus in the standard layout (modes in turn: :data:`CORPUS_MODES`)."""
    from ..data.synthetic.datasets import child_rng
    from ..io import write_image, write_mask

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    records, modes = {}, {}
    for i in range(n_images):
        rng = child_rng(seed, i)
        mode = CORPUS_MODES[i % len(CORPUS_MODES)]
        stem = f"corpus_{i:04d}"
        image, sample, records[stem] = _render(size, mode, rng)
        write_image(out_dir / "images" / f"{stem}.tif", image, sample.pixel_size_nm, overwrite=True)
        write_mask(out_dir / "masks" / f"{stem}.png", sample.mask, overwrite=True)
        modes[mode] = modes.get(mode, 0) + 1
    meta = {"name": "tem-pretraining-corpus", "classes": {"0": "background", "1": "particle"},
            "seed": seed, "n_images": n_images, "size": size, "modes": modes, "images": records}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out_dir


def pretrain(corpus, spec: dict, out_file, *, time_limit="10min", run_dir=None, seed: int = 0,
             held_out_images: int = 30) -> Path:
    """Train ``spec`` on ``corpus`` with ``fit``'s defaults and save its weights to ``out_file``."""
    from ..models.tem_weights import save_tem_weights
    from .fitting import fit

    run = fit(corpus, model=dict(spec), time_limit=time_limit, run_dir=run_dir, seed=seed, pretrained=None)
    return save_tem_weights(run.model, out_file, provenance(run, corpus, time_limit, seed, held_out_images))


def provenance(run, corpus, time_limit, seed: int, held_out_images: int = 30) -> dict:
    """The weights' record: corpus (size, seed), steps run, wall time, validation and test dice,
    and the dice on fresh corpus images (:func:`held_out_dice`)."""
    corpus_meta = json.loads((Path(corpus) / "dataset.json").read_text())
    training = run.config["training"]
    history = run.history
    return {"corpus": "tem_keras.training.pretrain.make_corpus", "corpus_seed": corpus_meta.get("seed", CORPUS_SEED),
            "corpus_images": corpus_meta.get("n_images"), "corpus_size_px": corpus_meta.get("size"),
            "corpus_modes": corpus_meta.get("modes"),
            "split": {k: len(v) for k, v in run.split.items()}, "seed": seed, "spec": run.config["plan"]["model"],
            "steps": int(training.get("epochs_run", training["epochs"]) * training["steps_per_epoch"]),
            "batch_size": training["batch_size"], "patch_size": run.config["plan"]["patch_size"],
            "time_limit": time_limit, "wall_s": training.get("time", {}).get("wall_s"),
            "best_val_dice": float(history["val_dice"].max()) if "val_dice" in history else None,
            "test_dice": run.metrics.get("per_image", {}).get("dice", {}).get("mean"),
            "tem_keras_version": run.config["versions"].get("tem_keras"),
            **held_out_dice(run.model, n_images=held_out_images, size=corpus_meta.get("size", 384))}


def held_out_dice(model, *, n_images: int = 30, size: int = 384, seed: int = HELD_OUT_SEED,
                  work=None) -> dict:
    """Per-image dice of pre-trained ``model`` alone (no fine-tuning, threshold 0.5, fit's default
    preprocessing) on ``n_images`` fresh corpus images drawn with ``seed``: what the warm start
    knows before it sees the user's data.

    Returns
    -------
    dict
        ``{"held_out_dice": mean, "held_out_dice_std": sample std, "held_out_images": n,
        "held_out_seed": seed, "held_out_size_px": size}``, ready for
        :func:`~tem_keras.models.tem_weights.add_to_record`.
    """
    import tempfile

    from ..analysis.metrics import dice
    from ..data.datasets import discover, read_mask
    from ..inference import predict
    from ..io import read_image

    with tempfile.TemporaryDirectory(dir=work) as scratch:
        corpus = make_corpus(Path(scratch) / "held_out", n_images=n_images, size=size, seed=seed)
        scores = [dice(predict(model, read_image(s.image), progress=False).mask, read_mask(s.mask))
                  for s in discover(corpus)]
    return {"held_out_dice": round(float(np.mean(scores)), 4),
            "held_out_dice_std": round(float(np.std(scores, ddof=1)), 4) if len(scores) > 1 else None,
            "held_out_images": len(scores), "held_out_seed": seed, "held_out_size_px": size}


def main(argv=None) -> None:
    from ..models.tem_weights import WEIGHTS_DIR, weights_key
    from .plan import POOL_LADDER

    parser = argparse.ArgumentParser(prog="python -m tem_keras.training.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, help="folder for the corpus and the runs")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder of the weight files")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--time-limit", default="30min", help="training budget per model")
    parser.add_argument("--blocks", type=int, nargs="+", default=sorted({len(p) for p in POOL_LADDER}))
    parser.add_argument("--held-out-only", action="store_true",
                        help="only measure the files in --out on fresh corpus images and add the numbers to their record")
    args = parser.parse_args(argv)
    if args.held_out_only:
        from ..models.registry import build_model
        from ..models.tem_weights import add_to_record, load_tem_weights

        for n in args.blocks:
            spec = {"name": "residual_unet", "n_blocks": n, "base_filters": 16, "pool_sizes": [2] * n}
            model = build_model(spec)
            load_tem_weights(model, weights_key(spec))
            record = add_to_record(args.out / f"{weights_key(spec)}.npz", **held_out_dice(model, work=args.work))
            print(f"{weights_key(spec)}: held-out dice {record['held_out_dice']} ± {record['held_out_dice_std']} "
                  f"on {record['held_out_images']} images")
        return
    corpus = args.work / "corpus"
    if not (corpus / "dataset.json").is_file():
        make_corpus(corpus, n_images=args.images)
    for n in args.blocks:
        spec = {"name": "residual_unet", "n_blocks": n, "base_filters": 16, "pool_sizes": [2] * n}
        out = pretrain(corpus, spec, args.out / f"{weights_key(spec)}.npz", time_limit=args.time_limit,
                       run_dir=args.work / f"run_{n}b")
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
