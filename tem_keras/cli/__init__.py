"""The ``tem-keras`` command.

Each sub-command is a thin wrapper over the Python API; ``tem-keras COMMAND --help`` lists its
options. Bad input ends with a one-line error naming the file (exit status 2), not a traceback.

This module holds the parser and :func:`main`; the commands live by family in
:mod:`.data_commands` (synth, info, check, measure, label), :mod:`.training_commands` (fit, sweep,
demo, and the fit/sweep options generated from the configuration table),
:mod:`.prediction_commands` (predict, evaluate), :mod:`.watch_command` (watch: live
segmentation) and :mod:`.model_commands` (models, export, explain); :mod:`.console` reports
errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .. import _env  # noqa: F401
from ..errors import TEMInputError
from ..io.outputs import output_error
from .console import command_line_spelling, raised_by_tem_keras, warnings_as_notes
from .data_commands import run_check, run_info, run_label, run_measure, run_synth
from .model_commands import check_export_command, run_explain, run_export, run_models
from .prediction_commands import (add_prediction_options, check_evaluate, check_predict, onnx_predicts,
                                  parse_shard, run_evaluate, run_predict)
from .training_commands import (add_training_options, check_demo_command, check_fit,
                                check_model_options, model_options, run_demo_command, run_fit,
                                run_plan, run_sweep)
from .watch_command import add_watch_command

__all__ = ["build_parser", "main", "model_options"]


def _rounds(text: str):
    """``--self-training``: "auto" or a number of rounds >= 0."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of rounds >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``tem-keras`` argument parser with every sub-command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="tem-keras", description="Segmentation of TEM images of nanoparticles.",
        epilog="Anywhere on the line: --verbose shows TensorFlow's start-up log lines and its CPU "
        "kernel choice, --debug the Python traceback of an error.")
    parser.add_argument("--version", action="version", version=f"tem_keras {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    _add_training_commands(sub)
    _add_prediction_commands(sub)
    _add_mask_commands(sub)
    _add_model_commands(sub)
    return parser


def _add_data_commands(sub) -> None:
    """The sub-commands ``synth``, ``info``, ``check``: data sets and files."""
    p = sub.add_parser("synth", help="make a synthetic data set of micrographs with exact masks")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--mode", choices=("bright-field", "haadf", "hrtem"), default="bright-field")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    p.set_defaults(func=run_synth)

    p = sub.add_parser("info", help="describe micrograph files: size, frames, pixel size")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=run_info)

    p = sub.add_parser("check", help="find image/mask pairs in a dataset folder and validate them")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--pairing", choices=("stem", "sorted"), default="stem")
    p.set_defaults(func=run_check)


def _add_training_commands(sub) -> None:
    """The sub-commands ``fit``, ``plan``, ``sweep``."""
    p = sub.add_parser("fit", allow_abbrev=False, help="train a model on a dataset folder (extra --options go to the model)",
                       description="Train a model. Options not listed here are passed to the model "
                       "builder, e.g. --n-blocks 3 --pool-sizes 4,4,4 or --base-filters 16.")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--model", default=None, help="registry name (see `tem-keras models`); default: a "
                   "residual UNet sized to the particles in the masks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--no-resume", action="store_true", help="do not continue an unfinished run")
    p.add_argument("--plan", type=Path, default=None,
                   help="train from a plan file written by `tem-keras plan` (and edited)")
    p.add_argument("--labels", choices=("masks", "auto"), default="masks",
                   help="auto: images without a mask get pseudo-labels and train beside the hand-drawn "
                        "masks, which alone validate and test")
    p.add_argument("--particles", choices=("dark", "bright", "auto"), default="auto",
                   help="particle contrast for the pseudo-labels (default: auto, chosen per image)")
    p.add_argument("--self-training", type=_rounds, default=0, metavar="N",
                   help="with --labels auto: rounds of noisy-student self-training after training on the "
                        "pseudo-labels (default 0: none; auto: up to 2 as the budget allows)")
    add_training_options(p)
    p.set_defaults(func=run_fit, check=check_fit, model_options=[])

    p = sub.add_parser("plan", help="write the data fingerprint and the training plan to an editable JSON file",
                       description="What `tem-keras fit DIR` would do, without training: the data's "
                       "fingerprint, the plan and the split. Edit it and train with `tem-keras fit DIR --plan FILE`.")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("plan.json"), help="the JSON file (default plan.json)")
    p.add_argument("--model", default=None, help="registry name (default: a residual UNet sized to the particles)")
    p.add_argument("--seed", type=int, default=0)
    add_training_options(p)
    p.set_defaults(func=run_plan, model_options=[])

    p = sub.add_parser("sweep", help="train several models × seeds and tabulate dice against receptive field")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--models", nargs="+", required=True,
                   help='registry names or JSON configurations such as \'{"name": "residual_unet", "pool_sizes": [4, 4]}\'')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out-dir", type=Path, default=Path("sweeps"))
    add_training_options(p)
    p.set_defaults(func=run_sweep)


