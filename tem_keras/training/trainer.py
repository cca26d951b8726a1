"""Training one model: data in memory, the plan, the Keras model and loop, the run folder.

:func:`train` is the body of :func:`tem_keras.training.fit` (and of each fold of a k-fold run):
whole images are read and preprocessed once, patches are drawn from them at random
(:class:`~tem_keras.data.sampling.PatchSampler`), the plan fills what the config leaves open
(:mod:`~tem_keras.training.plan`), the speed of a step is measured when the number of epochs
must come from the time budget, and after training the best checkpoint is reloaded, the threshold
chosen on the validation images and the test images scored whole, image by image.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import _env  # noqa: F401
from ..artifacts import Run
from .config import TrainingConfig
from .inputs import read_training_inputs
from .labels import HAND_SHARE
from .rundir import default_run_dir, prepare_run_dir

__all__ = ["train", "plan_for_built"]

#: training steps timed (after the one that traces) before a budget-planned run
TIMING_STEPS = 3
#: validation images whose prediction time is measured before a budget-planned run
TIMING_IMAGES = 3
#: the measurement stops early once it has used this share of the time budget (a loaded machine)
TIMING_SHARE = 0.1


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from .. import __version__

    return {"tem_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def _optimizer(config: TrainingConfig):
    import keras

    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(config.learning_rate)


def measure_speed(net, sampler, heldout, plan, augmentation, seed, factor, global_batch, deadline=math.inf):
    """Seconds per training step and per whole validation image (on a few of ``heldout``),
    measured with the learning rate at zero (weights unchanged); the optimiser state is reset
    afterwards. Past ``deadline`` (``time.monotonic()``) it times one step only, and the images'
    first call (kernels prepared: an over-estimate)."""
    from ..data.pipeline import random_patch_pipeline

    batches = iter(random_patch_pipeline(sampler, global_batch, augmentation=augmentation, seed=seed + 99))
    net.optimizer.learning_rate.assign(0.0)
    x, y = next(batches)
    net.train_on_batch(x, y)  # traces the step
    start, steps = time.perf_counter(), 0
    while steps < TIMING_STEPS and not (steps and time.monotonic() > deadline):
        x, y = next(batches)
        net.train_on_batch(x, y)
        steps += 1
    step = (time.perf_counter() - start) / steps
    few = heldout.subset(TIMING_IMAGES, seed=seed)
    start = time.perf_counter()
    few.predict(net, factor)  # the first call of each image size prepares its kernels
    if time.monotonic() <= deadline:
        start = time.perf_counter()
        few.predict(net, factor)
    per_image = (time.perf_counter() - start) / max(1, len(few))
    _reset_optimizer(net)
    return step, per_image


def _reset_optimizer(net) -> None:
    """Zero the optimiser's state (moments and step count): the schedule starts again."""
    for variable in net.optimizer.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))


