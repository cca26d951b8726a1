"""``tem-keras demo``: the whole job on generated micrographs, in :data:`DEMO_MINUTES` minutes
on two CPU cores.

1. make a synthetic bright-field data set with exact masks and particle sizes;
2. train with ``fit``'s defaults for :data:`DEMO_TIME_LIMIT_S` seconds;
3. segment the held-out test images, measure the particles in nm and compare with the truth;
4. export the model for colleagues (when the export module is available);
5. write a report folder: ``index.html`` with the numbers, overlays with scale bars, size
   distributions true against found, training curve and per-image scores; particle tables
   (found and true), masks, ``summary.json``, model card.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

from ..io.outputs import OutputFolder, legacy_folder
from ..validation import check_bool, check_int
from .demo_report import plural


#: how long the demo takes on two quiet CPU cores, in minutes: the one time it states (its
#: ``--help``, its console line and the README repeat it)
DEMO_MINUTES = 3

#: what the steps other than training take on two quiet CPU cores, in seconds: TensorFlow's
#: start, the data set, segmenting and measuring the test images, the export and the report.
#: Measured as CPU time (2-core EPYC, load 9-11): 42 s, of which the export 31 s (ONNX 17 s,
#: SavedModel 8 s); fit's own planning and test scoring count in its time limit
OTHER_STEPS_S = 50

#: ``fit``'s time limit in the demo (seconds): the rest of :data:`DEMO_MINUTES`
DEMO_TIME_LIMIT_S = DEMO_MINUTES * 60 - OTHER_STEPS_S

#: the demo's length, as ``--help`` and the console say it
DEMO_TIME_TEXT = (f"training {DEMO_TIME_LIMIT_S} s, about {DEMO_MINUTES} minutes in all on two "
                  "CPU cores")


#: ``fit``'s warning about few validation images, which the demo's small data set gives on purpose
#: (a tour, not a tuned model): not shown by the demo
SMALL_VALIDATION_WARNING = r"only \d+ validation image"

#: what the demo writes into its folder (its manifest lists them)
DEMO_ENTRIES = ("data", "run", "export", "report")


_LEGACY_DEMO = legacy_folder("report", DEMO_ENTRIES)


def check_demo(out_dir="tem_keras_demo", *, n_images: int = 24, size: int = 256, epochs: int | None = None,
               time_limit=None, mode: str = "bright-field", seed: int = 0, overwrite: bool = False) -> None:
    """Every argument of :func:`run_demo` and its output folder, checked touching nothing (and
    without TensorFlow: ``tem-keras demo`` answers at once).

    Raises
    ------
    ValueError, TypeError
        A bad argument.
    OutputExistsError
        ``out_dir`` holds an earlier demo and not ``overwrite``, or files the demo did not write.
    """
    from ..training.config import TrainingConfig

    check_int("n_images", n_images, 3)  # one image each for training, validation and test
    check_int("size", size, 32, 4096)
    check_bool("overwrite", overwrite)
    TrainingConfig(epochs=epochs, time_limit=time_limit, seed=seed)
    OutputFolder(Path(out_dir), "demo").check_prepare(overwrite=overwrite, legacy=_LEGACY_DEMO)
    from ..data.synthetic.params import canonical_mode, synthesis_params  # imports SciPy: after the folder

    synthesis_params(None, {}, caller="run_demo").resolve(size, canonical_mode(mode))


def _training_length(epochs, time_limit) -> str:
    """How long the demo trains, as its console line says it."""
    if epochs is not None:
        return plural(epochs, "epoch")
    if time_limit is not None:
        from ..training.config import parse_duration

        return f"training {parse_duration(time_limit):g} s"
    return DEMO_TIME_TEXT


def _segment_test_images(run, data_dir, report):
    """Segment and measure the run's test images: the found and true particle tables (the same
    columns), the per-image table and ``{overlay file: caption}``; masks and overlays are
    written into ``report``."""
    import pandas as pd

    from ..analysis.metrics import segmentation_scores
    from ..analysis.particles import add_source_columns, measure_particles
    from ..data.datasets import discover, read_mask
    from ..inference import predict
    from ..io import read_image, write_mask
    from .demo_report import plot_overlay

    (report / "masks").mkdir(parents=True)
    samples = {s.stem: s for s in discover(data_dir)}
    found, true, rows, overlays = [], [], [], {}
    for stem in run.split["test"]:
        micrograph = read_image(samples[stem].image)
        truth = read_mask(samples[stem].mask)
        result = predict(run, micrograph, return_probabilities=True)  # the run's threshold
        probabilities, predicted = result.probabilities[..., 1], result.mask.astype(bool)
        write_mask(report / "masks" / f"{stem}.png", predicted)
        score = segmentation_scores(predicted, truth, probabilities=probabilities)
        # the columns of predict's particles.csv, for the found and the true particles alike
        tables = [add_source_columns(measure_particles(m, micrograph.pixel_size_nm, image=micrograph.data), stem)
                  for m in (probabilities, truth)]
        found.append(tables[0])
        true.append(tables[1])
        rows.append({"image": stem, **{k: score[k] for k in ("dice", "soft_dice", "iou", "precision", "recall")},
                     "particles_found": len(tables[0]), "particles_true": len(tables[1]),
                     "mean_diameter_nm_found": float(tables[0]["equivalent_diameter_nm"].mean()),
                     "mean_diameter_nm_true": float(tables[1]["equivalent_diameter_nm"].mean())})
        name = f"overlay_{stem}.png"
        plot_overlay(micrograph.data, truth, predicted, micrograph.pixel_size_nm, report / name,
                     f"{stem}: dice {score['dice']:.3f}")
        overlays[name] = (f"{stem}: dice {score['dice']:.3f}, {len(tables[0])} particles found, "
                          f"{len(tables[1])} true")
    return (pd.concat(found, ignore_index=True), pd.concat(true, ignore_index=True),
            pd.DataFrame(rows), overlays)


def _about(run, n_images: int, size: int, mode: str) -> str:
    """What was trained on what, in one paragraph of the report."""
    px = run.config.get("pixel_size_nm")
    training = run.config.get("training", {})
    model = run.config.get("model", {})
    split = {k: len(v) for k, v in run.split.items()}
    return (f"{n_images} synthetic {mode} micrographs of {size} × {size} px"
            + (f" at {px:g} nm per pixel" if px else "")
            + f", with the exact particle masks of the generator: {split.get('train', 0)} for "
            f"training, {split.get('val', 0)} for validation and {plural(split.get('test', 0), 'test image')} "
            f"that training never saw (all scores below are on those). Model: "
            f"{model.get('name', 'unknown')} trained with fit's defaults for "
            f"{plural(training.get('epochs_run', 0), 'epoch')} ({training.get('time', {}).get('wall_s', '?')} s). "
            "Outlines: red found by the model, green true; the scale bars are in nm.")


def run_demo(out_dir="tem_keras_demo", *, n_images: int = 24, size: int = 256, epochs: int | None = None,
             time_limit=None, mode: str = "bright-field", seed: int = 0, overwrite: bool = False,
             verbose: int = 1, fit_options: dict | None = None, export_formats=None) -> Path:
    """Generate data, train, predict, measure, export and report; return the report folder.

    Parameters
    ----------
    out_dir : str or Path
        Everything goes here: ``data/``, ``run/``, ``export/``, ``report/`` (open
        ``report/index.html``).
    n_images, size, mode, seed
        The synthetic data set (see :func:`tem_keras.data.synthetic.make_dataset`).
    epochs, time_limit
        Training length (``fit``'s defaults plan the model and patches from the data): ``epochs``
        epochs, or as many as fit in ``time_limit``; neither: :data:`DEMO_TIME_LIMIT_S` seconds.
    overwrite : bool
        Replace an earlier demo in ``out_dir``: only what a demo wrote there is removed (see
        :mod:`tem_keras.io.outputs`); a folder holding other files is refused. Every argument is
        checked first.
    fit_options : dict, optional
        More arguments of :func:`~tem_keras.training.fit` (``{"steps_per_epoch": 2}`` for a
        check in seconds).
    export_formats : sequence of str, optional
        The formats of :func:`~tem_keras.export.export` (default: all of them).
    """
    from ..analysis.metrics import mean_and_std
    from ..analysis.particles import size_distribution
    from ..data.synthetic import make_dataset
    from ..training import fit
    from .demo_report import plot_size_comparison, write_index

    out = Path(out_dir)
    check_demo(out, n_images=n_images, size=size, epochs=epochs, time_limit=time_limit, mode=mode,
               seed=seed, overwrite=overwrite)  # before any removal
    OutputFolder(out, "demo").prepare(overwrite=overwrite, legacy=_LEGACY_DEMO, entries=DEMO_ENTRIES)
    start = time.perf_counter()
    data_dir = make_dataset(out / "data", n_images=n_images, size=size, mode=mode, seed=seed)
    if verbose:
        print(f"1/4 made {n_images} synthetic {mode} micrographs ({size}² px) with masks in {data_dir}")
        print(f"2/4 training with fit's defaults (a residual UNet sized to the particles, from the "
              f"TEM pre-trained weights): {_training_length(epochs, time_limit)}")
    if epochs is None and time_limit is None:
        time_limit = DEMO_TIME_LIMIT_S
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SMALL_VALIDATION_WARNING, UserWarning)
        run = fit(data_dir, epochs=epochs, time_limit=time_limit, seed=seed, run_dir=out / "run",
                  verbose=verbose, **(fit_options or {}))

    if verbose:
        print("3/4 segmenting the test images and measuring particles")
    report = out / "report"
    particles, truth_particles, scores, overlays = _segment_test_images(run, data_dir, report)
    particles.to_csv(report / "particles.csv", index=False)
    truth_particles.to_csv(report / "particles_true.csv", index=False)
    scores.to_csv(report / "scores_per_image.csv", index=False)
    plot_size_comparison(truth_particles["equivalent_diameter_nm"], particles["equivalent_diameter_nm"],
                         report / "size_distribution.png")
    for name in ("history.png", "examples.png"):
        if (run.path / "plots" / name).is_file():
            shutil.copy(run.path / "plots" / name, report / f"training_{name}")

    exported = None
    try:
        from ..export import export
    except ImportError:
        export = None
    if export is not None:
        if verbose:
            print("4/4 exporting the model for colleagues")
        exported = export(run, out / "export", **({} if export_formats is None else {"formats": export_formats}))
        card = Path(exported) / "README.md"
        if card.is_file():
            shutil.copy(card, report / "model_card.md")

    found, true = size_distribution(particles), size_distribution(truth_particles)
    dice = mean_and_std(scores.to_dict("records"), ["dice"])["dice"]  # as evaluate: std over images
    summary = {
        "test_images": len(scores),
        "dice_mean": dice["mean"],
        "dice_std": dice["std"],
        "particles_found": int(found["count"]),
        "particles_true": int(true["count"]),
        "mean_diameter_nm_found": float(found["mean"]),
        "mean_diameter_nm_true": float(true["mean"]),
        "run_dir": str(run.path),
        "export_dir": None if exported is None else str(exported),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=2))
    index = write_index(report, summary, scores, _about(run, n_images, size, mode), overlays)
    if verbose:
        print(f"\ntest dice {summary['dice_mean']:.3f} ± {summary['dice_std']:.3f} per image over "
              f"{plural(summary['test_images'], 'image')}; {summary['particles_found']} particles found "
              f"({summary['particles_true']} true), mean diameter {summary['mean_diameter_nm_found']:.2f} nm "
              f"(true {summary['mean_diameter_nm_true']:.2f} nm); {summary['seconds']:.0f} s in all")
        print(f"report: {index.resolve()}")
        print(f"run folder: {run.path.resolve()}" + (f"; export: {Path(exported).resolve()}" if exported else ""))
    return report