def _add_prediction_commands(sub) -> None:
    """The sub-commands ``predict``, ``evaluate``, ``watch``."""
    p = sub.add_parser("predict", help="segment images, stacks or videos with a trained model")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("inputs", nargs="+", type=Path, help="image files, stacks, folders or patterns")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output folder, or OUT.zarr: one Zarr store of all masks (resumable)")
    add_prediction_options(p)
    p.add_argument("--probabilities", action="store_true", help="also write float32 probability TIFFs "
                   "(in a .zarr store: the particle probability)")
    p.add_argument("--overlay", action="store_true", help="also write overlay PNGs")
    p.add_argument("--particles", action="store_true", help="measure particles into particles.csv")
    p.add_argument("--min-area", type=int, default=10, help="smallest particle in px (--particles)")
    p.add_argument("--pixel-size-nm", type=float, default=None, help="for files without calibration")
    p.add_argument("--shard", type=parse_shard, default=None,
                   help="predict only the i-th of n contiguous frame ranges (0-based), e.g. 0/4")
    p.add_argument("--mask-format", choices=("png", "tif"), default=None, help="png (default) or tif")
    p.add_argument("--scheduler", default=None, metavar="local:N | tcp://HOST:PORT",
                   help="predict into OUT.zarr on a Dask cluster: N worker processes here, or a "
                   "running scheduler (needs the cluster extra)")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="frames per task of a .zarr job (default: about 32 Mpx)")
    p.add_argument("--track", action="store_true",
                   help="link particles across frames into OUT.zarr/tracks (implies --particles)")
    p.add_argument("--engine", choices=("auto", "onnx", "tensorflow"), default="auto",
                   help="auto: an export's model.onnx through onnxruntime, without starting "
                   "TensorFlow, for at most 16 frames and no TensorFlow-only option (images to "
                   "tile go to TensorFlow); onnx: every image whole through model.onnx")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict, check=check_predict)

    p = sub.add_parser("evaluate", help="score a model on a labelled dataset folder")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("dataset_dir", type=Path)
    add_prediction_options(p)
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
    p.set_defaults(func=run_evaluate, check=check_evaluate)

    add_watch_command(sub)


def _add_mask_commands(sub) -> None:
    """The sub-commands ``measure``, ``label``: particles from masks, masks from images."""
    p = sub.add_parser("measure", help="measure particles in mask files (sizes in nm)")
    p.add_argument("masks", nargs="+", type=Path, help="mask files or folders")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.add_argument("-o", "--out", type=Path, default=Path("particles.csv"))
    p.add_argument("--min-area", type=int, default=10, help="smallest particle in px")
    p.add_argument("--no-split", action="store_true", help="do not split touching particles")
    p.add_argument("--keep-border", action="store_true", help="keep particles touching the border")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_measure)

    p = sub.add_parser("label", help="make automatic particle masks for images, written as a dataset folder")
    p.add_argument("images", nargs="+", type=Path, help="image files, stacks or folders")
    p.add_argument("-o", "--out", type=Path, required=True, help="dataset folder (images/ + masks/)")
    p.add_argument("--method", choices=("auto", "horwath", "otsu"), default="auto",
                   help="auto: polarity, particle size and smoothing read from each image (default); "
                        "horwath: Horwath et al. 2020's filters + reconstruction + Otsu; otsu: Gaussian + Otsu")
    p.add_argument("--particles", choices=("dark", "bright", "auto"), default="auto",
                   help="particle contrast (default: estimated per image)")
    p.add_argument("--scale", type=float, default=None, metavar="PX",
                   help="particle diameter in px (--method auto; default: estimated per image)")
    p.add_argument("--sigma", type=float, default=None,
                   help="Gaussian smoothing in px (--method horwath or otsu; default 2)")
    p.add_argument("--disk-radius", type=int, default=None,
                   help="grey opening radius in px (--method horwath; default 3)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_label)


def _add_model_commands(sub) -> None:
    """The sub-commands ``demo``, ``export``, ``explain``, ``models``."""
    from .demo import DEMO_TIME_LIMIT_S, DEMO_TIME_TEXT

    p = sub.add_parser("demo", help=f"train, predict, measure and export on generated micrographs "
                       f"({DEMO_TIME_TEXT})",
                       description=f"Make synthetic micrographs, train with fit's defaults, segment "
                       f"and measure the test images against the truth, export the model and write "
                       f"OUT_DIR/report/index.html ({DEMO_TIME_TEXT}).")
    p.add_argument("out_dir", type=Path, nargs="?", default=Path("tem_keras_demo"))
    p.add_argument("--n-images", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--time-limit", default=None,
                   help=f"training budget, e.g. 5min (default {DEMO_TIME_LIMIT_S} s)")
    p.add_argument("--epochs", type=int, default=None, help="train this many epochs instead of a time limit")
    p.add_argument("--mode", choices=("bright-field", "haadf", "hrtem"), default="bright-field")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.set_defaults(func=run_demo_command, check=check_demo_command)

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
    p.add_argument("--name", default=None, help="model name in the card (default: the architecture and "
                   "its training data, e.g. 'residual_unet for synthetic bright-field micrographs')")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=run_export, check=check_export_command)

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
    p.set_defaults(func=run_explain)

    p = sub.add_parser("models", help="table of the model zoo: parameters, receptive field, FLOPs")
    p.add_argument("--pixel-size-nm", type=float, default=None)
    p.set_defaults(func=run_models)


