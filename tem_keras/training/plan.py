"""The training plan: patch size, batch, steps, epochs and model, chosen from the data and the hardware.

Like nnU-Net's self-configuration [1]_, the plan is derived from what the data set shows: the
sizes of the particles in the masks decide the receptive field the model needs — Sytwu et al. [2]_
show that a receptive field too small for the particles is what limits segmentation — and so its
depth; the smallest image bounds the patch; the time budget and a measured step time give the
number of epochs. Every value the user set explicitly is kept. The plan is printed before training
and stored in the run's ``config.json``.

References
----------
.. [1] Isensee, F. et al. nnU-Net: a self-configuring method for deep learning-based biomedical
   image segmentation. Nat. Methods 18, 203-211 (2021).
.. [2] Sytwu, K., Groschner, C. & Scott, M. C. Understanding the influence of receptive field and
   network complexity in neural network-guided TEM image analysis. Microsc. Microanal. 28,
   1896-1904 (2022).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Plan", "MAX_EPOCHS", "POOL_LADDER", "particle_diameters", "large_diameter", "choose_model",
           "default_time_limit", "plan_training", "pretrained_key", "check_plan"]

#: per-replica batch of 256² patches on a CPU and on a GPU (scaled for other patch sizes)
_BATCH_256 = {"cpu": 8, "gpu": 16}
#: training budget of ``fit(DIR)`` when neither epochs nor a time limit is given, for up to
#: :data:`_BUDGET_IMAGES` training images; it grows by :data:`_SECONDS_PER_IMAGE` per image beyond,
#: up to :data:`_MAX_TIME_LIMIT`
_TIME_LIMIT = {"cpu": 540.0, "gpu": 1200.0}
_BUDGET_IMAGES, _SECONDS_PER_IMAGE, _MAX_TIME_LIMIT = 50, 3.0, 1800.0
#: upper bound of the epochs of a run
MAX_EPOCHS = 1000
#: a budget-planned run validates this many times (the best epoch is chosen in the last two thirds)
TARGET_EPOCHS = 12
#: at most this share of a budget-planned run goes to validation (fewer monitored images when needed)
VALIDATION_SHARE = 0.08
#: validation images monitored after every epoch, at most (all of them choose the threshold at the end)
MAX_MONITORED = 16


def particle_diameters(masks) -> np.ndarray:
    """Equivalent-circle diameters (px) of the connected foreground regions of all ``masks``."""
    from scipy import ndimage

    diameters = []
    for mask in masks:
        labels, n = ndimage.label(np.asarray(mask) > 0)
        if n:
            areas = np.bincount(labels.ravel())[1:]
            diameters.append(np.sqrt(4.0 * areas / np.pi))
    return np.concatenate(diameters) if diameters else np.zeros(0)


#: pool sizes of the planned residual UNets, by receptive field: 96, 200, 280 and 504 px. Past
#: four blocks the receptive field grows by larger pools (Sytwu et al.), not by more parameters.
POOL_LADDER = ((2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 4), (2, 2, 4, 4))


def large_diameter(diameters_px, share: float = 0.9) -> float:
    """The diameter (px) up to which particles hold ``share`` of the particle area: the 90th
    percentile weighted by area (∝ d²), so that a few large particles among thousands of small
    ones (a mixed collection) still count by the pixels they cover.

    >>> large_diameter([5.0] * 1000 + [200.0] * 10)   # 1 % of the particles, difference in area
    200.0
    >>> large_diameter([10.0] * 50)
    10.0
    """
    d = np.sort(np.asarray(diameters_px, float))
    if not d.size:
        return 0.0
    area = np.cumsum(d ** 2)
    return float(d[min(int(np.searchsorted(area, share * area[-1])), d.size - 1)])


def choose_model(diameters_px, *, base_filters: int = 16) -> dict:
    """A residual UNet whose receptive field covers the large particles with context around them.

    The receptive field must reach at least twice the large-particle diameter
    (:func:`large_diameter`: 90 % of the particle area lies in particles up to it) plus 16 px (a
    particle and as much again of its surroundings, so the model sees the support on both sides of
    an edge). The first pool configuration of :data:`POOL_LADDER` that reaches it is taken (the
    last one when none does).

    Returns
    -------
    dict
        ``{"name": "residual_unet", "n_blocks": N, "base_filters": ..., "pool_sizes": [...]}``.
    """
    from ..models.receptive_fields import receptive_field
    from ..models.registry import build_model

    target = 2.0 * large_diameter(diameters_px) + 16.0
    for pools in POOL_LADDER:
        spec = {"name": "residual_unet", "n_blocks": len(pools), "base_filters": base_filters,
                "pool_sizes": list(pools)}
        if receptive_field(build_model({**spec, "base_filters": 1})) >= target:
            break
    return spec


def default_time_limit(device: str, n_images: int = 0) -> float:
    """Seconds ``fit(DIR)`` gives itself with no epochs and no time limit, for ``n_images``
    training images: 9 min on a CPU (20 on a GPU) up to 50 images, 3 s more per image beyond,
    at most 30 min.

    >>> default_time_limit("cpu", 12), default_time_limit("cpu", 230), default_time_limit("cpu", 1000)
    (540.0, 1080.0, 1800.0)
    """
    extra = _SECONDS_PER_IMAGE * max(0, int(n_images) - _BUDGET_IMAGES)
    return float(min(max(_TIME_LIMIT[device], _MAX_TIME_LIMIT), _TIME_LIMIT[device] + extra))


@dataclass
class Plan:
    """What :func:`~tem_keras.training.fit` will do, and why.

    ``epochs`` stays ``None`` until :meth:`fill_epochs` has a measured step time.
    """

    model: dict
    patch_size: int
    batch_size: int
    steps_per_epoch: int
    epochs: int | None
    time_limit_s: float | None
    device: str
    particle_diameter_px: dict = field(default_factory=dict)
    receptive_field_px: int | None = None
    step_seconds: float | None = None
    validation_seconds: float | None = None
    monitored_images: int | None = None
    planned_share: dict = field(default_factory=dict)
    pretrained: str | None = None
    labels: str | None = None
    notes: list = field(default_factory=list)

    def fill_epochs(self, step_seconds: float, image_seconds: float, remaining_s: float, *, n_val: int,
                    fixed_steps: bool = False) -> None:
        """Epochs, steps per epoch and monitored validation images that fit in ``remaining_s``.

        The budget is cut into about :data:`TARGET_EPOCHS` epochs, each ending with a validation on
        whole images. At most :data:`VALIDATION_SHARE` of the budget goes to validation: fewer
        validation images are monitored (at least one, at most :data:`MAX_MONITORED`) when all of
        them would cost more. Unless ``fixed_steps``, an epoch has as many steps (at least 4) as its
        share of the budget allows.

        Parameters
        ----------
        step_seconds : float
            Measured seconds of one optimiser step.
        image_seconds : float
            Measured seconds to predict one whole validation image.
        remaining_s : float
            Seconds left for training.
        n_val : int
            Validation images available.
        fixed_steps : bool
            Keep :attr:`steps_per_epoch` (the user set it).
        """
        step_seconds, image_seconds = max(float(step_seconds), 1e-6), max(float(image_seconds), 1e-6)
        affordable = VALIDATION_SHARE * remaining_s / (TARGET_EPOCHS * image_seconds)
        self.monitored_images = int(np.clip(math.floor(affordable), 1, max(1, min(n_val, MAX_MONITORED))))
        validation = self.monitored_images * image_seconds
        if not fixed_steps:
            self.steps_per_epoch = max(4, int((remaining_s / TARGET_EPOCHS - validation) / step_seconds))
        self.step_seconds, self.validation_seconds = step_seconds, validation
        self.epochs = int(np.clip(math.floor(remaining_s / (self.steps_per_epoch * step_seconds + validation)),
                                  1, MAX_EPOCHS))
        if self.time_limit_s:
            self.planned_share = {
                "optimiser_steps": round(self.epochs * self.steps_per_epoch * step_seconds / self.time_limit_s, 3),
                "validation": round(self.epochs * validation / self.time_limit_s, 3)}

    def summary(self) -> str:
        """The plan in a few lines, as printed before training."""
        d = self.particle_diameter_px
        model = ", ".join(f"{k}={v}" for k, v in self.model.items() if k not in ("name", "num_classes"))
        lines = [f"plan: {self.model.get('name')}({model})"
                 + (f", receptive field {self.receptive_field_px} px" if self.receptive_field_px else "")
                 + (f", starting from the TEM pre-trained weights {self.pretrained}" if self.pretrained else ""),
                 f"      particles: median {d.get('median', float('nan')):.0f} px across, 90 % of their area in "
                 f"particles up to {d.get('large', d.get('p90', float('nan'))):.0f} px ({d.get('count', 0)} in "
                 "the training masks)",
                 f"      {self.patch_size}² px random patches, batch {self.batch_size}, "
                 f"{self.steps_per_epoch} steps per epoch, {self.epochs} epoch{'' if self.epochs == 1 else 's'}"
                 + (f" ({self.step_seconds:.2f} s per step)" if self.step_seconds else "")
                 + (f", time limit {self.time_limit_s / 60:.1f} min" if self.time_limit_s else "")]
        if self.labels:
            lines.append(f"      {self.labels}")
        if self.planned_share:
            share = self.planned_share
            lines.append(f"      budget: {100 * share['optimiser_steps']:.0f} % in optimiser steps, "
                         f"{100 * share['validation']:.0f} % validating {self.monitored_images} whole image(s) "
                         f"after each epoch; the rest reads, plans and scores (--time-limit to shorten)")
        lines += [f"      note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_training(config, train_images, train_masks, *, num_classes: int, device: str = "cpu",
                  replicas: int = 1) -> Plan:
    """Fill what ``config`` (a :class:`~tem_keras.training.config.TrainingConfig` with its recipe
    applied) leaves open from the training images and masks.

    Parameters
    ----------
    config : TrainingConfig
    train_images, train_masks : list of ndarray ``[H, W]``
    num_classes : int
    device : {"cpu", "gpu"}
    replicas : int
        Devices a batch is split across (the global batch is ``batch_size × replicas``).
    """
    from ..data.sampling import clamp_patch_size
    from ..models.receptive_fields import downsampling_factor, receptive_field
    from ..models.registry import build_model

    diameters = particle_diameters(train_masks)
    stats = {"count": int(diameters.size),
             "median": float(np.median(diameters)) if diameters.size else float("nan"),
             "p90": float(np.percentile(diameters, 90)) if diameters.size else float("nan"),
             "large": large_diameter(diameters) if diameters.size else float("nan")}
    notes = []
    if config.model is None:
        spec = choose_model(diameters)
    elif isinstance(config.model, str):
        spec = {"name": config.model}
    else:
        spec = dict(config.model)
    spec = {**spec, "num_classes": spec.get("num_classes", num_classes)}
    probe = build_model(dict(spec))
    factor = downsampling_factor(probe)
    rf = receptive_field(probe)
    # 256² patches whatever the receptive field: more patches per step beat larger ones in a CPU
    # budget (a 512² patch costs four 256² ones), and a 4 × 4 bottleneck still sees 256 px
    wanted = config.patch_size or 256
    shapes = [i.shape for i in train_images]
    patch = clamp_patch_size(wanted, shapes, factor)
    if patch < wanted:
        smallest = min(min(s) for s in shapes)
        notes.append(f"patch size {wanted} → {patch} px: the smallest training image is {smallest} px "
                     f"(patches are multiples of the model's down-sampling factor {factor})")
    batch = config.batch_size or max(2, int(round(_BATCH_256[device] * (256 / patch) ** 2)))
    if config.steps_per_epoch:
        steps = config.steps_per_epoch
    else:  # an epoch ≈ two looks at every training pixel, 4..50 steps
        pixels = sum(h * w for h, w in shapes)
        steps = int(np.clip(math.ceil(2 * pixels / (batch * replicas * patch * patch)), 4, 50))
    time_limit = config.time_limit
    if time_limit is None and config.epochs is None:
        time_limit = default_time_limit(device, len(train_images))
    return Plan(model=spec, patch_size=patch, batch_size=batch, steps_per_epoch=steps,
                epochs=config.epochs, time_limit_s=time_limit, device=device,
                particle_diameter_px=stats, receptive_field_px=int(rf),
                pretrained=pretrained_key(config.pretrained, spec), notes=notes)


def pretrained_key(pretrained: str | None, spec) -> str | None:
    """The shipped weight file to start ``spec`` from, for ``fit``'s ``pretrained`` option.

    Raises
    ------
    ValueError
        ``pretrained="tem"`` for a model without shipped weights.
    """
    from ..models.tem_weights import available_keys, weights_key

    key = weights_key(spec)
    if pretrained is None or (pretrained == "auto" and key not in available_keys()):
        return None
    if key not in available_keys():
        name = spec.get("name") if isinstance(spec, dict) else spec
        raise ValueError(f"pretrained='tem': there are no pre-trained TEM weights for {name} "
                         f"({key or 'not a residual UNet with 1 channel'}); shipped: "
                         f"{', '.join(available_keys()) or 'none'}. Use pretrained=None (--pretrained none).")
    return key


def check_plan(plan: Plan, shapes, num_classes: int) -> Plan:
    """``plan`` (edited by a user) checked against the training images' ``shapes`` and classes.

    The model must build with ``num_classes`` outputs; the patch must be a multiple of its
    down-sampling factor no larger than the smallest image; batch, steps and epochs positive
    integers; epochs or a time limit given.

    Raises
    ------
    ValueError
        Naming the field and what is wrong.
    """
    from ..models.receptive_fields import downsampling_factor, receptive_field
    from ..models.registry import build_model

    def positive(name, value, optional=False):
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"plan: {name} must be a positive integer{' or null' if optional else ''}, got {value!r}")

    if not isinstance(plan.model, dict) or "name" not in plan.model:
        raise ValueError(f"plan: model must be {{\"name\": ..., builder options}}, got {plan.model!r}")
    if plan.model.get("num_classes", num_classes) != num_classes:
        raise ValueError(f"plan: model has num_classes={plan.model['num_classes']} but the masks have "
                         f"{num_classes} classes")
    try:
        probe = build_model({**plan.model, "num_classes": num_classes})
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"plan: model {plan.model!r} does not build: {error}") from None
    positive("patch_size", plan.patch_size)
    positive("batch_size", plan.batch_size)
    positive("steps_per_epoch", plan.steps_per_epoch, optional=True)
    positive("epochs", plan.epochs, optional=True)
    if plan.epochs is not None and plan.steps_per_epoch is None:
        raise ValueError("plan: epochs set but steps_per_epoch null: give both, or neither (from the time limit)")
    factor, smallest = downsampling_factor(probe), min(min(s) for s in shapes)
    if plan.patch_size % factor or plan.patch_size > smallest:
        raise ValueError(f"plan: patch_size {plan.patch_size} must be a multiple of the model's down-sampling "
                         f"factor {factor} and at most the smallest training image ({smallest} px)")
    if plan.time_limit_s is not None and (isinstance(plan.time_limit_s, bool)
                                          or not isinstance(plan.time_limit_s, (int, float))
                                          or not math.isfinite(plan.time_limit_s) or plan.time_limit_s <= 0):
        raise ValueError(f"plan: time_limit_s must be positive seconds or null, got {plan.time_limit_s!r}")
    if plan.epochs is None and plan.time_limit_s is None:
        raise ValueError("plan: give epochs or time_limit_s (both are null)")
    plan.model = {**plan.model, "num_classes": num_classes}
    plan.receptive_field_px = int(receptive_field(probe))
    plan.pretrained = pretrained_key("auto", plan.model) if plan.pretrained else None  # follows an edited model
    return plan
