"""``tem-keras`` training commands (fit, sweep, demo), the fit/sweep options made from the
configuration table, and the model builder's free ``--options``."""

from __future__ import annotations


def command_line_value(text: str):
    """A command-line value: int, float, bool, comma-separated tuple, JSON, or the string itself."""
    import json

    if "," in text:
        return tuple(command_line_value(t) for t in text.split(",") if t)
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
                options[key], key = command_line_value(text), None
            else:
                options[key] = True
        elif key is not None:
            options[key] = command_line_value(token)
            key = None
        else:
            raise SystemExit(f"tem-keras: unexpected argument {token!r}")
    return options


def check_model_options(parser, args) -> None:
    """``fit --model NAME --option value``: an unknown model or builder option is a usage error."""
    import inspect

    from ..models.registry import MODELS, resolve

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


#: TrainingConfig fields offered as ``fit``/``sweep`` options: (type, choices, help); None = planned
_CONFIG_OPTIONS = {
    "recipe": (str, ("default", "paper"), "optimiser settings: measured defaults or the papers' (default: default)"),
    "time_limit": (str, None, "budget of the whole run, e.g. 10min, 90s, 1h (default when --epochs is not "
                              "given: 9 min on a CPU up to 50 training images, 3 s more per image beyond, "
                              "at most 30 min)"),
    "epochs": (int, None, "number of epochs (default: as many as fit in the time limit)"),
    "steps_per_epoch": (int, None, "optimiser steps per epoch (default: the budget cut into about 12 epochs; with --epochs, about two looks at every training pixel, 4-50)"),
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
    "mixed_precision": (str, ("auto", "float32", "bfloat16", "float16"), "default: auto (bfloat16 where it is "
                        "faster, float16 on older GPUs, else float32)"),
    "pretrained": (str, ("auto", "tem", "none"), "initial weights: tem = pre-trained on synthetic micrographs, "
                   "none = random (default: auto, tem where the model has them)"),
}


def add_training_options(p) -> None:
    """Add the ``fit``/``sweep`` options: one per configuration-table entry, then the rest."""
    for name, (kind, choices, text) in _CONFIG_OPTIONS.items():
        default = "default" if name == "recipe" else "auto" if name in ("mixed_precision", "pretrained") else None
        p.add_argument("--" + name.replace("_", "-"), type=kind, choices=choices, default=default, help=text)
    p.add_argument("--split", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--devices", type=int, default=None, help="number of GPUs (all by default)")
    p.add_argument("--pairing", choices=("stem", "sorted"), default="stem")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true")


def training_options(args) -> dict:
    """The ``fit``/``sweep`` keyword arguments of the parsed options."""
    options = {name: getattr(args, name) for name in _CONFIG_OPTIONS}
    options["pretrained"] = None if options["pretrained"] == "none" else options["pretrained"]
    return dict(options, split=tuple(args.split), augment=not args.no_augment, devices=args.devices,
                pairing=args.pairing, verbose=0 if args.quiet else 1)


def check_fit(args) -> None:
    """``tem-keras fit``'s data set and run folder, checked before TensorFlow starts (the model
    options need the builders: :func:`check_model_options`)."""
    from ..data.datasets import discover
    from ..io.outputs import OutputExistsError
    from ..training.rundir import check_run_dir, default_run_dir

    discover(args.dataset_dir, pairing=args.pairing,
             include_unlabelled=getattr(args, "labels", "masks") == "auto")
    run_dir = args.run_dir or default_run_dir(args.dataset_dir, args.model, args.seed,
                                              f"-{args.folds}fold" if args.folds else "")
    check_run_dir(run_dir, [args.dataset_dir])
    if (run_dir / "metrics.json").is_file() and not args.overwrite:
        raise OutputExistsError("holds a finished run; pass --overwrite to replace it, or choose "
                                "another --run-dir", run_dir)


def run_fit(args) -> None:
    """``tem-keras fit``: train one model; prints the run folder."""
    from ..training import fit

    run = fit(args.dataset_dir, args.model, seed=args.seed, run_dir=args.run_dir,
              resume=not args.no_resume, overwrite=args.overwrite, plan=args.plan, labels=args.labels,
              particles=args.particles, self_training=args.self_training, **training_options(args),
              **model_options(args.model_options))
    print(f"run folder: {run.path}")


def run_plan(args) -> None:
    """``tem-keras plan``: the fingerprint and plan of ``fit`` as an editable JSON file."""
    from ..training.config import TrainingConfig
    from ..training.planning import plan

    options = training_options(args)
    spec = {"name": args.model, **model_options(args.model_options)} if args.model else None
    config = TrainingConfig(model=spec, seed=args.seed, **{k: v for k, v in options.items()
                                                          if k not in ("devices", "pairing", "verbose")})
    plan(args.dataset_dir, args.out, config=config, overwrite=args.overwrite, verbose=options["verbose"])
    print(f"plan written to {args.out}; edit it, then: tem-keras fit {args.dataset_dir} --plan {args.out}")


def run_sweep(args) -> None:
    """``tem-keras sweep``: models × seeds, summary table and plot."""
    import json

    from ..training import sweep

    models = [json.loads(m) if m.lstrip().startswith("{") else m for m in args.models]
    summary = sweep(args.dataset_dir, models, seeds=args.seeds, out_dir=args.out_dir,
                    overwrite=args.overwrite, **training_options(args))
    print(summary.to_string(index=False))
    print(f"tables and plot in {args.out_dir}")


def _demo_arguments(args) -> dict:
    return dict(n_images=args.n_images, size=args.size, epochs=args.epochs, time_limit=args.time_limit,
                mode=args.mode, seed=args.seed, overwrite=args.overwrite)


def check_demo_command(args) -> None:
    """``tem-keras demo``'s arguments and folder, checked before TensorFlow starts."""
    from .demo import check_demo

    check_demo(args.out_dir, **_demo_arguments(args))


def run_demo_command(args) -> None:
    """``tem-keras demo``: the guided tour on generated micrographs."""
    from .demo import run_demo

    run_demo(args.out_dir, **_demo_arguments(args))
