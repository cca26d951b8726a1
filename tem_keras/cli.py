"""The ``tem-keras`` command.

Each sub-command is a thin wrapper over the Python API; ``tem-keras COMMAND --help`` lists its
options. Bad input ends with a one-line error naming the file (exit status 2), not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from . import _env  # noqa: F401
from .errors import TEMInputError
from .outputs import claim_output, release_output


def _synth(args) -> None:
    from .data.synthetic import make_dataset

    out = make_dataset(args.out_dir, n_images=args.n_images, size=args.size, mode=args.mode,
                       pixel_size_nm=args.pixel_size_nm, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {args.n_images} {args.mode} images with masks to {out}")


def _info(args) -> None:
    from .io import read_stack

    for path in args.files:
        stack = read_stack(path)
        first = stack[0]
        size = "uncalibrated" if first.pixel_size_nm is None else f"{first.pixel_size_nm:.6g} nm/px"
        print(f"{path}: {len(stack)} frame(s) of {first.data.shape[0]}×{first.data.shape[1]} px, "
              f"{size}, {first.metadata.get('signal_type', 'image')}, "
              f"format {first.metadata.get('format', '?')}")


def _check(args) -> None:
    from .data.datasets import discover, load_pair

    ds = discover(args.dataset_dir, pairing=args.pairing)
    print(ds)
    for p in ds.unpaired_images:
        print(f"  image without mask: {p}")
    for p in ds.unpaired_masks:
        print(f"  mask without image: {p}")
    problems = 0
    for sample in ds.labelled:
        try:
            load_pair(sample, ds.num_classes)
        except TEMInputError as err:
            problems += 1
            print(f"  problem: {err}")
    print(f"{len(ds.labelled) - problems} of {len(ds.labelled)} pairs are ready for training")
    if ds.labelled and ds.pixel_size_nm is None:
        from .io import read_image

        try:
            calibrated = read_image(ds.labelled[0].image).pixel_size_nm is not None
        except TEMInputError:
            calibrated = True  # reported above
        if not calibrated:
            _note_pixel_size(ds.labelled[0].image)
    if problems:
        raise SystemExit(2)


def _models(args) -> None:
    from .models.describe import format_model_table, model_table

    print(format_model_table(model_table(pixel_size_nm=args.pixel_size_nm)))


def _value(text: str):
    """A command-line value: int, float, bool, comma-separated tuple, JSON, or the string itself."""
    import json

    if "," in text:
        return tuple(_value(t) for t in text.split(",") if t)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def model_options(extra: list[str]) -> dict:
    """Turn ``--n-blocks 3 --pool-sizes 4,4,4 --batch-norm`` into builder keyword arguments."""
    options, key = {}, None
    for token in extra:
        if token.startswith("--"):
            key = token[2:].replace("-", "_")
            if "=" in key:
                key, text = key.split("=", 1)
                options[key], key = _value(text), None
            else:
                options[key] = True
        elif key is not None:
            options[key] = _value(token)
            key = None
        else:
            raise SystemExit(f"tem-keras: unexpected argument {token!r}")
    return options


def _training_options(args) -> dict:
    options = {name: getattr(args, name) for name in _CONFIG_OPTIONS}
    return dict(options, split=tuple(args.split), augment=not args.no_augment, devices=args.devices,
                pairing=args.pairing, verbose=0 if args.quiet else 1)


def _fit(args) -> None:
    from .training import fit

    run = fit(args.dataset_dir, args.model, seed=args.seed, run_dir=args.run_dir,
              resume=not args.no_resume, overwrite=args.overwrite, **_training_options(args),
              **model_options(args.model_options))
    print(f"run folder: {run.path}")


def _sweep(args) -> None:
    import json

    from .training import sweep

    models = [json.loads(m) if m.lstrip().startswith("{") else m for m in args.models]
    summary = sweep(args.dataset_dir, models, seeds=args.seeds, out_dir=args.out_dir,
                    overwrite=args.overwrite, **_training_options(args))
    print(summary.to_string(index=False))
    print(f"tables and plot in {args.out_dir}")


#: TrainingConfig fields offered as ``fit``/``sweep`` options: (type, choices, help); None = planned
_CONFIG_OPTIONS = {
    "recipe": (str, ("default", "paper"), "optimiser settings: measured defaults or the papers' (default: default)"),
    "time_limit": (str, None, "budget of the whole run, e.g. 10min, 90s, 1h (default: ~10 min on a CPU "
                              "when --epochs is not given)"),
    "epochs": (int, None, "number of epochs (default: as many as fit in the time limit)"),
    "steps_per_epoch": (int, None, "optimiser steps per epoch (default: from the training pixels, 4-50)"),
    "batch_size": (int, None, "patches per step and replica (default: 8 at 256² px on a CPU)"),
    "patch_size": (int, None, "side of the random training patches (default: 256, or 512 for a large "
                              "receptive field; at most the smallest image)"),
    "learning_rate": (float, None, "peak learning rate (default: 1e-3, paper recipe 1e-4)"),
    "weight_decay": (float, None, "AdamW weight decay (default: 1e-4)"),
    "optimizer": (str, ("adam", "adamw"), "default: adamw (paper recipe: adam)"),
    "schedule": (str, ("cosine", "constant"), "default: warm-up + cosine decay (paper recipe: constant)"),
    "loss": (str, ("cross_entropy", "weighted_cross_entropy", "dice", "cross_entropy_dice", "focal"),
             "default: cross_entropy_dice (paper recipe: cross_entropy)"),
    "foreground_fraction": (float, None, "share of patches centred on a particle (default: 1/3)"),
    "patience": (int, None, "early stopping after this many epochs without a better validation dice "
                            "(default: none; paper recipe 10)"),
    "folds": (int, None, "k-fold cross-validation: one model per fold, predicting as their mean"),
    "mixed_precision": (str, ("auto", "float32", "mixed_float16", "mixed_bfloat16"), "default: auto"),
}


def _add_training_options(p) -> None:
    for name, (kind, choices, text) in _CONFIG_OPTIONS.items():
        default = "default" if name == "recipe" else "auto" if name == "mixed_precision" else None
        p.add_argument("--" + name.replace("_", "-"), type=kind, choices=choices, default=default, help=text)
    p.add_argument("--split", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--devices", type=int, default=None, help="number of GPUs (all by default)")
    p.add_argument("--pairing", choices=("stem", "sorted"), default="stem")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true")


def _shard(text: str) -> str:
    """``i/n`` with 0 <= i < n (argparse type)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n (0-based), got {text!r}")
    return f"{i}/{n}"


