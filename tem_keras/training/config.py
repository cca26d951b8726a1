"""``TrainingConfig``: what the user asked of :func:`~tem_keras.training.fit`, validated and frozen.

``None`` means "let the data decide": the plan (:mod:`tem_keras.training.plan`) fills it from the
images, the masks and the hardware, and a recipe supplies the optimiser settings. Whatever the user
sets explicitly wins. The config is stored in the run's ``config.json`` (``"request"``) and read back
with :meth:`TrainingConfig.from_dict`; the CLI's ``fit`` options are generated from its fields.

Recipes
-------
``"default"``
    Measured on small labelled TEM sets: AdamW from 1e-3 with a linear warm-up over the first 5 %
    of the steps and cosine decay to zero, cross-entropy + soft dice, random patches with a third
    centred on particles, no early stopping (the schedule ends at the time budget), weights of the
    epoch with the best per-image validation dice.
``"paper"``
    The papers' settings, for reproductions: Adam at a constant 1e-4, cross-entropy, 512² patches,
    batch 8, early stopping after 10 epochs without improvement (Horwath et al. 2020; Sytwu et al.
    2022; Groschner et al. 2021).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace

__all__ = ["TrainingConfig", "RECIPES", "check_fit_arguments", "parse_duration"]

#: recipe name → values used for the fields the user left at ``None``
RECIPES = {
    "default": dict(learning_rate=1e-3, schedule="cosine", optimizer="adamw", weight_decay=1e-4,
                    loss="cross_entropy_dice", foreground_fraction=1 / 3, patience=None),
    "paper": dict(learning_rate=1e-4, schedule="constant", optimizer="adam", weight_decay=0.0,
                  loss="cross_entropy", foreground_fraction=0.0, patience=10, patch_size=512,
                  batch_size=8, epochs=100, model="unet"),
}

_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600}


def parse_duration(value) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"10min"``, ``"1h30min"`` or ``None``.

    Raises
    ------
    ValueError
        For anything else, or a duration that is not positive.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*(\d+(\.\d+)?\s*(s|sec|min|m|h|hr)?\s*)+", value):
        seconds = 0.0
        for number, _, unit in re.findall(r"(\d+(\.\d+)?)\s*(s|sec|min|m|h|hr)?", value):
            seconds += float(number) * _UNITS[unit or "s"]
    else:
        raise ValueError(f"time_limit must be seconds or a duration like '10min', '90s', '1h30min'; "
                         f"got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"time_limit must be positive, got {value!r}")
    return seconds


def _positive_int(name, value, *, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _number(name, value, low, high, *, low_open=False):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one :func:`~tem_keras.training.fit` call (``None``: chosen from the data).

    Attributes
    ----------
    model : str or dict, optional
        Registry name or ``{"name": ..., **kwargs}``; ``None``: a residual UNet whose receptive
        field covers the large particles (:func:`~tem_keras.training.plan.choose_model`).
    recipe : {"default", "paper"}
        Where the optimiser settings left at ``None`` come from (see the module docstring).
    time_limit : float or str, optional
        Training budget (``"10min"``); with ``epochs`` unset, the number of epochs is planned to
        fill it. ``None`` with ``epochs`` unset: 9 minutes on a CPU (the call ends within 10), 20 on a
        GPU, for up to 50 training images; 3 s more per image beyond, at most 30 minutes.
    epochs, steps_per_epoch, batch_size, patch_size : int, optional
        An epoch is ``steps_per_epoch`` optimiser steps of ``batch_size`` random patches per replica.
    learning_rate, weight_decay : float, optional
    optimizer : {"adam", "adamw"}, optional
    schedule : {"cosine", "constant"}, optional
        Cosine: linear warm-up over 5 % of the steps, cosine decay to zero at the last step.
    loss : str, optional
        See :func:`tem_keras.training.losses.get_loss`.
    foreground_fraction : float, optional
        Share of patches centred on a particle pixel.
    patience : int, optional
        Early stopping after this many epochs without a better validation dice (``None``: none).
    folds : int, optional
        Train one model per fold of a k-fold split of the non-test images (see ``fit``).
    split : tuple of 3 floats
    augment : bool
    seed : int
    mixed_precision : str
    pretrained : {"auto", "tem", None}
        Initial weights: ``"tem"`` the shipped weights pre-trained on synthetic micrographs
        (:mod:`tem_keras.models.tem_weights`; an error for a model without them), ``"auto"`` those
        where the model has them, ``None`` a random initialisation.
    """

    model: object = None
    recipe: str = "default"
    time_limit: object = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    schedule: str | None = None
    loss: object = None
    foreground_fraction: float | None = None
    patience: int | None = None
    folds: int | None = None
    split: tuple = (0.7, 0.1, 0.2)
    augment: bool = True
    seed: int = 0
    mixed_precision: str = "auto"
    pretrained: str | None = "auto"

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        object.__setattr__(self, "time_limit", parse_duration(self.time_limit))
        for name in ("epochs", "steps_per_epoch", "batch_size", "patience"):
            _positive_int(name, getattr(self, name))
        _positive_int("patch_size", self.patch_size)
        if self.patch_size is not None and self.patch_size < 8:
            raise ValueError(f"patch_size must be at least 8 px, got {self.patch_size}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int)
                                       or self.folds < 2):
            raise ValueError(f"folds must be an integer ≥ 2, got {self.folds!r}")
        _number("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        _number("weight_decay", self.weight_decay, 0.0, 1.0)
        _number("foreground_fraction", self.foreground_fraction, 0.0, 1.0)
        if self.optimizer not in (None, "adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in (None, "cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        from ..hardware import PRECISIONS, PRECISION_ALIASES

        if self.mixed_precision not in PRECISIONS and self.mixed_precision not in PRECISION_ALIASES:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.pretrained not in ("auto", "tem", None):
            raise ValueError(f"pretrained must be 'auto', 'tem' or None, got {self.pretrained!r}")
        split = tuple(self.split)
        if (len(split) != 3 or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in split)
                or any(not math.isfinite(f) or f < 0 for f in split) or split[0] <= 0 or sum(split) > 1 + 1e-9):
            raise ValueError("split must be three non-negative fractions (train, val, test) with "
                             f"train > 0 and a sum of at most 1, got {self.split!r}")
        object.__setattr__(self, "split", split)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def with_recipe(self) -> "TrainingConfig":
        """A copy with the fields left at ``None`` filled from the recipe (not those the plan sets)."""
        recipe = RECIPES[self.recipe]
        return replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None
                                and k not in ("patience",)},
                       patience=self.patience if self.patience is not None else recipe["patience"])

    def to_dict(self) -> dict:
        """JSON-ready dict (``from_dict`` restores it)."""
        out = asdict(self)
        out["split"] = list(self.split)
        if not isinstance(self.loss, (str, type(None))):
            out["loss"] = repr(self.loss)
        return out

    @classmethod
    def from_dict(cls, config: dict) -> "TrainingConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if k == "split" else v for k, v in config.items() if k in names})


