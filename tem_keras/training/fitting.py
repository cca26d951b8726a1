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
    selftrain.json   with pseudo-labels: the self-training rounds and their agreement (rounds/: weights)
    metrics.json     test images: per-image mean ± std (headline) and pooled scores
    plots/           training curves, example overlays
    logs/            TensorBoard
    backup/          training state while a run is unfinished (removed at the end)

One ``fit`` at a time trains into a run folder (a lock, ``.tem_keras.lock``), and
``overwrite=True`` removes only what an earlier ``fit`` wrote there (its manifest,
``.tem_keras_output``); a run folder that is or holds the data set is refused
(:mod:`~tem_keras.training.rundir`).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from .. import _env  # noqa: F401
from ..artifacts import Run
from .strategy import is_chief
from .config import TrainingConfig, check_fit_arguments
from .rundir import check_run_dir, default_run_dir, run_lock
from .trainer import train

__all__ = ["fit"]


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


def fit(dataset_dir, model=None, *, recipe: str = "default", time_limit=None, epochs: int | None = None,
        steps_per_epoch: int | None = None, batch_size: int | None = None, patch_size: int | None = None,
        learning_rate: float | None = None, weight_decay: float | None = None, optimizer: str | None = None,
        schedule: str | None = None, loss=None, foreground_fraction: float | None = None,
        patience: int | None = None, folds: int | None = None, split=(0.7, 0.1, 0.2), augment=True,
        seed: int = 0, mixed_precision="auto", pretrained: str | None = "auto", run_dir=None, devices=None, resume: bool = True,
        overwrite: bool = False, preprocessing=None, pairing: str = "stem", images=None, masks=None,
        labels: str = "masks", particles: str = "auto", self_training=0, verbose: int = 1,
        config: TrainingConfig | None = None,
        plan=None, **model_kwargs) -> Run:
    """Train a segmentation model on a dataset folder and write a run folder.

    Every option left at ``None`` is chosen from the data and the hardware and printed as a plan
    before training (see :class:`~tem_keras.training.config.TrainingConfig` for each field).

    Parameters
    ----------
    dataset_dir : str or Path
        Folder with images and masks (see :func:`tem_keras.data.discover`). Masks with no particle
        or no background train as they are, with a warning naming them; a data set in which every
        mask has no particle (or no background) is refused.
    model : str, dict, keras.Model or None
        A registry name (``tem-keras models``), ``{"name": ..., **kwargs}``, a built Keras model
        (input ``(None, None, 1)``), or None: a residual UNet sized to the particles.
    recipe : {"default", "paper"}
        Optimiser settings for the options left at None; ``"paper"`` reproduces the papers.
    time_limit : float or str, optional
        Budget of the whole call (``"10min"``); training stops at it with the best weights.
        Without epochs and time limit: 9 minutes on a CPU (the call ends within 10), 20 on a GPU,
        for up to 50 training images; 3 s more per image beyond, at most 30 minutes.
    epochs, steps_per_epoch, batch_size, patch_size : int, optional
        An epoch is ``steps_per_epoch`` steps of ``batch_size`` random patches (per replica).
    learning_rate, weight_decay, optimizer, schedule, loss, foreground_fraction, patience
        See :class:`~tem_keras.training.config.TrainingConfig`.
    folds : int, optional
        k-fold cross-validation of the images outside the test split: one model per fold, the
        threshold and a cross-validated dice from out-of-fold predictions, and the run's model
        the mean of the folds (see :mod:`tem_keras.training.folds`).
    split : tuple of 3 floats
        Train/val/test fractions of the images (a split in ``dataset.json`` wins).
    augment : bool or Augmentation
        Training augmentation (8 dihedral transforms, small rotations and scalings; blur, noise,
        contrast and gradient with ``Augmentation(p=0.3)``).
    seed : int
        One seed for weights, split, patches and augmentation.
    mixed_precision : {"auto", "float32", "bfloat16", "float16"}
        Compute precision, the same vocabulary as ``predict`` (see
        :func:`tem_keras.hardware.choose_precision`).
    pretrained : {"auto", "tem", None}
        Start from the shipped weights pre-trained on synthetic micrographs (``"tem"``; ``"auto"``:
        where the model has them, as the planned residual UNets do) or from a random
        initialisation (``None``). See :mod:`tem_keras.models.tem_weights`.
    run_dir : str or Path, optional
        Run folder; ``runs/<dataset>-<model>-seed<seed>`` by default.
    devices : None, int or list of str
        See :func:`tem_keras.training.strategy.choose_strategy`.
    resume, overwrite : bool
        Continue an unfinished run in ``run_dir`` (same settings required) / replace a run folder.
    preprocessing, pairing, images, masks
        See :func:`tem_keras.data.discover` and :class:`~tem_keras.data.preprocess.Preprocessing`.
    labels : {"masks", "auto"}
        ``"auto"``: images without a mask get pseudo-labels (:func:`tem_keras.auto_labels`, which
        chooses polarity, scale and pipeline per image) and train beside the hand-drawn masks,
        which alone validate and test (see :mod:`tem_keras.training.labels`).
    particles : {"auto", "dark", "bright"}
        Particle contrast for the pseudo-labels (``"auto"``: chosen per image).
    self_training : "auto" or int
        With pseudo-labels: rounds of noisy-student self-training after the first training, each
        on the model's own confident predictions, inside the same budget (0, the default: none;
        ``"auto"``: up to 2 as the budget allows). Off by default: measured with zero masks, the
        rounds did not beat the labeller's pseudo-labels nor a plain fit of the same steps
        (``benchmarks/README.md``). See :mod:`tem_keras.training.selftrain`; the rounds are
        recorded in ``selftrain.json``.
    verbose : int
        0 quiet; 1 the plan, then a line per epoch (and Keras's step bar on a terminal); 2 the plan
        and a line per epoch.
    config : TrainingConfig, optional
        All training options as one object, instead of the keywords above (giving both is an
        error).
    plan : str or Path, optional
        A plan file written by :func:`tem_keras.plan` (``tem-keras plan DIR``) and maybe edited:
        its model, patch, batch, steps, epochs, time limit, warm start and split replace those
        planned from the data (see :mod:`tem_keras.training.planning`).
    **model_kwargs
        Arguments of the model builder, e.g. ``base_filters=8``.

    Returns
    -------
    Run
    """
    started = time.monotonic()
    check_fit_arguments(dataset_dir, run_dir=run_dir, devices=devices, resume=resume, overwrite=overwrite,
                        preprocessing=preprocessing, pairing=pairing, labels=labels, particles=particles,
                        verbose=verbose, plan=plan, images=images, masks=masks)
    spec, built = _model_spec(model, model_kwargs)
    config, augmentation = _training_config(config, augment, dict(
        model=spec, recipe=recipe, time_limit=time_limit, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, patch_size=patch_size, learning_rate=learning_rate,
        weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, loss=loss,
        foreground_fraction=foreground_fraction, patience=patience, folds=folds, split=split,
        seed=seed, mixed_precision=mixed_precision, pretrained=pretrained))
    given_plan, plan_split = _edited_plan(plan, config, self_training, labels)
    if built is not None and config.model is None:
        config = TrainingConfig.from_dict({**config.to_dict(), "model": {"name": built.name}})
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(
        dataset_dir, config.model, config.seed, f"-{config.folds}fold" if config.folds else "")
    check_run_dir(run_dir, [dataset_dir, images, masks])  # before the lock is written into it
    common = dict(built=built, augmentation=augmentation, run_dir=run_dir, devices=devices, resume=resume,
                  overwrite=overwrite, preprocessing=preprocessing, labels=labels, particles=particles,
                  self_training=self_training,
                  discover_kwargs=dict(pairing=pairing, images=images, masks=masks), verbose=verbose,
                  started=started)
    with run_lock(run_dir) if is_chief() else nullcontext():  # one fit at a time per run folder
        if config.folds:
            from .folds import fit_folds

            return fit_folds(Path(dataset_dir), config, **common)
        return train(Path(dataset_dir), config, split=plan_split, plan=given_plan, **common)


