"""``tem-keras`` prediction commands: predict and evaluate, with their shared options."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..export import predict_script
from ..errors import TEMInputError
from ..io.outputs import OutputFolder, claim_output, refuse_inputs, release_output
from .console import as_input_errors, note_pixel_size


def parse_shard(text: str) -> str:
    """``i/n`` with 0 <= i < n (argparse type)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n (0-based), got {text!r}")
    return f"{i}/{n}"


def parse_threshold(text: str):
    """A probability threshold in [0, 1] or ``otsu`` (argparse type)."""
    if text.lower() == "otsu":
        return "otsu"
    return predict_script.parse_threshold(text, " or 'otsu'")


def parse_overlap(text: str):
    """A tile overlap in px or ``auto`` (argparse type)."""
    return "auto" if text == "auto" else int(text)


def add_prediction_options(p) -> None:
    """Add the options ``predict`` and ``evaluate`` share (threshold, tiles, precision)."""
    p.add_argument("--threshold", type=parse_threshold, default=None,
                   help="particle probability threshold in [0, 1] or 'otsu' (default: the run's "
                   "tuned threshold, else 0.5)")
    p.add_argument("--tile-size", type=int, default=None,
                   help="tile side in px (default: whole images up to 2048², 1024 px tiles above)")
    p.add_argument("--overlap", type=parse_overlap, default="auto", help="tile overlap in px or 'auto'")
    p.add_argument("--batch-size", type=int, default=4, help="tiles or frames per model call")
    p.add_argument("--mixed-precision", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: mean of the 8 rotations/mirror images (8× the time)")


def prediction_options(args):
    """The :class:`~tem_keras.inference.PredictOptions` of a command's arguments (those of
    :func:`add_prediction_options`, and ``--pixel-size-nm`` and ``--engine`` where it has them)."""
    from ..inference.options import PredictOptions

    names = ("threshold", "tile_size", "overlap", "batch_size", "mixed_precision", "tta",
             "pixel_size_nm", "engine")
    return PredictOptions(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def onnx_predicts(args) -> bool:
    """Whether ``tem-keras predict`` runs the export's ``model.onnx`` (then TensorFlow is not
    started; :func:`tem_keras.inference.onnx_engine.onnx_folder` decides, before any import)."""
    from ..inference import input_sources, select_frames
    from ..inference.onnx_engine import onnx_folder

    options = dict(tile_size=args.tile_size, tta=args.tta, mixed_precision=args.mixed_precision)
    try:
        if onnx_folder(args.model, args.engine, **options) is None:
            return False
        sources, _ = input_sources([str(p) for p in args.inputs])  # headers only
        n_frames = sum(1 for _ in select_frames(sources, args.shard))
        return onnx_folder(args.model, args.engine, n_frames=n_frames, **options) is not None
    except (TEMInputError, ValueError, TypeError, OSError):
        return False  # run_predict reports it


def _to_store(args) -> bool:
    """Whether ``tem-keras predict`` writes one Zarr store (:func:`run_predict_store`)."""
    return bool(args.scheduler) or Path(args.out).suffix.lower() == ".zarr"


def _predict_outputs(args) -> tuple[OutputFolder, Path | None]:
    """The output folder of ``tem-keras predict`` and its ``particles.csv`` (None without
    ``--particles``), checked touching nothing."""
    out = Path(args.out)
    if args.track:
        raise ValueError("--track links particles across the frames of a .zarr store: give -o OUT.zarr")
    folder = OutputFolder(out, inputs=[args.model, *args.inputs])
    refuse_inputs(out, folder.inputs, within=False)  # masks among the images they come from
    csv_path = None
    if args.particles:
        suffix = "" if args.shard is None else "_shard{}of{}".format(*args.shard.split("/"))
        csv_path = folder.check(f"particles{suffix}.csv", overwrite=args.overwrite)
    return folder, csv_path


def check_predict(args) -> None:
    """``tem-keras predict``'s model, inputs (file headers) and output folder, checked before
    TensorFlow starts (a Zarr store checks its own)."""
    from ..artifacts import model_kind
    from ..inference import input_sources

    model_kind(args.model)
    input_sources([str(p) for p in args.inputs])
    if not _to_store(args):
        _predict_outputs(args)


@as_input_errors
def run_predict(args) -> None:
    """``tem-keras predict``: masks (and optionally probabilities, overlays, particles.csv)."""
    from ..inference import particle_rows, predict_stack, save_prediction

    if _to_store(args):
        return run_predict_store(args)
    out = Path(args.out)
    folder, csv_path = _predict_outputs(args)
    n_images = n_particles = 0
    handle = lock = None
    noted = False
    try:
        if csv_path is not None:
            lock = claim_output(csv_path, overwrite=args.overwrite)
            folder.record(csv_path.name)
        for result in predict_stack(
                args.model, [str(p) for p in args.inputs], options=prediction_options(args),
                frames=args.shard, return_probabilities=args.probabilities,
                return_image=args.overlay or args.particles, progress=not args.quiet):
            save_prediction(result, folder, mask_format=args.mask_format or "png",
                            probabilities=args.probabilities,
                            overlay_png=args.overlay, overwrite=args.overwrite)
            n_images += 1
            if csv_path is not None:
                if result.pixel_size_nm is None and not noted:
                    noted = note_pixel_size(result.name)
                table = particle_rows(result, min_area=args.min_area)
                header = handle is None
                if header:
                    handle = open(lock, "w", newline="")  # rows go to the claimed file
                table.to_csv(handle, header=header, index=False)
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


def run_predict_store(args) -> None:
    """``tem-keras predict ... -o OUT.zarr [--scheduler local:N | tcp://HOST:PORT]``: all masks in
    one resumable Zarr store, on a Dask cluster or in this process
    (:func:`tem_keras.distributed.predict_to_store`)."""
    import sys

    try:
        from ..distributed.cluster import connect, predict_to_store
        from ..distributed.extra import require

        require("zarr", "pyarrow", *(("distributed",) if args.scheduler else ()))
    except ImportError as error:  # the cluster extra is missing: one line, naming it
        raise TEMInputError(str(error)) from None
    if Path(args.out).suffix.lower() != ".zarr":
        raise ValueError(f"--scheduler writes one Zarr store: give -o OUT.zarr (got {args.out})")
    for flag, given in (("--overlay", args.overlay), ("--shard", args.shard),
                        ("--mask-format", args.mask_format)):
        if given:
            raise ValueError(f"{flag} is for folders of mask files; a .zarr store holds all masks "
                             "(and the cluster splits the frames itself)")
    client = connect(args.scheduler) if args.scheduler else None
    try:
        report = predict_to_store(
            args.model, [str(p) for p in args.inputs], args.out, client=client,
            chunk_frames=args.chunk_frames, particles=args.particles, min_area=args.min_area,
            track=args.track, overwrite=args.overwrite, progress=not args.quiet,
            options=prediction_options(args).replace(engine="auto"),
            probabilities=args.probabilities)
    except KeyboardInterrupt:
        from ..distributed.store import PredictionStore

        store = PredictionStore(args.out)
        done = len(store.done_chunks()) if store.read_info() else 0
        total = store.n_chunks if store.read_info() else "?"
        print(f"tem-keras predict: interrupted; {done} of {total} chunks are in {args.out}: the same "
              "command finishes the rest", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        where = "in this process"
        if client is not None:
            where = f"on {len(client.scheduler_info().get('workers', {}))} Dask worker(s)"
            cluster = client.cluster if args.scheduler.startswith("local:") else None
            client.close()
            if cluster is not None:
                import logging

                # workers holding TensorFlow take a few seconds to exit; the nanny's note is noise
                logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
                cluster.close()
    info = report.store.info
    particles = (f"; {len(report.particles())} particles in {report.store.path / 'particles'}"
                 if args.particles or args.track else "")
    print(f"wrote {info['n_frames']} frame(s) to {report.store.path} in {report.seconds:.1f} s {where} "
          f"({len(report.computed)} chunk(s) computed, {len(report.skipped)} already done){particles}")


#: what ``tem-keras evaluate -o OUT`` writes
_EVALUATE_FILES = ("per_image.csv", "overall.json", "threshold_curve.png", "threshold_curve.csv")


def _check_threshold_source(model_dir: Path, dataset_dir: Path, split) -> None:
    """A threshold is saved into a run only from images that are not its test images.

    Raises
    ------
    TEMInputError
        Not a run folder, ``--split test``, or every image of the run's own data set (its test
        images among them).
    """
    import json

    if not (model_dir / "config.json").is_file():
        raise TEMInputError("--save-threshold needs a run folder", model_dir)
    if split == "test":
        raise TEMInputError("--save-threshold with --split test would tune the threshold on the test "
                            "images, whose scores would then be optimistic; use --split val", model_dir)
    if split is None:
        try:
            config = json.loads((model_dir / "config.json").read_text())
            run_data = Path(config["data"]["dataset_dir"]).resolve()
            test = json.loads((model_dir / "split.json").read_text()).get("test", [])
        except (OSError, ValueError, KeyError, TypeError):
            return  # not this run's data set, or a run without a split: nothing to protect
        if test and run_data == dataset_dir.resolve():
            raise TEMInputError(f"--save-threshold on every image of the run's own data set would tune the "
                                f"threshold on its {len(test)} test image(s); use --split val", model_dir)


def _evaluate_outputs(args) -> OutputFolder | None:
    """The output folder of ``tem-keras evaluate`` (None without ``-o``) with its four files,
    and ``--save-threshold``'s source, checked touching nothing."""
    if args.save_threshold:
        _check_threshold_source(Path(args.model), Path(args.dataset_dir), args.split)
    if args.out is None:
        return None
    folder = OutputFolder(args.out, inputs=[args.model, args.dataset_dir])
    for name in _EVALUATE_FILES:
        folder.check(name, overwrite=args.overwrite)
    return folder


def check_evaluate(args) -> None:
    """``tem-keras evaluate``'s model, data set folder and outputs, checked before TensorFlow
    starts."""
    from ..artifacts import model_kind
    from ..data.datasets import discover

    model_kind(args.model)
    discover(args.dataset_dir)
    _evaluate_outputs(args)


@as_input_errors
def run_evaluate(args) -> None:
    """``tem-keras evaluate``: scores, best threshold and curve on a labelled folder."""
    import json

    from ..inference import evaluate

    plot = None
    folder = _evaluate_outputs(args)  # every output checked before the model runs
    if folder is not None:
        plot = folder.claim("threshold_curve.png", overwrite=args.overwrite)
    per_image, overall = evaluate(args.model, args.dataset_dir, options=prediction_options(args),
                                  split=args.split, metric=args.metric, plot=plot,
                                  progress=not args.quiet)
    columns = [c for c in ("image", "threshold", "dice", "iou", "precision", "recall", "f1")
               if c in per_image]
    dice, used = overall["per_image"]["dice"], overall["threshold"]
    print(f"dice {dice['mean']:.3f} ± {dice['std']:.3f} per image over {overall['n_images']} image(s), "
          + (f"threshold {used:.2f}" if isinstance(used, float) else "thresholds per image"))
    print(per_image[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    s = overall["scores"]
    print(f"pixels of all images pooled: dice {s['dice']:.4f}  iou {s['iou']:.4f}  "
          f"precision {s['precision']:.4f}  recall {s['recall']:.4f}")
    print(f"best threshold for {overall['metric']}: {overall['best_threshold']:.2f} "
          f"({overall['metric']} {overall['at_best'][{'dice': 'f1'}.get(overall['metric'], overall['metric'])]:.4f})")
    if folder is not None:
        claim = {name: folder.claim(name, overwrite=args.overwrite) for name in _EVALUATE_FILES
                 if name != "threshold_curve.png"}  # written by evaluate
        per_image.to_csv(claim["per_image.csv"], index=False)
        summary = {k: v for k, v in overall.items() if k != "curve"}
        claim["overall.json"].write_text(json.dumps(summary, indent=2, default=float))
        overall["curve"].to_csv(claim["threshold_curve.csv"], index=False)
        print(f"tables and plot in {args.out}")
    if args.save_threshold:
        model_dir = Path(args.model)
        from ..artifacts import write_threshold

        saved = write_threshold(model_dir, overall["best_threshold"], metric=overall["metric"],
                                dataset_dir=str(args.dataset_dir), split=args.split)
        print(f"threshold {overall['best_threshold']:.2f} saved in {saved}")