def _threshold(text: str):
    """A probability threshold in [0, 1] or ``otsu`` (argparse type)."""
    if text.lower() == "otsu":
        return "otsu"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'otsu', got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {text}")
    return value


def _overlap(text: str):
    return "auto" if text == "auto" else int(text)


def _as_input_errors(handler):
    """Report ValueErrors of a handler (bad option values) as one-line input errors."""
    import functools

    @functools.wraps(handler)
    def wrapped(args):
        try:
            return handler(args)
        except TEMInputError:
            raise
        except ValueError as error:
            raise TEMInputError(str(error)) from error

    return wrapped


def _add_prediction_options(p) -> None:
    p.add_argument("--threshold", type=_threshold, default=None,
                   help="particle probability threshold in [0, 1] or 'otsu' (default: the run's "
                   "tuned threshold, else 0.5)")
    p.add_argument("--tile-size", type=int, default=None,
                   help="tile side in px (default: whole images up to 2048², 1024 px tiles above)")
    p.add_argument("--overlap", type=_overlap, default="auto", help="tile overlap in px or 'auto'")
    p.add_argument("--batch-size", type=int, default=4, help="tiles or frames per model call")
    p.add_argument("--mixed-precision", default="float32", choices=("float32", "bfloat16", "float16", "auto"))


def _note_pixel_size(name) -> bool:
    """Say once, on stderr, that sizes in nm need a pixel size and how to give it."""
    from .particles import PIXEL_SIZE_HELP

    print(f"tem-keras: note: {name}: {PIXEL_SIZE_HELP}", file=sys.stderr)
    return True