def train(dataset_dir, config: TrainingConfig, *, built=None, augmentation=None, run_dir=None, devices=None,
          resume: bool = True, overwrite: bool = False, preprocessing=None, discover_kwargs=None,
          labels: str = "masks", particles: str = "auto", verbose: int = 1, started: float | None = None,
          split: dict | None = None, plan=None, self_training=0) -> Run:
    """Train one model for a validated ``config`` and write its run folder (the body of
    :func:`~tem_keras.training.fit`; also used for each fold of a k-fold run).

    ``split`` fixes the images of each split (default: ``dataset.json`` or ``config.split``);
    ``plan`` (a :class:`~tem_keras.training.plan.Plan`) replaces the one planned from the data;
    ``started`` is the ``time.monotonic()`` the time limit counts from (default: now);
    ``self_training`` the noisy-student rounds after training on pseudo-labels (``"auto"``, or a
    number; :mod:`~tem_keras.training.selftrain`).
    """
    given_plan = plan
    started = time.monotonic() if started is None else started
    discover_kwargs = discover_kwargs or {}
    dataset_dir = Path(dataset_dir)
    import keras
    import tensorflow as tf

    from ..data.pipeline import random_patch_pipeline
    from ..data.preprocess import Preprocessing
    from ..hardware import choose_precision, tune_allocator
    from .strategy import choose_strategy, is_chief, is_multi_worker
    from .losses import inverse_frequency_weights
    from ..models.receptive_fields import downsampling_factor
    from .callbacks import make_clock
    from .heldout import HeldOut, predict_whole
    from .plan import MAX_EPOCHS, MAX_MONITORED

    tune_allocator()
    strategy = choose_strategy(devices)  # first: a multi-worker strategy must precede other TF ops
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    request = config.to_dict()
    trained = config.with_recipe()
    inputs = read_training_inputs(dataset_dir, config, labels=labels, particles=particles,
                                  discover_kwargs=discover_kwargs, preprocessing=preprocessing, split=split,
                                  verbose=verbose)
    dataset, split, read = inputs.dataset, inputs.split, inputs.read
    preprocessing = preprocessing or Preprocessing()
    num_classes = dataset.num_classes

    chief = is_chief()
    run_dir = Path(run_dir) if run_dir else default_run_dir(dataset_dir, config.model, config.seed)
    stored = prepare_run_dir(run_dir, request, resume=resume, overwrite=overwrite) if chief else None
    plan = _choose_plan(stored, given_plan, built, trained, read["train"], num_classes, device, replicas)
    plan.labels = inputs.labels
    global_batch = plan.batch_size * replicas
    loss_name = trained.loss if isinstance(trained.loss, str) else None
    pseudo = set(inputs.pseudo)
    hand_flags = [s not in pseudo for s in split["train"]]
    sampler = _patch_sampler(read["train"][0], read["train"][1], plan, trained, hand_flags)
    class_weights = None
    if loss_name in ("weighted_cross_entropy", "focal"):
        class_weights = inverse_frequency_weights(sampler.class_counts(num_classes))
    val = HeldOut(split["val"], *read["val"][:2])
    test = HeldOut(split["test"], *read["test"][:2]) if "test" in read else None

    precision = choose_precision(trained.mixed_precision)
    net = _build_network(plan, trained, strategy, built, precision, class_weights)
    factor = downsampling_factor(net)
    if plan.epochs is None and is_multi_worker(strategy):
        raise ValueError("training on several machines needs epochs=... (--epochs): every worker must "
                         "run the same number of epochs, which a time limit cannot promise")
    # epochs planned from the time budget are re-planned after every epoch (EpochBudget)
    planned_epochs = given_plan.epochs if given_plan is not None and stored is None else trained.epochs
    adaptive = planned_epochs is None and plan.time_limit_s is not None
    fixed_steps = trained.steps_per_epoch is not None or (given_plan is not None
                                                           and given_plan.steps_per_epoch is not None)
    image_s, reserve = _fill_epochs(plan, net, sampler, val, test, augmentation, trained.seed, factor,
                                    global_batch, started, fixed_steps)
    monitored = val.subset(plan.monitored_images or MAX_MONITORED, seed=config.seed)  # judged every epoch
    rounds = _self_training(self_training, inputs, plan, num_classes, started, reserve, image_s, len(monitored),
                            stored)

    config_json = _config_record(request, plan, built, net, dataset_dir, trained, config, discover_kwargs, labels,
                                 particles, inputs, augmentation, class_weights, precision, preprocessing, strategy)
    config_json["self_training"] = rounds.to_dict() if rounds is not None else None
    out_dir = _write_records(run_dir, chief, config_json, split, inputs.pseudo_dir)
    _announce(net, plan, split, run_dir, resuming=stored is not None, replicas=replicas, precision=precision,
              verbose=verbose)

    deadline = started + plan.time_limit_s if plan.time_limit_s else None
    clock = make_clock()

    def fit_round(index, masks, epochs, round_deadline, round_reserve, round_augmentation, checkpoint, judged,
                  rate_share=1.0):
        """Train one round on ``masks`` (a student from the teacher's weights and a fresh optimiser
        state); ``(epochs run, best monitored val dice)``."""
        if index:
            _reset_optimizer(net)
        round_sampler = sampler if index == 0 else _patch_sampler(read["train"][0], masks, plan, trained, hand_flags)
        callbacks, keras_verbose, best = _callbacks(
            plan, trained, out_dir, judged, factor, round_deadline, round_reserve if adaptive else None,
            resumed=stored is not None and index == 0, verbose=verbose, clock=clock, epochs=epochs,
            checkpoint=checkpoint, round_index=index if rounds is not None else None,
            peak=trained.learning_rate * rate_share)
        pipeline = random_patch_pipeline(round_sampler, global_batch, augmentation=round_augmentation,
                                         seed=trained.seed + index)
        history = net.fit(pipeline, epochs=MAX_EPOCHS if adaptive else epochs,
                          steps_per_epoch=plan.steps_per_epoch, callbacks=callbacks, shuffle=False,
                          verbose=keras_verbose)
        return len(history.history.get("loss", [])), best.best

    if rounds is None:
        fit_round(0, read["train"][1], plan.epochs, deadline, reserve, augmentation, out_dir / "best.keras",
                  monitored)
        net.save(out_dir / "last.keras")
    else:
        from .selftrain import run_rounds

        predict = lambda indices, name: [predict_whole(net, read[name][0][i], factor)[..., 1] for i in indices]  # noqa: E731
        run_rounds(rounds, inputs, fit_round, predict, net, out_dir, val, plan, augmentation, deadline,
                   reserve, monitored_seed=config.seed, chief=chief, verbose=verbose, resumed=stored is not None)
    return _finalise(net, factor, val, test, split, config_json, clock, started, run_dir, out_dir, chief, verbose)


