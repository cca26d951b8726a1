"""``fit``: one call from a dataset folder to a trained model and a run folder.

Defaults follow the papers: Adam with learning rate 1e-4, cross-entropy on softmax outputs, early
stopping on the validation loss restoring the best weights (Horwath et al. 2020; Sytwu et al. 2022;
Groschner et al. 2021). Training runs on every visible GPU (``MirroredStrategy``), on several
machines when ``TF_CONFIG`` is set (``MultiWorkerMirroredStrategy``), and resumes after an
interruption from the last finished epoch (``BackupAndRestore``).

Run folder::

    config.json    everything needed to rebuild the model and the data pipeline
    split.json     the images of each split
    history.csv    one row per epoch
    best.keras     weights of the epoch with the lowest validation loss
    last.keras     weights of the last epoch
    metrics.json   test-split scores at threshold 0.5 and at the Otsu threshold
    plots/         loss and metric curves, example overlays
    logs/          TensorBoard
    backup/        training state while a run is unfinished (removed at the end)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _env  # noqa: F401
from .artifacts import Run
from .errors import TEMInputError

_RESUMABLE_KEYS = ("model", "data", "training")


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from . import __version__

    return {"tem_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def _resolve_model(model, model_kwargs: dict, num_classes: int):
    """``(keras.Model, rebuild config or None)`` from a registry name, a kwargs dict or a model."""
    import keras

    from .models.registry import build_model

    if isinstance(model, keras.Model):
        if model_kwargs:
            raise ValueError("model keyword arguments cannot be applied to an already built model")
        return model, None
    if isinstance(model, str):
        spec = {"name": model, **model_kwargs}
    elif isinstance(model, dict):
        spec = {**model, **model_kwargs}
    else:
        raise TypeError(f"model must be a registry name, a dict or a keras.Model, got {type(model)}")
    spec.setdefault("num_classes", num_classes)
    return build_model(dict(spec)), spec


def _default_run_dir(dataset_dir: Path, model, seed: int) -> Path:
    name = model if isinstance(model, str) else (model.get("name", "model") if isinstance(model, dict)
                                                 else getattr(model, "name", "model"))
    return Path("runs") / f"{Path(dataset_dir).resolve().name}-{name}-seed{seed}"


def _prepare_run_dir(run_dir: Path, config: dict, *, resume: bool, overwrite: bool) -> bool:
    """Create the run folder; return True when an unfinished run is resumed."""
    if run_dir.exists() and any(run_dir.iterdir()):
        unfinished = (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
        if overwrite:
            shutil.rmtree(run_dir)
        elif unfinished and resume:
            old = json.loads((run_dir / "config.json").read_text())
            changed = [k for k in _RESUMABLE_KEYS if old.get(k) != config.get(k)]
            if changed:
                raise FileExistsError(
                    f"{run_dir}: an unfinished run with different settings ({', '.join(changed)}) is "
                    "here; pass the same settings to resume it, or overwrite=True / another run_dir")
            return True
        else:
            state = "a finished run" if (run_dir / "metrics.json").exists() else "files"
            raise FileExistsError(f"{run_dir}: holds {state}; pass overwrite=True to replace it, "
                                  "or choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return False


class _TrainingTime:
    """Prints the total training time (Keras's progress bar already ends each epoch with a line of
    all metrics); built lazily to keep ``import tem_keras`` light."""

    @staticmethod
    def make():
        import keras

        class TrainingTime(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start = time.perf_counter()

            def on_train_end(self, logs=None):
                print(f"training took {time.perf_counter() - self.start:.1f} s", flush=True)

        return TrainingTime()


def fit(dataset_dir, model="unet", *, epochs: int = 100, batch_size: int = 8, patch_size: int = 512,
        learning_rate: float = 1e-4, loss="cross_entropy", split=(0.7, 0.1, 0.2), augment=True,
        seed: int = 0, run_dir=None, devices=None, mixed_precision="auto", resume: bool = True,
        overwrite: bool = False, patience: int = 10, stride=None, min_foreground_pixels: int = 1,
        preprocessing=None, pairing: str = "stem", images=None, masks=None, labels: str = "masks",
        particles: str = "dark", verbose: int = 1, **model_kwargs) -> Run:
    """Train a segmentation model on a dataset folder and write a run folder.

    Parameters
    ----------
    dataset_dir : str or Path
        Folder with images and masks (see :func:`tem_keras.data.discover`).
    model : str, dict or keras.Model
        A registry name (``tem-keras models`` lists them), a dict ``{"name": ..., **kwargs}``, or
        a built Keras model (its input must be ``(None, None, 1)``).
    epochs : int
        Maximum number of epochs; early stopping usually ends sooner.
    batch_size : int
        Per-replica batch size; the global batch is ``batch_size × replicas``.
    patch_size : int
        Side of the square training patches (512 in Sytwu et al. 2022).
    learning_rate : float
        Adam's learning rate (1e-4 in the papers).
    loss : str or keras.losses.Loss
        ``cross_entropy``, ``weighted_cross_entropy`` (inverse-frequency class weights from the
        training patches), ``dice``, ``cross_entropy_dice`` or ``focal``.
    split : tuple of 3 floats
        Train/val/test fractions of the images (a split in ``dataset.json`` wins).
    augment : bool or Augmentation
        Training augmentation (8 dihedral transforms, rotation, blur, noise, contrast, gradient).
    seed : int
        One seed for weights, split, shuffling and augmentation.
    run_dir : str or Path, optional
        Run folder; ``runs/<dataset>-<model>-seed<seed>`` by default.
    devices : None, int or list of str
        See :func:`tem_keras.distribute.choose_strategy`.
    mixed_precision : {"auto", "float32", "mixed_float16", "mixed_bfloat16"}
        Compute precision (outputs stay float32); ``"auto"``: see
        :func:`tem_keras.distribute.choose_precision`.
    resume : bool
        Continue an unfinished run found in ``run_dir`` (same settings required).
    overwrite : bool
        Replace an existing run folder.
    patience : int
        Early-stopping patience in epochs (validation loss).
    stride, min_foreground_pixels, preprocessing, pairing, images, masks
        Passed to :func:`tem_keras.data.pipeline.training_data` and :func:`~tem_keras.data.discover`.
    labels : {"masks", "auto"}
        ``"auto"``: images without a mask get Horwath et al.'s pseudo-labels
        (:func:`tem_keras.baselines.pseudo_labels`), written to ``run_dir/pseudo_labels/``.
    particles : {"dark", "bright", "auto"}
        Particle contrast for the pseudo-labels (dark in bright-field TEM, bright in HAADF).
    verbose : int
        0 quiet, 1 a progress bar per epoch ending in a line of all metrics, 2 one line per
        epoch; both print the total time.
    **model_kwargs
        Arguments of the model builder, e.g. ``base_filters=8``.

    Returns
    -------
    Run
    """
    import keras

    from .data.datasets import discover
    from .data.pipeline import training_data
    from .distribute import (PerformanceHint, choose_precision, choose_strategy, is_chief, is_multi_worker,
                             onednn_hint, prepare_for_multi_worker, strategy_name, tune_allocator)
    from .keras_metrics import default_metrics
    from .losses import get_loss, inverse_frequency_weights

    dataset_dir = Path(dataset_dir)
    tune_allocator()
    strategy = choose_strategy(devices)  # first: a multi-worker strategy must precede other TF ops
    keras.utils.set_random_seed(seed)
    replicas = strategy.num_replicas_in_sync
    if labels not in ("masks", "auto"):
        raise ValueError(f"labels must be 'masks' or 'auto', got {labels!r}")
    dataset = discover(dataset_dir, pairing=pairing, images=images, masks=masks,
                       include_unlabelled=labels == "auto")
    pseudo_dir = None
    if labels == "auto" and len(dataset.labelled) < len(dataset):
        from .data.labelling import pseudo_label_dataset

        pseudo_dir = Path(tempfile.mkdtemp(prefix="tem_keras_pseudo_labels_"))
        dataset = pseudo_label_dataset(dataset, pseudo_dir, particles=particles, progress=verbose > 0)
    data = training_data(dataset, patch_size=patch_size, batch_size=batch_size * replicas,
                         split=split, stride=stride, augment=augment, seed=seed,
                         preprocessing=preprocessing, min_foreground_pixels=min_foreground_pixels,
                         replicas=replicas, progress=verbose > 0)
    if "val" not in data.pipelines:
        raise TEMInputError("the split leaves no validation image; early stopping needs one "
                            "(give split=(train, val, test) with val > 0 or more images)", dataset_dir)
    num_classes = dataset.num_classes
    class_weights = None
    if isinstance(loss, str) and loss in ("weighted_cross_entropy", "cross_entropy_dice", "focal"):
        class_weights = inverse_frequency_weights(data.patches["train"].class_counts(num_classes))

    precision = choose_precision(mixed_precision)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        with strategy.scope():
            net, model_spec = _resolve_model(model, model_kwargs, num_classes)
            net.compile(optimizer=keras.optimizers.Adam(learning_rate),
                        loss=get_loss(loss, class_weights), metrics=default_metrics())
            if is_multi_worker(strategy):
                prepare_for_multi_worker(net)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    config = {
        "model": model_spec if model_spec is not None else {"name": net.name, "custom": True},
        "data": {"dataset_dir": str(dataset_dir.resolve()), "patch_size": patch_size,
                 "stride": stride, "split": list(split), "min_foreground_pixels": min_foreground_pixels,
                 "pairing": pairing, "labels": labels, "particles": particles if labels == "auto" else None,
                 "augmentation": data.augmentation.to_dict() if data.augmentation else None},
        "training": {"epochs": epochs, "batch_size": batch_size, "global_batch_size": batch_size * replicas,
                     "learning_rate": learning_rate, "loss": loss if isinstance(loss, str) else repr(loss),
                     "class_weights": class_weights, "seed": seed, "patience": patience,
                     "mixed_precision": precision},
        "preprocessing": data.preprocessing.to_dict(),
        "classes": {str(k): v for k, v in dataset.class_names.items()},
        "num_classes": num_classes,
        "pixel_size_nm": data.pixel_size_nm,
        "strategy": {"type": strategy_name(strategy), "replicas": replicas},
        "versions": _versions(),
    }
    chief = is_chief()
    run_dir = Path(run_dir) if run_dir else _default_run_dir(dataset_dir, model, seed)
    if chief:
        resumed = _prepare_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))
        (run_dir / "split.json").write_text(json.dumps(data.split, indent=2))
        if pseudo_dir is not None:  # keep the labels the model was trained on with the run
            shutil.rmtree(run_dir / "pseudo_labels", ignore_errors=True)
            shutil.move(str(pseudo_dir), run_dir / "pseudo_labels")
        out_dir = run_dir
    else:  # other workers write to a scratch folder, as Keras's multi-worker guide recommends
        resumed = False
        out_dir = Path(tempfile.mkdtemp(prefix="tem_keras_worker_"))
    backup = run_dir / "backup" if chief else out_dir / "backup"
    if verbose:
        print(f"{'resuming' if resumed else 'training'} {net.name} ({net.count_params():,} parameters) "
              f"on {replicas} replica(s), {precision}; {data.summary()}; run folder {run_dir}", flush=True)
    hint = onednn_hint(4 * net.count_params())
    if hint:
        warnings.warn(hint, PerformanceHint, stacklevel=2)

    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(str(out_dir / "best.keras"), monitor="val_loss",
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=resumed),
        keras.callbacks.TensorBoard(str(out_dir / "logs")),
        keras.callbacks.TerminateOnNaN(),
    ]
    if verbose:
        callbacks.append(_TrainingTime.make())
    net.fit(data.pipelines["train"], validation_data=data.pipelines["val"], epochs=epochs,
            callbacks=callbacks, shuffle=False, verbose={0: 0, 1: 1, 2: 2}.get(verbose, 1))
    net.save(out_dir / "last.keras")
    if (out_dir / "best.keras").is_file():
        net.load_weights(out_dir / "best.keras")
    else:  # resumed after the last improvement: the restored weights are the best we have
        net.save(out_dir / "best.keras")

    import pandas as pd

    history = pd.read_csv(out_dir / "history.csv")
    scores, test = {}, data.patches.get("test")
    if test is not None:
        probabilities = _predict_full_batches(net, test.images, batch_size * replicas)
        scores = _test_scores(probabilities, test.masks, num_classes)
    if chief:
        (run_dir / "metrics.json").write_text(json.dumps(scores, indent=2))
        from .plots import plot_examples, plot_history

        plot_history(history, run_dir / "plots" / "history.png")
        if test is not None:
            plot_examples(test.images, test.masks, probabilities, run_dir / "plots" / "examples.png")
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    run = Run(run_dir, net, config, history, scores, data.split)
    if verbose:
        print(run, flush=True)
    return run


def _predict_full_batches(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``model.predict`` in full batches (the last one zero-padded), as replicas need."""
    n = len(images)
    padded = np.concatenate([images, np.zeros(((-n) % batch_size, *images.shape[1:]), images.dtype)])
    return model.predict(padded[..., None], batch_size=batch_size, verbose=0)[:n]