@_as_input_errors
def _predict(args) -> None:
    import csv

    from .inference import predict_stack, save_prediction

    out = Path(args.out)
    csv_path = None
    if args.particles:
        from .particles import MissingPixelSizeWarning, measure_particles

        suffix = "" if args.shard is None else "_shard{}of{}".format(*args.shard.split("/"))
        csv_path = out / f"particles{suffix}.csv"
        if csv_path.exists() and not args.overwrite:
            raise FileExistsError(f"{csv_path}: already exists; pass --overwrite to replace it")
    n_images = n_particles = 0
    writer = handle = lock = None
    noted = False
    try:
        if csv_path is not None:
            lock = claim_output(csv_path, overwrite=args.overwrite)
        for result in predict_stack(
                args.model, [str(p) for p in args.inputs], frames=args.shard, threshold=args.threshold,
                tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                mixed_precision=args.mixed_precision, pixel_size_nm=args.pixel_size_nm,
                return_probabilities=args.probabilities, return_image=args.overlay or args.particles,
                progress=not args.quiet):
            save_prediction(result, out, mask_format=args.mask_format, probabilities=args.probabilities,
                            overlay_png=args.overlay, overwrite=args.overwrite)
            n_images += 1
            if csv_path is not None:
                if result.pixel_size_nm is None and not noted:
                    noted = _note_pixel_size(result.name)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MissingPixelSizeWarning)
                    table = measure_particles(result.mask, result.pixel_size_nm, image=result.image,
                                              min_area=args.min_area)
                table.insert(0, "image", result.name)
                table.insert(1, "frame", -1 if result.frame is None else result.frame)
                if writer is None:
                    handle = open(lock, "w", newline="")  # rows go to the claimed file
                    writer = csv.writer(handle)
                    writer.writerow(table.columns)
                writer.writerows(table.itertuples(index=False))
                n_particles += len(table)
        if handle is not None:
            handle.close()
            handle = None
            os.replace(lock, csv_path)
    finally:
        if handle is not None:
            handle.close()
        if lock is not None:
            release_output(csv_path)
    print(f"wrote {n_images} mask(s) to {out}"
          + (f"; {n_particles} particles in {csv_path}" if csv_path is not None else ""))