def _patch_sampler(images, masks, plan, trained, hand_flags):
    """The training patches; the hand-masked images (``hand_flags``) give at least
    :data:`~tem_keras.training.labels.HAND_SHARE` of them beside pseudo-labelled ones."""
    from ..data.sampling import PatchSampler

    return PatchSampler(images, masks, plan.patch_size, foreground_fraction=trained.foreground_fraction
                        ).share(hand_flags, HAND_SHARE, at_least=True)


def _choose_plan(stored, given_plan, built, trained, train_read, num_classes, device, replicas):
    """The run's plan: the stored one when resuming, the user's edited plan (checked against the
    data), the plan for a built model, or one planned from the data."""
    from .plan import Plan, check_plan, plan_training

    if stored is not None:
        return Plan(**stored["plan"])
    if given_plan is not None:  # tem-keras plan DIR, maybe edited
        return check_plan(given_plan, [i.shape for i in train_read[0]], num_classes)
    if built is not None:
        return plan_for_built(built, trained, train_read, num_classes, device, replicas)
    return plan_training(trained, train_read[0], train_read[1], num_classes=num_classes, device=device,
                         replicas=replicas)


def _fill_epochs(plan, net, sampler, val, test, augmentation, seed, factor, global_batch, started,
                 fixed_steps) -> tuple:
    """Without planned epochs, measure a step and a validation image and fill the epochs from the
    budget left; ``(seconds per validation image or None, seconds reserved after training)``."""
    image_s = None
    if plan.epochs is None:
        step_s, image_s = measure_speed(net, sampler, val, plan, augmentation, seed, factor, global_batch,
                                        deadline=started + TIMING_SHARE * plan.time_limit_s)
    reserve = _reserve(image_s, val, test)  # threshold, test images, plots
    if plan.epochs is None:
        plan.fill_epochs(step_s, image_s, plan.time_limit_s - (time.monotonic() - started) - reserve,
                         n_val=len(val), fixed_steps=fixed_steps)
    return image_s, reserve


