"""Keras callbacks of ``fit``: whole-image validation, the learning-rate schedule, the time budget.

They are built by functions (``make_*``) so that importing :mod:`tem_keras.training` does not
import Keras.
"""

from __future__ import annotations

import math
import time

__all__ = ["warmup_cosine", "make_validation", "make_schedule", "make_checkpoint", "make_time_limit",
           "make_progress"]


def warmup_cosine(progress: float, peak: float, warmup_fraction: float = 0.05) -> float:
    """Learning rate at ``progress`` ∈ [0, 1] of training: linear warm-up over the first
    ``warmup_fraction``, then cosine decay to zero at 1 (Loshchilov & Hutter, ICLR 2017; Goyal et
    al. 2017)."""
    progress = min(max(float(progress), 0.0), 1.0)
    if progress < warmup_fraction:
        return peak * max(progress / warmup_fraction, 0.01)
    return 0.5 * peak * (1.0 + math.cos(math.pi * (progress - warmup_fraction) / (1.0 - warmup_fraction)))


def make_validation(heldout, factor: int):
    """Adds ``val_dice`` (mean per-image hard dice of the whole validation images, foreground
    classes averaged) and ``val_loss`` (their mean cross-entropy) to the epoch's logs."""
    import keras

    from .heldout import cross_entropy, mean_dice

    class WholeImageValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probabilities = heldout.predict(self.model, factor)
            if logs is not None:
                logs["val_dice"] = mean_dice(probabilities, heldout.masks)
                logs["val_loss"] = cross_entropy(probabilities, heldout.masks)

    return WholeImageValidation()


def make_schedule(peak: float, total_steps: int, schedule: str, deadline: float | None = None):
    """Sets the optimiser's learning rate before every step: constant, or :func:`warmup_cosine` of
    the training progress. Progress is the step count over ``total_steps`` (so a resumed run
    continues the same curve) or, when the machine turns out slower than planned, the share of the
    time to ``deadline`` (``time.monotonic()`` seconds) already spent, whichever is further: the
    decay then still ends when the budget does."""
    import keras

    class StepSchedule(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.monotonic()

        def on_train_batch_begin(self, batch, logs=None):
            if schedule == "constant":
                rate = peak
            else:
                progress = int(self.model.optimizer.iterations.numpy()) / max(1, total_steps)
                if deadline is not None and deadline > self.start:
                    progress = max(progress, (time.monotonic() - self.start) / (deadline - self.start))
                rate = warmup_cosine(progress, peak)
            self.model.optimizer.learning_rate.assign(rate)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())

    return StepSchedule()


def make_checkpoint(path, first_epoch: int = 0):
    """Saves the model whenever ``val_dice`` beats its best, from epoch ``first_epoch`` (0-based)
    on: the first epochs, at the peak learning rate, are noisy and a lucky one on a small
    validation set must not be what ``fit`` returns."""
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        best = -math.inf

        def on_epoch_end(self, epoch, logs=None):
            dice = (logs or {}).get("val_dice", -math.inf)
            if epoch >= first_epoch and dice > self.best:
                self.best = dice
                self.model.save(path)

    return BestCheckpoint()


def make_time_limit(deadline: float, epoch_seconds: float | None = None):
    """Stops training after the epoch at which the next one would end past ``deadline``
    (``time.monotonic()`` seconds); the best checkpoint is kept by ``fit``."""
    import keras

    class TimeLimit(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            took = time.monotonic() - self.started
            if time.monotonic() + took > deadline:
                self.model.stop_training = True
                self.stopped_epoch = epoch

    return TimeLimit()


def make_progress(epochs: int, deadline: float | None, verbose: int = 1):
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
            print(f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                  f"val dice {dice:.4f}{star}, lr {logs.get('learning_rate', float('nan')):.2e}, "
                  f"{time.monotonic() - self.start:.0f} s{left}", flush=True)

        def on_train_end(self, logs=None):
            print(f"training took {time.monotonic() - self.start:.1f} s", flush=True)

    return EpochLine(), (1 if keras_verbosity(verbose) == 1 else 0)