def check_fit_arguments(dataset_dir, *, run_dir=None, devices=None, resume=True, overwrite=False,
                        preprocessing=None, pairing="stem", labels="masks", particles="auto", verbose=1,
                        plan=None, images=None, masks=None) -> None:
    """``fit``'s arguments other than the training options (those :class:`TrainingConfig` checks),
    before any file is read or written (also used by ``plan`` and ``sweep``)."""
    from ..data.preprocess import Preprocessing
    from ..validation import check_bool, check_choice, check_devices, check_int, check_path

    check_path("dataset_dir", dataset_dir, what="a dataset folder")
    check_path("run_dir", run_dir, optional=True, what="a run folder")
    check_path("plan", plan, optional=True, what="a plan file")
    check_devices(devices)
    check_bool("resume", resume)
    check_bool("overwrite", overwrite)
    check_choice("pairing", pairing, ("stem", "sorted"))
    check_choice("labels", labels, ("masks", "auto"))
    check_choice("particles", particles, ("auto", "dark", "bright"))
    if not isinstance(verbose, bool):  # True / False as 1 / 0
        check_int("verbose", verbose, 0, 2)
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"preprocessing must be a Preprocessing or None, got {type(preprocessing).__name__}")
    for name, value in (("images", images), ("masks", masks)):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            check_path(name, item, optional=True, what="a folder or a list of folders")
