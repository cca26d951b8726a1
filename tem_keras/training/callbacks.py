"""Keras callbacks of ``fit``: whole-image validation, the learning-rate schedule, the time budget.

They are built by functions (``make_*``) so that importing :mod:`tem_keras.training` does not
import Keras.
"""

from __future__ import annotations

import math
import sys
import time

__all__ = ["warmup_cosine", "make_validation", "make_schedule", "make_time_limit", "make_progress"]


def warmup_cosine(step: int, total_steps: int, peak: float, warmup_fraction: float = 0.05) -> float:
    """Learning rate at ``step``: linear warm-up over the first ``warmup_fraction`` of the steps,
    then cosine decay to zero at ``total_steps`` (Loshchilov & Hutter, ICLR 2017; Goyal et al. 2017).
    """
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


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


def make_schedule(peak: float, total_steps: int, schedule: str):
    """Sets the optimiser's learning rate before every step from its iteration count (so a resumed
    run continues the same curve): ``warmup_cosine`` or constant."""
    import keras

    class StepSchedule(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            rate = peak if schedule == "constant" else warmup_cosine(step, total_steps, peak)
            self.model.optimizer.learning_rate.assign(rate)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())

    return StepSchedule()


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


def make_progress(epochs: int, deadline: float | None, *, every_epoch_line: bool | None = None):
    """One line per epoch: epoch, loss, validation dice, learning rate, time left.

    Used instead of Keras's per-step bar when the output is not a terminal (logs, notebooks'
    captured output) or always with ``every_epoch_line=True``.
    """
    import keras

    line_mode = (not sys.stdout.isatty()) if every_epoch_line is None else every_epoch_line

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

    return EpochLine(), (0 if line_mode else 1)