def _write_records(run_dir: Path, chief: bool, config_json: dict, split: dict, pseudo_dir) -> Path:
    """``config.json``, ``split.json`` and the pseudo-labels trained on, in the run folder (the
    chief); the folder checkpoints go to (other workers: a scratch folder, as Keras's
    multi-worker guide recommends)."""
    if not chief:
        return Path(tempfile.mkdtemp(prefix="tem_keras_worker_"))
    (run_dir / "config.json").write_text(json.dumps(config_json, indent=2))
    (run_dir / "split.json").write_text(json.dumps(split, indent=2))
    if pseudo_dir is not None:  # keep the labels the model was trained on with the run
        shutil.rmtree(run_dir / "pseudo_labels", ignore_errors=True)
        shutil.move(str(pseudo_dir), run_dir / "pseudo_labels")
    return run_dir


def _announce(net, plan, split, run_dir, *, resuming: bool, replicas: int, precision: str, verbose) -> None:
    """The first line and the plan (verbose), and the oneDNN hint for a small network."""
    from ..hardware import PerformanceHint, onednn_hint

    if verbose:
        print(f"{'resuming' if resuming else 'training'} {net.name} ({net.count_params():,} parameters) on "
              f"{replicas} replica(s), {precision}; train {len(split['train'])}, val {len(split['val'])}, "
              f"test {len(split['test'])} images; run folder {run_dir}\n{plan.summary()}", flush=True)
    hint = onednn_hint(4 * net.count_params())
    if hint:
        warnings.warn(hint, PerformanceHint, stacklevel=4)


def _config_record(request, plan, built, net, dataset_dir, trained, config, discover_kwargs, labels, particles,
                   inputs, augmentation, class_weights, precision, preprocessing, strategy) -> dict:
    """``config.json``: the request, the plan, the model, data, training and preprocessing settings,
    classes, pixel size, strategy and versions: everything to rebuild the run."""
    from .strategy import strategy_name

    replicas = strategy.num_replicas_in_sync
    global_batch = plan.batch_size * replicas
    loss_name = trained.loss if isinstance(trained.loss, str) else None
    dataset, read = inputs.dataset, inputs.read
    pixel_sizes = [p for name in read for p in read[name][2].values() if p]
    return {
        "request": request,
        "plan": plan.to_dict(),
        "model": plan.model if built is None else {"name": net.name, "custom": True},
        "data": {"dataset_dir": str(Path(dataset_dir).resolve()), "patch_size": plan.patch_size,
                 "sampling": "random", "foreground_fraction": trained.foreground_fraction,
                 "split": list(config.split), "pairing": discover_kwargs.get("pairing"), "labels": labels,
                 "particles": particles if labels == "auto" else None,
                 "pseudo_labelled": inputs.pseudo, "ignored_edge_px": inputs.edge_px,
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
        "num_classes": dataset.num_classes,
        "pixel_size_nm": dataset.pixel_size_nm or (float(np.median(pixel_sizes)) if pixel_sizes else None),
        "strategy": {"type": strategy_name(strategy), "replicas": replicas},
        "versions": _versions(),
    }


def _build_network(plan, trained, strategy, built, precision: str, class_weights):
    """The compiled network: built from the plan (or the user's), under the precision's dtype
    policy and the strategy's scope, from the warm-start weights when the plan names them."""
    import keras

    from ..hardware import dtype_policy
    from .strategy import is_multi_worker, prepare_for_multi_worker
    from .keras_metrics import default_metrics
    from .losses import get_loss
    from ..models.registry import build_model
    from ..models.tem_weights import load_tem_weights

    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy(precision))
    try:
        with strategy.scope():
            net = built if built is not None else build_model(dict(plan.model))
            if plan.pretrained:  # a resumed run's backup, restored later, overrides them
                load_tem_weights(net, plan.pretrained)
            net.compile(optimizer=_optimizer(trained), loss=get_loss(trained.loss, class_weights),
                        metrics=default_metrics())
            if is_multi_worker(strategy):
                prepare_for_multi_worker(net)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return net


