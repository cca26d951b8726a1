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

    p = sub.add_parser("models", help="table of the model zoo: parameters, receptive field, FLOPs")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.set_defaults(func=_models)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (TEMInputError, FileExistsError, FileNotFoundError) as err:
        print(f"tem-keras {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