def _edited_plan(plan, config: TrainingConfig, self_training, labels: str) -> tuple:
    """``(plan, split)`` read from a plan file (``(None, None)`` without one), after checking that
    the plan and the self-training rounds fit the other options."""
    from .selftrain import check_rounds

    if check_rounds(self_training) not in ("auto", 0) and labels != "auto":
        raise ValueError("self_training trains on pseudo-labels: it needs labels='auto'")
    if plan is None:
        return None, None
    from .planning import read_plan_file

    if config.folds:
        raise ValueError("plan=... trains one model from an edited plan; it does not combine with folds")
    return read_plan_file(plan)


def _training_config(config, augment, keywords: dict):
    """The :class:`TrainingConfig` of ``fit`` (``config``, or one made from its keywords; both
    is an error) and the :class:`~tem_keras.data.augment.Augmentation` (None: none)."""
    from ..data.augment import Augmentation

    if not isinstance(augment, (bool, Augmentation)):  # "no" would be true
        raise TypeError(f"augment must be True, False or an Augmentation, got {augment!r} "
                        f"({type(augment).__name__})")
    augmentation = augment if isinstance(augment, Augmentation) else Augmentation() if augment else None
    config_keywords = TrainingConfig(augment=augmentation is not None, **keywords)
    if config is None:
        return config_keywords, augmentation
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    given = [name for name, value in config_keywords.to_dict().items() if value != TrainingConfig().to_dict()[name]]
    if given:
        raise ValueError(f"give the training options either in config=TrainingConfig(...) or as keywords, "
                         f"not both (keywords given: {', '.join(given)})")
    if not isinstance(augment, Augmentation):
        augmentation = Augmentation() if config.augment else None
    return config, augmentation
