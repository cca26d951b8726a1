"""The ``tem-keras`` command.

Each sub-command is a thin wrapper over the Python API; ``tem-keras COMMAND --help`` lists its
options. Bad input ends with a one-line error naming the file (exit status 2), not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _env  # noqa: F401
from .errors import TEMInputError


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
    return dict(epochs=args.epochs, batch_size=args.batch_size, patch_size=args.patch_size,
                learning_rate=args.learning_rate, loss=args.loss,
                split=tuple(args.split), augment=not args.no_augment, devices=args.devices,
                mixed_precision=args.mixed_precision, patience=args.patience,
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


def _add_training_options(p) -> None:
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="per replica")
    p.add_argument("--patch-size", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--loss", default="cross_entropy",
                   choices=("cross_entropy", "weighted_cross_entropy", "dice", "cross_entropy_dice", "focal"))
    p.add_argument("--split", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--devices", type=int, default=None, help="number of GPUs (all by default)")
    p.add_argument("--mixed-precision", default="auto",
                   choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--pairing", choices=("stem", "sorted"), default="stem")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tem-keras", description="Segmentation of TEM images of nanoparticles.")
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
    p.add_argument("--model", default="unet", help="registry name (see `tem-keras models`)")
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

    p = sub.add_parser("models", help="table of the model zoo: parameters, receptive field, FLOPs")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.set_defaults(func=_models)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "fit":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.model_options = extra
    try:
        args.func(args)
    except (TEMInputError, FileExistsError, FileNotFoundError) as err:
        print(f"tem-keras {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