def _callbacks(plan, trained, out_dir: Path, monitored, factor: int, deadline, reserve, *, resumed: bool,
               verbose: int, clock, epochs: int | None, checkpoint: Path, round_index: int | None = None,
               peak: float | None = None):
    """``(callbacks, Keras verbosity, best checkpoint)`` of one training loop; ``reserve``
    (seconds kept after training) is given when the time budget re-plans the epochs; ``peak``
    replaces the config's learning rate. A
    self-training round (``round_index``) adds a ``round`` column to ``history.csv``; only round 0
    backs up its state for resuming."""
    import keras

    from . import callbacks as cb
    from .plan import MAX_EPOCHS

    adaptive = reserve is not None
    budget = cb.EpochBudget(epochs, plan.steps_per_epoch, max_epochs=MAX_EPOCHS,
                            deadline=deadline - reserve if adaptive else None)
    progress, keras_verbose = cb.make_progress(budget, deadline, verbose)
    if adaptive:  # Keras's bar would announce MAX_EPOCHS epochs; the epoch line says how many
        keras_verbose = 0
    best = cb.make_checkpoint(checkpoint, budget if trained.schedule == "cosine" else None)
    callbacks = [clock, cb.make_schedule(peak or trained.learning_rate, budget, trained.schedule, deadline),
                 cb.make_validation(monitored, factor, clock)]
    if not round_index:
        callbacks.append(keras.callbacks.BackupAndRestore(str(out_dir / "backup"), delete_checkpoint=True))
    if round_index is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: logs.__setitem__("round", round_index)))
    callbacks += [
        best,
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=resumed or bool(round_index)),
        keras.callbacks.TensorBoard(str(out_dir / "logs")),
        keras.callbacks.TerminateOnNaN(),
    ]
    if trained.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_dice", mode="max",
                                                       patience=trained.patience))
    if deadline is not None:
        callbacks.append(cb.make_time_limit(deadline, budget if adaptive else None))
    if verbose:
        callbacks.append(progress)
    return callbacks, keras_verbose if verbose else 0, best


def _self_training(requested, inputs, plan, num_classes: int, started: float, reserve: float, image_s,
                   n_monitored: int, stored: dict | None = None):
    """The :class:`~tem_keras.training.selftrain.SelfTrainingPlan` of a run with pseudo-labelled
    images and 2 classes (None otherwise, or with no round planned; a resumed run's stored one);
    added to the plan line."""
    from .selftrain import SelfTrainingPlan, plan_rounds

    if requested != "auto" and requested and not inputs.pseudo:
        raise ValueError("self_training needs images without masks labelled automatically (labels='auto')")
    if not inputs.pseudo or num_classes != 2:
        return None
    if stored is not None and stored.get("self_training"):
        rounds = SelfTrainingPlan(**stored["self_training"])
    elif plan.time_limit_s is not None and plan.step_seconds:
        n_relabel = len(inputs.pseudo) + (len(inputs.split["val"]) if not inputs.hand else 0)
        extra = (1.2 * n_relabel + 3 * n_monitored) * (image_s or 0.0)
        training_s = plan.time_limit_s - (time.monotonic() - started) - reserve
        rounds = plan_rounds(requested, training_s=training_s, step_s=plan.step_seconds, round_extra_s=extra,
                             steps_per_epoch=plan.steps_per_epoch)
    else:
        rounds = plan_rounds(requested, epochs=plan.epochs)
    plan.labels = f"{plan.labels}\n      {rounds.summary()}"
    return rounds if rounds.rounds else None