@_as_input_errors
def _evaluate(args) -> None:
    import json

    from .inference import evaluate

    plot = None if args.out is None else Path(args.out) / "threshold_curve.png"
    if args.out is not None:
        for name in ("per_image.csv", "overall.json", "threshold_curve.png"):
            if (Path(args.out) / name).exists() and not args.overwrite:
                raise FileExistsError(f"{Path(args.out) / name}: already exists; pass --overwrite to replace it")
    per_image, overall = evaluate(args.model, args.dataset_dir, threshold=args.threshold, split=args.split,
                                  metric=args.metric, tile_size=args.tile_size, overlap=args.overlap,
                                  batch_size=args.batch_size, mixed_precision=args.mixed_precision,
                                  plot=plot, progress=not args.quiet)
    columns = [c for c in ("image", "threshold", "dice", "iou", "precision", "recall", "f1")
               if c in per_image]
    print(per_image[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    s = overall["scores"]
    print(f"overall ({overall['n_images']} images, pixels pooled): dice {s['dice']:.4f}  iou {s['iou']:.4f}  "
          f"precision {s['precision']:.4f}  recall {s['recall']:.4f}")
    print(f"best threshold for {overall['metric']}: {overall['best_threshold']:.2f} "
          f"({overall['metric']} {overall['at_best'][{'dice': 'f1'}.get(overall['metric'], overall['metric'])]:.4f})")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        per_image.to_csv(out / "per_image.csv", index=False)
        summary = {k: v for k, v in overall.items() if k != "curve"}
        (out / "overall.json").write_text(json.dumps(summary, indent=2, default=float))
        overall["curve"].to_csv(out / "threshold_curve.csv", index=False)
        print(f"tables and plot in {out}")
    if args.save_threshold:
        model_dir = Path(args.model)
        if not (model_dir / "config.json").is_file():
            raise TEMInputError("--save-threshold needs a run folder", model_dir)
        from .artifacts import write_threshold

        saved = write_threshold(model_dir, overall["best_threshold"], metric=overall["metric"],
                                dataset_dir=str(args.dataset_dir), split=args.split)
        print(f"threshold {overall['best_threshold']:.2f} saved in {saved}")


def _mask_files(paths) -> list[Path]:
    from .io import image_files

    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(image_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise TEMInputError("no such file or folder", path)
    if not files:
        raise TEMInputError("no mask files found in " + ", ".join(map(str, paths)))
    return files


@_as_input_errors
def _measure(args) -> None:
    import pandas as pd

    from .data.datasets import read_mask
    from .particles import MissingPixelSizeWarning, measure_particles

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: already exists; pass --overwrite to replace it")
    tables = []
    if args.pixel_size_nm is None:
        _note_pixel_size("measure")
    for path in _mask_files(args.masks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingPixelSizeWarning)
            table = measure_particles(read_mask(path), args.pixel_size_nm, min_area=args.min_area,
                                      split_touching=not args.no_split,
                                      exclude_border=not args.keep_border)
        table.insert(0, "mask", path.name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    column = "equivalent_diameter_nm" if args.pixel_size_nm else "equivalent_diameter_px"
    unit = "nm" if args.pixel_size_nm else "px"
    size = (f"; diameter {table[column].mean():.3g} ± {table[column].std():.2g} {unit}"
            if len(table) else "")
    print(f"{len(table)} particles in {len(tables)} mask(s){size}; table in {args.out}")


@_as_input_errors
def _label(args) -> None:
    from .baselines import pseudo_labels
    from .inference.sources import input_sources, select_frames
    from .io import write_image, write_mask

    sources = []
    for item in args.images:
        sources.extend(input_sources(str(item))[0])
    out = Path(args.out)
    n = 0
    from tqdm.auto import tqdm

    frames = list(select_frames(sources, None))
    for _, source, frame in tqdm(frames, unit="image", desc="label", disable=args.quiet):
        mg = source.get(frame)
        stem = Path(source.name or mg.path).stem + (f"_f{frame:05d}" if source.multi else "")
        labels = pseudo_labels(mg, sigma=args.sigma, disk_radius=args.disk_radius, particles=args.particles)
        write_image(out / "images" / f"{stem}.tif", mg.data, mg.pixel_size_nm, overwrite=args.overwrite)
        write_mask(out / "masks" / f"{stem}.png", __import__('numpy').asarray(labels, dtype='uint8'), overwrite=args.overwrite)
        n += 1
    print(f"wrote {n} image(s) with pseudo-label masks to {out}/images and {out}/masks "
          "(check them before training)")


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(args.out_dir, n_images=args.n_images, size=args.size, epochs=args.epochs,
             time_limit=args.time_limit, mode=args.mode, seed=args.seed, overwrite=args.overwrite)


@_as_input_errors
def _export(args) -> None:
    from .export import FORMATS, export

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip()) if args.formats else FORMATS
    export(args.run_dir, args.out_dir, formats=formats, overwrite=args.overwrite,
           threshold=args.threshold, pixel_size_nm=args.pixel_size_nm, name=args.name,
           verbose=not args.quiet)


@_as_input_errors
def _explain(args) -> None:
    from .explain.report import write_explanation
    from .artifacts import load

    bundle = load(args.model)
    files = write_explanation(bundle.model, None if args.image is None else str(args.image), args.method,
                              args.out, layer=args.layer, class_index=args.class_index,
                              target=args.target, preprocessing=bundle.preprocessing,
                              overwrite=args.overwrite)
    print(f"wrote {len(files)} file(s) to {args.out}: " + ", ".join(f.name for f in files[:6])
          + (", ..." if len(files) > 6 else ""))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tem-keras", description="Segmentation of TEM images of nanoparticles.",
        epilog="Anywhere on the line: --verbose shows TensorFlow's start-up log lines, --debug "
        "the Python traceback of an error.")
    parser.add_argument("--version", action="version", version=f"tem_keras {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="make a synthetic data set of micrographs with exact masks")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--mode", choices=("bright-field", "haadf", "hrtem"), default="bright-field")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    p.set_defaults(func=_synth)

    p = sub.add_parser("info", help="describe micrograph files: size, frames, pixel size")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=_info)

    p = sub.add_parser("check", help="find image/mask pairs in a dataset folder and validate them")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--pairing", choices=("stem", "sorted"), default="stem")
    p.set_defaults(func=_check)

    p = sub.add_parser("fit", allow_abbrev=False, help="train a model on a dataset folder (extra --options go to the model)",
                       description="Train a model. Options not listed here are passed to the model "
                       "builder, e.g. --n-blocks 3 --pool-sizes 4,4,4 or --base-filters 16.")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--model", default=None, help="registry name (see `tem-keras models`); default: a "
                   "residual UNet sized to the particles in the masks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--no-resume", action="store_true", help="do not continue an unfinished run")
    _add_training_options(p)
    p.set_defaults(func=_fit, model_options=[])

    p = sub.add_parser("sweep", help="train several models × seeds and tabulate dice against receptive field")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--models", nargs="+", required=True,
                   help='registry names or JSON configurations such as \'{"name": "residual_unet", "pool_sizes": [4, 4]}\'')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out-dir", type=Path, default=Path("sweeps"))
    _add_training_options(p)
    p.set_defaults(func=_sweep)

    p = sub.add_parser("predict", help="segment images, stacks or videos with a trained model")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("inputs", nargs="+", type=Path, help="image files, stacks, folders or patterns")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    _add_prediction_options(p)
    p.add_argument("--probabilities", action="store_true", help="also write float32 probability TIFFs")
    p.add_argument("--overlay", action="store_true", help="also write overlay PNGs")
    p.add_argument("--particles", action="store_true", help="measure particles into particles.csv")
    p.add_argument("--min-area", type=int, default=10, help="smallest particle in px (--particles)")
    p.add_argument("--pixel-size-nm", type=float, default=None, help="for files without calibration")
    p.add_argument("--shard", type=_shard, default=None,
                   help="predict only the i-th of n contiguous frame ranges (0-based), e.g. 0/4")
    p.add_argument("--mask-format", choices=("png", "tif"), default="png")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="score a model on a labelled dataset folder")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("dataset_dir", type=Path)
    _add_prediction_options(p)
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="only this split of the run (split.json)")
    p.add_argument("--metric", choices=("f1", "dice", "iou"), default="f1",
                   help="metric of the best threshold")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="folder for per_image.csv, overall.json and threshold_curve.png")
    p.add_argument("--save-threshold", action="store_true",
                   help="store the best threshold in the run folder (thresholds.json); predict uses it")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("measure", help="measure particles in mask files (sizes in nm)")
    p.add_argument("masks", nargs="+", type=Path, help="mask files or folders")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.add_argument("-o", "--out", type=Path, default=Path("particles.csv"))
    p.add_argument("--min-area", type=int, default=10, help="smallest particle in px")
    p.add_argument("--no-split", action="store_true", help="do not split touching particles")
    p.add_argument("--keep-border", action="store_true", help="keep particles touching the border")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_measure)

    p = sub.add_parser("label", help="make pseudo-label masks (filters + reconstruction + Otsu) for a dataset folder")
    p.add_argument("images", nargs="+", type=Path, help="image files, stacks or folders")
    p.add_argument("-o", "--out", type=Path, required=True, help="dataset folder (images/ + masks/)")
    p.add_argument("--sigma", type=float, default=2.0, help="Gaussian smoothing in px")
    p.add_argument("--disk-radius", type=int, default=3, help="grey opening radius in px")
    p.add_argument("--particles", choices=("dark", "bright", "auto"), default="dark")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_label)

    p = sub.add_parser("demo", help="train, predict, measure and export on generated micrographs (a few minutes)")
    p.add_argument("out_dir", type=Path, nargs="?", default=Path("tem_keras_demo"))
    p.add_argument("--n-images", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=None, help="default: as many as fit in --time-limit")
    p.add_argument("--time-limit", default="100s", help="training budget (default 100s)")
    p.add_argument("--mode", choices=("bright-field", "haadf", "hrtem"), default="bright-field")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.set_defaults(func=_demo)

    p = sub.add_parser("export", help="export a run: SavedModel with preprocessing inside, .keras, ONNX, "
                       "bioimage.io package, model card")
    p.add_argument("run_dir", type=Path, help="run folder (config.json + best.keras)")
    p.add_argument("out_dir", type=Path, help="export folder to write (new or empty)")
    p.add_argument("--formats", default=None,
                   help="comma-separated subset of saved_model,keras,onnx,bioimageio (default: all; "
                   "onnx is skipped with a message when tf2onnx/onnxruntime are not installed)")
    p.add_argument("--threshold", type=float, default=None,
                   help="particle probability threshold stored with the model (default: the run's, else 0.5)")
    p.add_argument("--pixel-size-nm", type=float, default=None, help="override the run's pixel size")
    p.add_argument("--name", default=None, help="model name in the card (default: the run folder's name)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=_export)

    p = sub.add_parser("explain",
                       help="explain a model: Grad-CAM, kernels, activations, effective receptive field")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("image", nargs="?", type=Path, default=None,
                   help="image file (needed for gradcam and activations; erf uses random images without it)")
    p.add_argument("--method", choices=("gradcam", "gradcam++", "kernels", "activations", "erf"),
                   default="gradcam")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder for PNG and .npy files")
    p.add_argument("--layer", default=None,
                   help="layer name (Grad-CAM, kernels); comma-separated names for activations")
    p.add_argument("--class-index", type=int, default=1, help="class explained (1: particle)")
    p.add_argument("--target", choices=("particle", "all"), default="particle",
                   help="Grad-CAM target pixels: those predicted as the class, or all")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_explain)

    p = sub.add_parser("models", help="table of the model zoo: parameters, receptive field, FLOPs")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.set_defaults(func=_models)
    return parser


