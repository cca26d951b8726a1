"""Keras callbacks of ``fit``: whole-image validation, the learning-rate schedule, the time budget.

They are built by functions (``make_*``) so that importing :mod:`tem_keras.training` does not
import Keras.
"""

from __future__ import annotations

import math
import time

__all__ = ["warmup_cosine", "EpochBudget", "make_clock", "make_validation", "make_schedule", "make_checkpoint",
           "make_time_limit", "make_progress"]


def warmup_cosine(progress: float, peak: float, warmup_fraction: float = 0.05) -> float:
    """Learning rate at ``progress`` ∈ [0, 1] of training: linear warm-up over the first
    ``warmup_fraction``, then cosine decay to zero at 1 (Loshchilov & Hutter, ICLR 2017; Goyal et
    al. 2017)."""
    progress = min(max(float(progress), 0.0), 1.0)
    if progress < warmup_fraction:
        return peak * max(progress / warmup_fraction, 0.01)
    return 0.5 * peak * (1.0 + math.cos(math.pi * (progress - warmup_fraction) / (1.0 - warmup_fraction)))


class EpochBudget:
    """The number of epochs of a run, re-planned after every epoch when a time budget sets it.

    The plan's first estimate comes from a step time measured before training, on a machine whose
    load can change. With a ``deadline`` (``time.monotonic()`` seconds by which training must end),
    :meth:`update` re-estimates the epochs that still fit from the durations of the epochs run so
    far (the median of the last three, leaving out the first, which includes tracing), so that a
    machine faster than measured fills its budget and a slower one ends in time. The learning-rate
    schedule, the checkpoint rule and the progress line read :attr:`epochs`.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, deadline: float | None = None,
                 max_epochs: int = 1000):
        self.epochs, self.steps_per_epoch = int(epochs), int(steps_per_epoch)
        self.deadline, self.max_epochs = deadline, int(max_epochs)
        self.durations: list[float] = []

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def update(self, epochs_done: int, seconds: float, now: float | None = None) -> bool:
        """Record an epoch of ``seconds``; returns whether training should go on."""
        self.durations.append(float(seconds))
        if self.deadline is not None:
            recent = self.durations[1:][-3:] or self.durations
            per_epoch = sorted(recent)[len(recent) // 2]
            left = self.deadline - (time.monotonic() if now is None else now)
            more = int(max(0.0, left) // max(per_epoch, 1e-6))
            self.epochs = int(min(self.max_epochs, max(epochs_done, epochs_done + more)))
        return epochs_done < self.epochs


def make_clock():
    """A callback that adds up the seconds spent in optimiser steps (``steps_s``) and in the
    whole-image validations (``validation_s``, added by :func:`make_validation`): the budget's real
    shares, recorded in ``config.json``."""
    import keras

    class Clock(keras.callbacks.Callback):
        steps_s = validation_s = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self._step = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps_s += time.perf_counter() - self._step

    return Clock()


def make_validation(heldout, factor: int, clock=None):
    """Adds ``val_dice`` (mean per-image hard dice of the whole validation images, foreground
    classes averaged) and ``val_loss`` (their mean cross-entropy) to the epoch's logs; its time
    goes to ``clock.validation_s`` (:func:`make_clock`)."""
    import keras

    from .heldout import cross_entropy, mean_dice

    class WholeImageValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            start = time.perf_counter()
            probabilities = heldout.predict(self.model, factor)
            if clock is not None:
                clock.validation_s += time.perf_counter() - start
            if logs is not None:
                logs["val_dice"] = mean_dice(probabilities, heldout.masks)
                logs["val_loss"] = cross_entropy(probabilities, heldout.masks)

    return WholeImageValidation()


def make_schedule(peak: float, budget: EpochBudget, schedule: str, deadline: float | None = None):
    """Sets the optimiser's learning rate before every step: constant, or :func:`warmup_cosine` of
    the training progress. Progress is the step count over the budget's total steps (so a resumed
    run continues the same curve) or the share of the time to ``deadline`` (``time.monotonic()``
    seconds) already spent, whichever is further: the decay then still ends when the budget
    does."""
    import keras

    class StepSchedule(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.monotonic()

        def on_train_batch_begin(self, batch, logs=None):
            if schedule == "constant":
                rate = peak
            else:
                progress = int(self.model.optimizer.iterations.numpy()) / max(1, budget.total_steps)
                if deadline is not None and deadline > self.start:
                    progress = max(progress, (time.monotonic() - self.start) / (deadline - self.start))
                rate = warmup_cosine(progress, peak)
            self.model.optimizer.learning_rate.assign(rate)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())

    return StepSchedule()


def make_checkpoint(path, budget: EpochBudget | None = None):
    """Saves the model whenever ``val_dice`` beats its best, from the first third of the
    ``budget``'s epochs on (every epoch without a budget): the first epochs, at the peak learning
    rate, are noisy and a lucky one on a small validation set must not be what ``fit`` returns."""
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        best = -math.inf

        def on_epoch_end(self, epoch, logs=None):
            dice = (logs or {}).get("val_dice", -math.inf)
            first_epoch = budget.epochs // 3 if budget is not None else 0
            if epoch >= first_epoch and dice > self.best:
                self.best = dice
                self.model.save(path)

    return BestCheckpoint()


def make_time_limit(deadline: float, budget: EpochBudget | None = None):
    """Stops training after the epoch at which the next one would end past ``deadline``
    (``time.monotonic()`` seconds); with a ``budget`` whose epochs a time budget sets, after the
    epoch its re-plan (:meth:`EpochBudget.update`) says is the last. The best checkpoint is kept by
    ``fit``."""
    import keras

    class TimeLimit(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            took = time.monotonic() - self.started
            go_on = budget.update(epoch + 1, took) if budget is not None else True
            if not go_on or time.monotonic() + took > deadline:
                self.model.stop_training = True
                self.stopped_epoch = epoch

    return TimeLimit()


def make_progress(budget: EpochBudget, deadline: float | None, verbose: int = 1):
    """One line per epoch (epoch, loss, validation dice, learning rate, time left) and the Keras
    ``verbose`` to pair it with: Keras's per-step bar only for ``verbose=1`` on a terminal (see
    :func:`tem_keras._env.keras_verbosity`), never in logs or captured output."""
    import keras

    from .._env import keras_verbosity

    class EpochLine(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.monotonic()
            self.best = -math.inf

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            dice = logs.get("val_dice", float("nan"))
            star = " *" if dice > self.best else ""
            self.best = max(self.best, dice) if dice == dice else self.best
            left = ""
            if deadline is not None:
                left = f", {max(0.0, deadline - time.monotonic()) / 60:.1f} min left"
            print(f"epoch {epoch + 1}/{budget.epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                  f"val dice {dice:.4f}{star}, lr {logs.get('learning_rate', float('nan')):.2e}, "
                  f"{time.monotonic() - self.start:.0f} s{left}", flush=True)

        def on_train_end(self, logs=None):
            print(f"training took {time.monotonic() - self.start:.1f} s", flush=True)

    return EpochLine(), (1 if keras_verbosity(verbose) == 1 else 0)
