"""``fit``: one call from a dataset folder to a trained model and a run folder.

With no options, ``fit(DIR)`` plans the training from the data (:mod:`~tem_keras.training.plan`):
a residual UNet whose receptive field covers the particles, random patches with a third centred on
particles, AdamW with warm-up and cosine decay, cross-entropy + soft dice, as many epochs as fit in
about ten minutes on a CPU, the weights of the epoch with the best per-image dice on the whole
validation images, and a particle threshold chosen on those images. ``recipe="paper"`` trains with
the papers' settings instead. Training runs on every visible GPU (``MirroredStrategy``), on several
machines when ``TF_CONFIG`` is set (``MultiWorkerMirroredStrategy``), and resumes after an
interruption from the last finished epoch (``BackupAndRestore``).

Run folder::

    config.json      the request, the plan, the model and data settings: everything to rebuild
    split.json       the images of each split
    history.csv      one row per epoch (loss, val_dice, val_loss, learning_rate, ...)
    best.keras       weights of the epoch with the best validation dice
    last.keras       weights of the last epoch
    thresholds.json  the particle threshold chosen on the validation images (used by predict/export)
    metrics.json     test images: per-image mean ± std (headline) and pooled scores
    plots/           training curves, example overlays
    logs/            TensorBoard
    backup/          training state while a run is unfinished (removed at the end)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import _env  # noqa: F401
from ..errors import TEMInputError
from .config import TrainingConfig
from ..artifacts import Run

__all__ = ["fit"]

_TIMING_STEPS = 3


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from .. import __version__

    return {"tem_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def _default_run_dir(dataset_dir: Path, model, seed: int) -> Path:
    name = (model if isinstance(model, str) else model.get("name", "model") if isinstance(model, dict)
            else getattr(model, "name", "auto") if model is not None else "auto")
    return Path("runs") / f"{Path(dataset_dir).resolve().name}-{name}-seed{seed}"


def _prepare_run_dir(run_dir: Path, request: dict, *, resume: bool, overwrite: bool) -> dict | None:
    """Create the run folder; return the stored config of an unfinished run that is resumed."""
    if run_dir.exists() and any(run_dir.iterdir()):
        unfinished = (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
        if overwrite:
            shutil.rmtree(run_dir)
        elif unfinished and resume and (run_dir / "config.json").is_file():
            old = json.loads((run_dir / "config.json").read_text())
            changed = sorted(k for k in set(request) | set(old.get("request", {}))
                             if old.get("request", {}).get(k) != request.get(k))
            if changed:
                raise FileExistsError(
                    f"{run_dir}: an unfinished run with different settings ({', '.join(changed)}) is "
                    "here; pass the same settings to resume it, or overwrite=True / another run_dir")
            return old
        else:
            state = "a finished run" if (run_dir / "metrics.json").exists() else "files"
            raise FileExistsError(f"{run_dir}: holds {state}; pass overwrite=True to replace it, "
                                  "or choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _model_spec(model, model_kwargs):
    """``(spec dict or None, built model or None)`` from what the user passed."""
    import keras

    if isinstance(model, keras.Model):
        if model_kwargs:
            raise ValueError("model keyword arguments cannot be applied to an already built model")
        return None, model
    if model is None:
        if model_kwargs:
            raise ValueError(f"model options {sorted(model_kwargs)} need a model name (model=...)")
        return None, None
    if isinstance(model, str):
        return {"name": model, **model_kwargs}, None
    if isinstance(model, dict):
        return {**model, **model_kwargs}, None
    raise TypeError(f"model must be a registry name, a dict or a keras.Model, got {type(model).__name__}")


def _split(dataset, config: TrainingConfig, dataset_dir: Path) -> dict:
    from ..data.datasets import split_samples

    labelled = [s.stem for s in dataset.labelled]
    if not labelled:
        raise TEMInputError("no labelled images: every image needs a mask to train on", dataset_dir)
    chosen = dataset.split or split_samples(labelled, config.split, seed=config.seed)
    split = {k: list(chosen.get(k, [])) for k in ("train", "val", "test")}
    if not split["train"]:
        raise TEMInputError("the split leaves no image for training", dataset_dir)
    if not split["val"]:
        raise TEMInputError("the split leaves no validation image; checkpoints are chosen on one "
                            "(give split=(train, val, test) with val > 0 or more images)", dataset_dir)
    if len(split["val"]) < 3:
        warnings.warn(f"only {len(split['val'])} validation image(s): the best epoch is chosen on "
                      "them and the threshold stays at 0.5; label more images or use folds=5",
                      UserWarning, stacklevel=3)
    return split


def _optimizer(config: TrainingConfig):
    import keras

    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(config.learning_rate)


def _measure(net, sampler, heldout, plan, augmentation, seed, factor, global_batch):
    """Seconds per training step and per validation pass, measured with the learning rate at zero
    (weights unchanged); the optimiser state is reset afterwards."""
    from ..data.pipeline import random_patch_pipeline

    batches = iter(random_patch_pipeline(sampler, global_batch, augmentation=augmentation, seed=seed + 99))
    net.optimizer.learning_rate.assign(0.0)
    x, y = next(batches)
    net.train_on_batch(x, y)  # traces the step
    start = time.perf_counter()
    for _ in range(_TIMING_STEPS):
        x, y = next(batches)
        net.train_on_batch(x, y)
    step = (time.perf_counter() - start) / _TIMING_STEPS
    heldout.predict(net, factor)  # traces the validation call
    start = time.perf_counter()
    heldout.predict(net, factor)
    validation = time.perf_counter() - start
    for variable in net.optimizer.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    return step, validation


def fit(dataset_dir, model=None, *, recipe: str = "default", time_limit=None, epochs: int | None = None,
        steps_per_epoch: int | None = None, batch_size: int | None = None, patch_size: int | None = None,
        learning_rate: float | None = None, weight_decay: float | None = None, optimizer: str | None = None,
        schedule: str | None = None, loss=None, foreground_fraction: float | None = None,
        patience: int | None = None, folds: int | None = None, split=(0.7, 0.1, 0.2), augment=True,
        seed: int = 0, mixed_precision="auto", run_dir=None, devices=None, resume: bool = True,
        overwrite: bool = False, preprocessing=None, pairing: str = "stem", images=None, masks=None,
        labels: str = "masks", particles: str = "dark", verbose: int = 1, **model_kwargs) -> Run:
    """Train a segmentation model on a dataset folder and write a run folder.

    Every option left at ``None`` is chosen from the data and the hardware and printed as a plan
    before training (see :class:`~tem_keras.training.config.TrainingConfig` for each field).

    Parameters
    ----------
    dataset_dir : str or Path
        Folder with images and masks (see :func:`tem_keras.data.discover`).
    model : str, dict, keras.Model or None
        A registry name (``tem-keras models``), ``{"name": ..., **kwargs}``, a built Keras model
        (input ``(None, None, 1)``), or None: a residual UNet sized to the particles.
    recipe : {"default", "paper"}
        Optimiser settings for the options left at None; ``"paper"`` reproduces the papers.
    time_limit : float or str, optional
        Budget of the whole call (``"10min"``); training stops at it with the best weights.
        Without epochs and time limit: about 10 minutes on a CPU.
    epochs, steps_per_epoch, batch_size, patch_size : int, optional
        An epoch is ``steps_per_epoch`` steps of ``batch_size`` random patches (per replica).
    learning_rate, weight_decay, optimizer, schedule, loss, foreground_fraction, patience
        See :class:`~tem_keras.training.config.TrainingConfig`.
    folds : int, optional
        k-fold cross-validation: see :func:`tem_keras.training.folds.fit_folds`.
    split : tuple of 3 floats
        Train/val/test fractions of the images (a split in ``dataset.json`` wins).
    augment : bool or Augmentation
        Training augmentation (8 dihedral transforms, rotation, blur, noise, contrast, gradient).
    seed : int
        One seed for weights, split, patches and augmentation.
    mixed_precision : {"auto", "float32", "mixed_float16", "mixed_bfloat16"}
    run_dir : str or Path, optional
        Run folder; ``runs/<dataset>-<model>-seed<seed>`` by default.
    devices : None, int or list of str
        See :func:`tem_keras.distribute.choose_strategy`.
    resume, overwrite : bool
        Continue an unfinished run in ``run_dir`` (same settings required) / replace a run folder.
    preprocessing, pairing, images, masks
        See :func:`tem_keras.data.discover` and :class:`~tem_keras.data.preprocess.Preprocessing`.
    labels : {"masks", "auto"}
        ``"auto"``: images without a mask get Horwath et al.'s pseudo-labels.
    particles : {"dark", "bright", "auto"}
        Particle contrast for the pseudo-labels.
    verbose : int
        0 quiet; 1 the plan, then a line per epoch (and Keras's step bar on a terminal); 2 the plan
        and a line per epoch.
    **model_kwargs
        Arguments of the model builder, e.g. ``base_filters=8``.

    Returns
    -------
    Run
    """
    from ..data.augment import Augmentation

    started = time.monotonic()
    if folds is not None:
        from .folds import fit_folds

        kwargs = dict(locals())
        for name in ("started", "Augmentation", "fit_folds", "kwargs", "model_kwargs"):
            kwargs.pop(name, None)
        return fit_folds(**kwargs, **model_kwargs)
    spec, built = _model_spec(model, model_kwargs)
    augmentation = augment if isinstance(augment, Augmentation) else Augmentation() if augment else None
    config = TrainingConfig(
        model=spec, recipe=recipe, time_limit=time_limit, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, patch_size=patch_size, learning_rate=learning_rate,
        weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, loss=loss,
        foreground_fraction=foreground_fraction, patience=patience, split=split,
        augment=augmentation is not None, seed=seed, mixed_precision=mixed_precision)
    if labels not in ("masks", "auto"):
        raise ValueError(f"labels must be 'masks' or 'auto', got {labels!r}")
    if built is not None and config.model is None:
        config = TrainingConfig.from_dict({**config.to_dict(), "model": {"name": built.name}})
    return _train(Path(dataset_dir), config, built=built, augmentation=augmentation, run_dir=run_dir,
                  devices=devices, resume=resume, overwrite=overwrite, preprocessing=preprocessing,
                  discover_kwargs=dict(pairing=pairing, images=images, masks=masks), labels=labels,
                  particles=particles, verbose=verbose, started=started)


def _train(dataset_dir, config, *, built, augmentation, run_dir, devices, resume, overwrite,
           preprocessing, discover_kwargs, labels, particles, verbose, started, split=None):
    """The body of :func:`fit` for a validated ``config`` (also used per fold)."""
    import keras
    import tensorflow as tf

    from ..data.datasets import discover
    from ..data.pipeline import load_images, random_patch_pipeline
    from ..data.preprocess import Preprocessing
    from ..data.sampling import PatchSampler
    from ..distribute import (PerformanceHint, choose_precision, choose_strategy, is_chief, is_multi_worker,
                              onednn_hint, prepare_for_multi_worker, strategy_name, tune_allocator)
    from ..keras_metrics import default_metrics
    from ..losses import get_loss, inverse_frequency_weights
    from ..models.receptive_field import downsampling_factor
    from ..models.registry import build_model
    from . import callbacks as cb
    from .heldout import HeldOut, choose_threshold, scores
    from .plan import Plan, plan_training

    tune_allocator()
    strategy = choose_strategy(devices)  # first: a multi-worker strategy must precede other TF ops
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    request = config.to_dict()
    trained = config.with_recipe()
    dataset = discover(dataset_dir, include_unlabelled=labels == "auto", **discover_kwargs)
    pseudo_dir = None
    if labels == "auto" and len(dataset.labelled) < len(dataset):
        from ..data.labelling import pseudo_label_dataset

        pseudo_dir = Path(tempfile.mkdtemp(prefix="tem_keras_pseudo_labels_"))
        dataset = pseudo_label_dataset(dataset, pseudo_dir, particles=particles, progress=verbose > 0)
    split = split or _split(dataset, config, dataset_dir)
    preprocessing = preprocessing or Preprocessing()
    read = {name: load_images(dataset, split[name], preprocessing=preprocessing, progress=verbose > 0,
                              desc=f"reading {name} images") for name in ("train", "val", "test") if split[name]}
    num_classes = dataset.num_classes

    chief = is_chief()
    run_dir = Path(run_dir) if run_dir else _default_run_dir(dataset_dir, config.model, config.seed)
    stored = _prepare_run_dir(run_dir, request, resume=resume, overwrite=overwrite) if chief else None
    if stored is not None:
        plan = Plan(**stored["plan"])
    elif built is not None:
        plan = _plan_for_built(built, trained, read["train"], num_classes, device, replicas)
    else:
        plan = plan_training(trained, read["train"][0], read["train"][1], num_classes=num_classes,
                             device=device, replicas=replicas)
    global_batch = plan.batch_size * replicas
    loss_name = trained.loss if isinstance(trained.loss, str) else None
    sampler = PatchSampler(read["train"][0], read["train"][1], plan.patch_size,
                           foreground_fraction=trained.foreground_fraction)
    class_weights = None
    if loss_name in ("weighted_cross_entropy", "focal"):
        class_weights = inverse_frequency_weights(sampler.class_counts(num_classes))
    val = HeldOut(split["val"], *read["val"][:2])
    test = HeldOut(split["test"], *read["test"][:2]) if "test" in read else None

    precision = choose_precision(trained.mixed_precision)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        with strategy.scope():
            net = built if built is not None else build_model(dict(plan.model))
            net.compile(optimizer=_optimizer(trained), loss=get_loss(trained.loss, class_weights),
                        metrics=default_metrics())
            if is_multi_worker(strategy):
                prepare_for_multi_worker(net)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    factor = downsampling_factor(net)
    if plan.epochs is None:
        step_s, val_s = _measure(net, sampler, val, plan, augmentation, trained.seed, factor, global_batch)
        reserve = 1.2 * val_s * (1 + len(test or []) / max(1, len(val))) + 5.0  # threshold, test, plots
        plan.fill_epochs(step_s, val_s, plan.time_limit_s - (time.monotonic() - started) - reserve)

    pixel_sizes = [p for name in read for p in read[name][2].values() if p]
    config_json = {
        "request": request,
        "plan": plan.to_dict(),
        "model": plan.model if built is None else {"name": net.name, "custom": True},
        "data": {"dataset_dir": str(Path(dataset_dir).resolve()), "patch_size": plan.patch_size,
                 "sampling": "random", "foreground_fraction": trained.foreground_fraction,
                 "split": list(config.split), "pairing": discover_kwargs.get("pairing"), "labels": labels,
                 "particles": particles if labels == "auto" else None,
                 "augmentation": augmentation.to_dict() if augmentation else None},
        "training": {"recipe": trained.recipe, "epochs": plan.epochs, "steps_per_epoch": plan.steps_per_epoch,
                     "batch_size": plan.batch_size, "global_batch_size": global_batch,
                     "optimizer": trained.optimizer, "learning_rate": trained.learning_rate,
                     "weight_decay": trained.weight_decay, "schedule": trained.schedule,
                     "loss": loss_name or repr(trained.loss), "class_weights": class_weights,
                     "seed": trained.seed, "patience": trained.patience, "time_limit_s": plan.time_limit_s,
                     "mixed_precision": precision},
        "preprocessing": preprocessing.to_dict(),
        "classes": {str(k): v for k, v in dataset.class_names.items()},
        "num_classes": num_classes,
        "pixel_size_nm": dataset.pixel_size_nm or (float(np.median(pixel_sizes)) if pixel_sizes else None),
        "strategy": {"type": strategy_name(strategy), "replicas": replicas},
        "versions": _versions(),
    }
    if chief:
        (run_dir / "config.json").write_text(json.dumps(config_json, indent=2))
        (run_dir / "split.json").write_text(json.dumps(split, indent=2))
        if pseudo_dir is not None:  # keep the labels the model was trained on with the run
            shutil.rmtree(run_dir / "pseudo_labels", ignore_errors=True)
            shutil.move(str(pseudo_dir), run_dir / "pseudo_labels")
        out_dir = run_dir
    else:  # other workers write to a scratch folder, as Keras's multi-worker guide recommends
        out_dir = Path(tempfile.mkdtemp(prefix="tem_keras_worker_"))
    if verbose:
        state = "resuming" if stored is not None else "training"
        print(f"{state} {net.name} ({net.count_params():,} parameters) on {replicas} replica(s), {precision}; "
              f"train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])} images; "
              f"run folder {run_dir}\n{plan.summary()}", flush=True)
    hint = onednn_hint(4 * net.count_params())
    if hint:
        warnings.warn(hint, PerformanceHint, stacklevel=3)

    deadline = started + plan.time_limit_s if plan.time_limit_s else None
    progress, keras_verbose = cb.make_progress(plan.epochs, deadline, verbose)
    callbacks = [
        cb.make_schedule(trained.learning_rate, plan.epochs * plan.steps_per_epoch, trained.schedule,
                         deadline),
        cb.make_validation(val, factor),
        keras.callbacks.BackupAndRestore(str(out_dir / "backup"), delete_checkpoint=True),
        cb.make_checkpoint(out_dir / "best.keras", first_epoch=plan.epochs // 3 if trained.schedule == "cosine" else 0),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=stored is not None),
        keras.callbacks.TensorBoard(str(out_dir / "logs")),
        keras.callbacks.TerminateOnNaN(),
    ]
    if trained.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_dice", mode="max",
                                                       patience=trained.patience))
    if deadline is not None:
        callbacks.append(cb.make_time_limit(deadline))
    if verbose:
        callbacks.append(progress)
    train = random_patch_pipeline(sampler, global_batch, augmentation=augmentation, seed=trained.seed)
    net.fit(train, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch, callbacks=callbacks, shuffle=False,
            verbose=keras_verbose if verbose else 0)
    net.save(out_dir / "last.keras")
    if (out_dir / "best.keras").is_file():
        net.load_weights(out_dir / "best.keras")
    else:  # resumed after the last improvement: the restored weights are the best we have
        net.save(out_dir / "best.keras")

    import pandas as pd

    history = pd.read_csv(out_dir / "history.csv")
    threshold = choose_threshold(val.predict(net, factor), val.masks)
    metrics = {"threshold": threshold["threshold"]}
    test_probabilities = None
    if test is not None and len(test):
        test_probabilities = test.predict(net, factor)
        metrics.update(_test_metrics(test_probabilities, test.masks, threshold["threshold"], scores))
        metrics["stems"] = list(test.stems)
    if chief:
        (run_dir / "thresholds.json").write_text(json.dumps(threshold, indent=2))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        from ..plots import plot_examples, plot_history

        plot_history(history, run_dir / "plots" / "history.png")
        if test_probabilities is not None:
            plot_examples(test.images, test.masks, test_probabilities, run_dir / "plots" / "examples.png")
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    run = Run(run_dir, net, config_json, history, metrics, split)
    if verbose:
        _report(run, threshold, time.monotonic() - started)
    return run


def _plan_for_built(built, config, train, num_classes, device, replicas):
    """The plan of a model the user built: everything but the model is planned as usual."""
    from .plan import plan_training

    probe = TrainingConfig.from_dict({**config.to_dict(), "model": None})
    plan = plan_training(probe, train[0], train[1], num_classes=num_classes, device=device, replicas=replicas)
    from ..data.sampling import clamp_patch_size
    from ..models.receptive_field import downsampling_factor, receptive_field

    factor = downsampling_factor(built)
    plan.model = {"name": built.name, "custom": True}
    plan.receptive_field_px = int(receptive_field(built))
    plan.patch_size = clamp_patch_size(config.patch_size or plan.patch_size, [i.shape for i in train[0]], factor)
    return plan


def _test_metrics(probabilities, masks, threshold, scores) -> dict:
    """Per-image (headline) and pooled test scores at the chosen threshold, at 0.5 and at Otsu."""
    from ..metrics import otsu_threshold, segmentation_scores

    chosen = scores(probabilities, masks, threshold)
    out = {"per_image": chosen["per_image"], "pooled": chosen["pooled"],
           "images": chosen.get("images"), "n_images": chosen["n_images"]}
    if "classes" in chosen:
        out["classes"] = {c: {"per_image": s["per_image"], "pooled": s["pooled"]}
                          for c, s in chosen["classes"].items()}
    if probabilities[0].shape[-1] == 2:
        p = np.concatenate([q[..., 1].ravel() for q in probabilities])
        truth = np.concatenate([np.asarray(m).ravel() for m in masks])
        otsu = float(otsu_threshold(p))
        out.update({"at_0.5": segmentation_scores(p >= 0.5, truth, probabilities=p), "otsu_threshold": otsu,
                    "at_otsu": segmentation_scores(p >= otsu, truth, probabilities=p)})
    return out


def _report(run: Run, threshold: dict, seconds: float) -> None:
    dice = run.metrics.get("per_image", {}).get("dice")
    pooled = run.metrics.get("pooled", {}).get("dice")
    if dice:
        print(f"test: dice {dice['mean']:.3f} ± {dice['std']:.3f} per image over "
              f"{run.metrics['n_images']} image(s) (pooled {pooled:.3f}) at threshold "
              f"{threshold['threshold']:.2f} ({threshold['source']}); {seconds / 60:.1f} min in all; "
              f"{run.path}", flush=True)
    else:
        print(f"no test images; threshold {threshold['threshold']:.2f}; {run.path}", flush=True)