def _choose_cpu_kernels(args) -> None:
    """oneDNN or Eigen for a small network, while TensorFlow is not imported yet (the one moment
    the switch can act; see :func:`tem_keras.distribute.prefer_onednn`)."""
    from .distribute import network_weight_bytes, onednn_choice_open, prefer_onednn, saved_weight_bytes

    if not onednn_choice_open():
        return
    if args.command in ("predict", "evaluate", "explain"):
        size = saved_weight_bytes(args.model)
    elif args.command == "fit" and args.model is None:  # planned residual UNets: at most 32 MiB
        size = 0
    elif args.command == "fit":
        size = network_weight_bytes(args.model, model_options(args.model_options))
    else:  # the demo plans a residual UNet (at most 32 MiB of weights)
        size = 0
    if prefer_onednn(size) and not getattr(args, "quiet", False):
        print("tem-keras: TensorFlow's oneDNN kernels on for this small network "
              "(TF_ENABLE_ONEDNN_OPTS=0 keeps TensorFlow's choice)", file=sys.stderr)


#: sub-commands that start TensorFlow
_TENSORFLOW_COMMANDS = ("fit", "sweep", "predict", "evaluate", "export", "explain", "demo")
_GLOBAL_FLAGS = {"--verbose": "show TensorFlow's start-up log lines",
                 "--debug": "show the Python traceback of an error (implies --verbose)"}