def _finalise(net, factor, val, test, split, config_json, clock, started, run_dir, out_dir, chief, verbose) -> Run:
    """After training: the threshold on the validation images, the test images scored whole, the
    time record, the run folder's last files and plots; the :class:`Run`."""
    import pandas as pd

    from .heldout import choose_threshold, test_metrics

    if (out_dir / "best.keras").is_file():
        net.load_weights(out_dir / "best.keras")
    else:  # resumed after the last improvement: the restored weights are the best we have
        net.save(out_dir / "best.keras")
    history = pd.read_csv(out_dir / "history.csv")
    threshold = choose_threshold(val.predict(net, factor), val.masks)
    metrics = {"threshold": threshold["threshold"]}
    test_probabilities = None
    if test is not None and len(test):
        test_probabilities = test.predict(net, factor)
        metrics.update(test_metrics(test_probabilities, test.masks, threshold["threshold"]))
        metrics["stems"] = list(test.stems)
    wall = time.monotonic() - started
    time_use = {"wall_s": round(wall, 1), "optimiser_steps_s": round(clock.steps_s, 1),
                "validation_s": round(clock.validation_s, 1),
                "share_optimiser_steps": round(clock.steps_s / wall, 3) if wall > 0 else None,
                "share_validation": round(clock.validation_s / wall, 3) if wall > 0 else None}
    if chief:  # the epochs run and where the time went, next to the plan's first estimate
        config_json["training"].update(epochs_run=len(history), time=time_use)
        (run_dir / "config.json").write_text(json.dumps(config_json, indent=2))
        (run_dir / "thresholds.json").write_text(json.dumps(threshold, indent=2))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        from ..io.figures import plot_examples, plot_history

        plot_history(history, run_dir / "plots" / "history.png")
        if test_probabilities is not None:
            plot_examples(test.images, test.masks, test_probabilities, run_dir / "plots" / "examples.png")
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    run = Run(run_dir, net, config_json, history, metrics, split)
    if verbose:
        _report(run, threshold, time_use)
    return run


def _reserve(image_seconds, val, test) -> float:
    """Seconds kept after training for the threshold, the test images and the plots."""
    return 1.2 * (image_seconds or 0.0) * (len(val) + len(test or [])) + 5.0


def plan_for_built(built, config, train, num_classes, device, replicas):
    """The plan of a model the user built: everything but the model is planned as usual."""
    from .plan import plan_training

    probe = TrainingConfig.from_dict({**config.to_dict(), "model": None})
    plan = plan_training(probe, train[0], train[1], num_classes=num_classes, device=device, replicas=replicas)
    from ..data.sampling import clamp_patch_size
    from ..models.receptive_fields import downsampling_factor, receptive_field

    factor = downsampling_factor(built)
    plan.model = {"name": built.name, "custom": True}
    if config.pretrained == "tem":
        raise ValueError(f"pretrained='tem' applies to the planned residual UNets, not to a built model "
                         f"({built.name}); load weights into it before fit, or use pretrained=None")
    plan.pretrained = None
    plan.receptive_field_px = int(receptive_field(built))
    plan.patch_size = clamp_patch_size(config.patch_size or plan.patch_size, [i.shape for i in train[0]], factor)
    return plan


def _report(run: Run, threshold: dict, time_use: dict) -> None:
    dice = run.metrics.get("per_image", {}).get("dice")
    pooled = run.metrics.get("pooled", {}).get("dice")
    share = time_use["share_optimiser_steps"]
    spent = (f"{time_use['wall_s'] / 60:.1f} min in all"
             + (f", {100 * share:.0f} % of it in optimiser steps" if share else ""))
    if dice:
        print(f"test: dice {dice['mean']:.3f} ± {dice['std']:.3f} per image over "
              f"{run.metrics['n_images']} image(s) (pooled {pooled:.3f}) at threshold "
              f"{threshold['threshold']:.2f}, {threshold['source']}; {spent}; "
              f"{run.path}", flush=True)
    else:
        print(f"no test images; threshold {threshold['threshold']:.2f}; {spent}; {run.path}", flush=True)