def choose_cpu_kernels(args, verbose: bool = False) -> None:
    """oneDNN or Eigen for a small network, while TensorFlow is not imported yet (the one moment
    the switch can act; see :func:`tem_keras.hardware.prefer_onednn`); said only when
    ``verbose``."""
    from ..hardware import network_weight_bytes, onednn_choice_open, prefer_onednn, saved_weight_bytes

    if not onednn_choice_open():
        return
    if args.command in ("predict", "evaluate", "explain", "watch"):
        size = saved_weight_bytes(args.model)
    elif args.command == "fit" and args.model is None:  # planned residual UNets: at most 32 MiB
        size = 0
    elif args.command == "fit":
        size = network_weight_bytes(args.model, model_options(args.model_options))
    else:  # the demo plans a residual UNet (at most 32 MiB of weights)
        size = 0
    if prefer_onednn(size) and verbose:
        print("tem-keras: TensorFlow's oneDNN kernels on for this small network "
              "(TF_ENABLE_ONEDNN_OPTS=0 keeps TensorFlow's choice)", file=sys.stderr)


#: sub-commands that start TensorFlow (after their ``check``, when they have one: the arguments,
#: inputs and outputs that can be checked without it)
_TENSORFLOW_COMMANDS = ("fit", "plan", "sweep", "predict", "evaluate", "watch", "export", "explain", "demo")
_GLOBAL_FLAGS = {"--verbose": "show TensorFlow's start-up log lines and its CPU kernel choice",
                 "--debug": "show the Python traceback of an error (implies --verbose)"}


def main(argv=None) -> int:
    """Run ``tem-keras``; returns the exit status (0, 2 for bad input or usage and for files that
    cannot be read or written, 130 when Ctrl-C stopped ``watch``, 1 otherwise). Warnings are shown
    as one ``note:`` line each, once (:func:`~tem_keras.cli.console.warnings_as_notes`)."""
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
    with warnings.catch_warnings():  # Python's own display again after the command
        warnings_as_notes()
        return _run(parser, args, verbose=verbose, debug=debug)


def _run(parser, args, *, verbose: bool, debug: bool) -> int:
    """Check the command's arguments, start TensorFlow when it needs it, run it, and report its
    error in one line."""
    from .._env import import_tensorflow_quietly, quiet_console

    quiet_console(verbose)
    try:
        if getattr(args, "check", None) is not None:
            args.check(args)  # before TensorFlow: a wrong path or a refused overwrite answers at once
        light = args.command == "predict" and onnx_predicts(args)  # model.onnx, no TensorFlow
        if args.command in ("predict", "evaluate", "watch", "explain", "demo", "fit") and not light:
            choose_cpu_kernels(args, verbose)
        if args.command in _TENSORFLOW_COMMANDS and not light and not getattr(args, "scheduler", None):
            import_tensorflow_quietly(verbose)  # a Dask client needs no TensorFlow: its workers do
        if args.command == "fit":
            check_model_options(parser, args)
        status = args.func(args)  # watch returns 130 after Ctrl-C; the others return None
    except BrokenPipeError:  # ``tem-keras models | head``: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (TEMInputError, OSError, ValueError, TypeError) as err:
        if debug:
            raise
        if isinstance(err, OSError) and err.errno is not None:  # a read-only folder, a full disk...
            err = output_error(err)
        ours = isinstance(err, (TEMInputError, OSError)) or raised_by_tem_keras(err)
        message = command_line_spelling(" ".join(str(err).split()) or type(err).__name__)
        if not ours:
            message = f"{type(err).__name__}: {message} (run with --debug for the traceback)"
        print(f"tem-keras {args.command}: error: {message}", file=sys.stderr)
        return 2 if ours else 1
    return status if isinstance(status, int) else 0