def _check_model_options(parser, args) -> None:
    """``fit --model NAME --option value``: an unknown model or builder option is a usage error."""
    import inspect

    from .models.registry import MODELS, resolve

    try:
        options = model_options(args.model_options)
    except SystemExit as error:
        parser.error(str(error).removeprefix("tem-keras: "))
    if args.model is None:  # the planned residual UNet
        if options:
            parser.error(f"model options {', '.join('--' + k.replace('_', '-') for k in options)} "
                         "need --model NAME")
        return
    try:
        builder, params = resolve(args.model, **options)
    except (ValueError, TypeError) as error:
        parser.error(f"argument --model: {error}")
    signature = inspect.signature(MODELS[builder])
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        allowed = ", ".join("--" + n.replace("_", "-") for n in signature.parameters
                            if n not in ("name", "channels"))
        parser.error(f"unrecognized option(s) for model {args.model!r}: "
                     + ", ".join("--" + n.replace("_", "-") for n in unknown)
                     + f" (its builder {builder}() takes {allowed})")


def _ours(error: BaseException) -> bool:
    """Whether an exception was raised by tem_keras's own code (its last frame is ours)."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and "tem_keras" in last.tb_frame.f_code.co_filename


def main(argv=None) -> int:
    """Run ``tem-keras``; returns the exit status (0, 2 for bad input or usage, 1 otherwise)."""
    from ._env import import_tensorflow_quietly, quiet_console

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    verbose = debug or "--verbose" in argv
    argv = [a for a in argv if a not in _GLOBAL_FLAGS]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "fit":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.model_options = extra
    quiet_console(verbose)
    if args.command in ("predict", "evaluate", "explain", "demo", "fit"):
        _choose_cpu_kernels(args)
    if args.command in _TENSORFLOW_COMMANDS:
        import_tensorflow_quietly(verbose)
    if args.command == "fit":
        _check_model_options(parser, args)
    try:
        args.func(args)
    except (TEMInputError, FileExistsError, FileNotFoundError, ValueError, TypeError) as err:
        if debug:
            raise
        ours = isinstance(err, (TEMInputError, FileExistsError, FileNotFoundError)) or _ours(err)
        message = " ".join(str(err).split()) or type(err).__name__
        if not ours:
            message = f"{type(err).__name__}: {message} (run with --debug for the traceback)"
        print(f"tem-keras {args.command}: error: {message}", file=sys.stderr)
        return 2 if ours else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
