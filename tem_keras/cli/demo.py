"""``tem-keras demo``: the whole job on generated micrographs, in a couple of minutes on a CPU.

1. make a synthetic bright-field data set with exact masks and particle sizes;
2. train a small UNet on it (``fit``), with progress bars;
3. segment the held-out test images, measure the particles in nm and compare with the truth;
4. export the model for colleagues (when the export module is available);
5. write a report folder: overlays, particle table, size distributions, metrics, model card.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from ..io.outputs import OutputFolder, legacy_folder
from ..validation import check_bool, check_int


def _overlay(image, truth, predicted, path, title) -> None:
    from skimage.segmentation import find_boundaries

    from ..io.figures import new_figure, save_figure

    fig, ax = new_figure(figsize=(5, 5))
    ax.imshow(image, cmap="gray")
    rgba = np.zeros((*image.shape, 4))
    rgba[find_boundaries(predicted, mode="inner")] = (1.0, 0.2, 0.2, 1.0)
    rgba[find_boundaries(truth, mode="inner") & ~find_boundaries(predicted, mode="inner")] = (0.2, 0.9, 0.2, 0.8)
    ax.imshow(rgba)
    ax.set_title(title + "\nred: prediction, green: truth", fontsize=9)
    ax.axis("off")
    save_figure(fig, path)


#: demo training length when neither epochs nor a time limit is given (from the TEM pre-trained
#: weights: under a minute on two CPU cores, validation dice 0.96 from the fourth epoch on; a
#: fixed length keeps the result the same on a busy machine)
DEMO_EPOCHS = 8


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


def run_demo(out_dir="tem_keras_demo", *, n_images: int = 24, size: int = 256, epochs: int | None = None,
             time_limit=None, mode: str = "bright-field", seed: int = 0, overwrite: bool = False,
             verbose: int = 1) -> Path:
    """Generate data, train, predict, measure, export and report; return the report folder.

    Parameters
    ----------
    out_dir : str or Path
        Everything goes here: ``data/``, ``run/``, ``export/``, ``report/``.
    n_images, size, mode, seed
        The synthetic data set (see :func:`tem_keras.data.synthetic.make_dataset`).
    epochs, time_limit
        Training length (``fit``'s defaults plan the model and patches from the data): ``epochs``
        epochs, or as many as fit in ``time_limit``; neither: :data:`DEMO_EPOCHS` epochs.
    overwrite : bool
        Replace an earlier demo in ``out_dir``: only what a demo wrote there is removed (see
        :mod:`tem_keras.io.outputs`); a folder holding other files is refused. Every argument is
        checked first.
    """
    import pandas as pd

    from ..data.datasets import discover, read_mask
    from ..data.synthetic import make_dataset
    from ..inference import predict
    from ..io import read_image, write_mask
    from ..analysis.metrics import segmentation_scores
    from ..analysis.particles import add_source_columns, measure_particles, plot_size_distribution, size_distribution
    from ..io.figures import new_figure, save_figure
    from ..training import fit

    out = Path(out_dir)
    check_demo(out, n_images=n_images, size=size, epochs=epochs, time_limit=time_limit, mode=mode,
               seed=seed, overwrite=overwrite)  # before any removal
    OutputFolder(out, "demo").prepare(overwrite=overwrite, legacy=_LEGACY_DEMO, entries=DEMO_ENTRIES)
    start = time.perf_counter()
    data_dir = make_dataset(out / "data", n_images=n_images, size=size, mode=mode, seed=seed)
    if verbose:
        print(f"1/4 made {n_images} synthetic {mode} micrographs ({size}² px) with masks in {data_dir}")
        print("2/4 training with fit's defaults: a residual UNet sized to the particles, from the "
              "TEM pre-trained weights (about a minute on a CPU)")
    if epochs is None and time_limit is None:
        epochs = DEMO_EPOCHS
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SMALL_VALIDATION_WARNING, UserWarning)
        run = fit(data_dir, epochs=epochs, time_limit=time_limit, seed=seed, run_dir=out / "run",
                  verbose=verbose)

    if verbose:
        print("3/4 segmenting the test images and measuring particles")
    report = out / "report"
    (report / "masks").mkdir(parents=True)
    samples = {s.stem: s for s in discover(data_dir)}
    tables, scores, true_tables = [], [], []
    for stem in run.split["test"]:
        micrograph = read_image(samples[stem].image)
        truth = read_mask(samples[stem].mask)
        result = predict(run, micrograph, return_probabilities=True)  # the run's threshold
        probabilities, predicted = result.probabilities[..., 1], result.mask.astype(bool)
        write_mask(report / "masks" / f"{stem}.png", predicted)
        score = segmentation_scores(predicted, truth, probabilities=probabilities)
        scores.append({"image": stem, **{k: score[k] for k in ("dice", "soft_dice", "iou", "precision", "recall")}})
        _overlay(micrograph.data, truth, predicted, report / f"overlay_{stem}.png",
                 f"{stem}: dice {score['dice']:.3f}")
        table = measure_particles(probabilities, micrograph.pixel_size_nm, image=micrograph.data)
        tables.append(add_source_columns(table, stem))  # the columns of predict's particles.csv
        true_tables.append(add_source_columns(measure_particles(truth, micrograph.pixel_size_nm), stem))
    particles = pd.concat(tables, ignore_index=True)
    truth_particles = pd.concat(true_tables, ignore_index=True)
    particles.to_csv(report / "particles.csv", index=False)
    pd.DataFrame(scores).to_csv(report / "scores_per_image.csv", index=False)
    fig, axes = new_figure(1, 2, figsize=(10, 3.8), sharex=True)
    plot_size_distribution(truth_particles, ax=axes[0])
    axes[0].set_title("true particles (exact masks)")
    plot_size_distribution(particles, ax=axes[1])
    axes[1].set_title("particles found by the model")
    save_figure(fig, report / "size_distribution.png")
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
        exported = export(run, out / "export")
        card = Path(exported) / "README.md"
        if card.is_file():
            shutil.copy(card, report / "model_card.md")

    found, true = size_distribution(particles), size_distribution(truth_particles)
    summary = {
        "test_images": len(scores),
        "dice_mean": float(np.mean([s["dice"] for s in scores])),
        "particles_found": int(found["count"]),
        "particles_true": int(true["count"]),
        "mean_diameter_nm_found": float(found["mean"]),
        "mean_diameter_nm_true": float(true["mean"]),
        "run_dir": str(run.path),
        "export_dir": None if exported is None else str(exported),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=2))
    if verbose:
        print(f"\ntest dice {summary['dice_mean']:.3f} on {summary['test_images']} images; "
              f"{summary['particles_found']} particles found ({summary['particles_true']} true), "
              f"mean diameter {summary['mean_diameter_nm_found']:.2f} nm "
              f"(true {summary['mean_diameter_nm_true']:.2f} nm); {summary['seconds']:.0f} s in all")
        print(f"report: {report.resolve()}  (overlays, particles.csv, size_distribution.png, "
              f"summary.json{', model_card.md' if exported else ''})")
        print(f"run folder: {run.path.resolve()}" + (f"; export: {Path(exported).resolve()}" if exported else ""))
    return report