def _test_scores(probabilities: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """Scores of test patches at 0.5 and at the Otsu threshold of the probability map."""
    from .metrics import otsu_threshold, segmentation_scores

    if num_classes == 2:
        p = probabilities[..., 1]
        otsu = float(otsu_threshold(p))
        return {"at_0.5": segmentation_scores(p >= 0.5, truth, probabilities=p),
                "otsu_threshold": otsu,
                "at_otsu": segmentation_scores(p >= otsu, truth, probabilities=p),
                "n_patches": int(len(truth))}
    labels = probabilities.argmax(-1)
    per_class = {}
    for c in range(1, num_classes):
        per_class[str(c)] = segmentation_scores(labels == c, truth == c, probabilities=probabilities[..., c])
    return {"argmax": per_class, "n_patches": int(len(truth))}


def sweep(dataset_dir, models, seeds=(0, 1, 2, 3, 4), *, out_dir="sweeps", overwrite=False,
          **fit_kwargs):
    """Train every model with every seed and tabulate test scores (the Sytwu et al. 2022 study).

    Parameters
    ----------
    dataset_dir : str or Path
    models : list of str or dict
        Registry names or ``{"name": ..., **kwargs}`` configurations; a dict may carry a ``label``.
    seeds : sequence of int
    out_dir : str or Path
        Folder of the runs and of ``sweep.csv``, ``summary.csv`` and ``dice_vs_receptive_field.png``.
    **fit_kwargs
        Passed to :func:`fit`.

    Returns
    -------
    pandas.DataFrame
        Mean ± std of each score per configuration, with parameters and receptive field.
    """
    import pandas as pd

    from .models.describe import describe

    out_dir = Path(out_dir)
    rows = []
    for spec in models:
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        label = spec.pop("label", None) or "_".join(
            [spec["name"]] + [f"{k}{v}" for k, v in spec.items() if k != "name"]).replace(" ", "")
        for seed in seeds:
            run = fit(dataset_dir, dict(spec), seed=seed, run_dir=out_dir / f"{label}-seed{seed}",
                      overwrite=overwrite, **fit_kwargs)
            info = describe(run.model, pixel_size_nm=run.pixel_size_nm)
            scores = run.metrics.get("at_0.5", {})
            rows.append({"label": label, "seed": seed, "parameters": info["parameters"],
                         "receptive_field_px": info["receptive_field_px"],
                         "receptive_field_nm": info.get("receptive_field_nm"),
                         **{k: scores.get(k) for k in ("dice", "soft_dice", "iou", "f1")}})
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "sweep.csv", index=False)
    summary = (table.groupby("label", sort=False)
               .agg(parameters=("parameters", "first"), receptive_field_px=("receptive_field_px", "first"),
                    receptive_field_nm=("receptive_field_nm", "first"),
                    dice_mean=("dice", "mean"), dice_std=("dice", "std"),
                    soft_dice_mean=("soft_dice", "mean"), soft_dice_std=("soft_dice", "std"),
                    n_seeds=("seed", "count"))
               .reset_index())
    summary.to_csv(out_dir / "summary.csv", index=False)
    from .plots import plot_dice_vs_receptive_field

    plot_dice_vs_receptive_field(summary, out_dir / "dice_vs_receptive_field.png")
    return summary


__all__ = ["fit", "sweep", "Run"]
