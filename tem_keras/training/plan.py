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

__all__ = ["Plan", "MAX_EPOCHS", "POOL_LADDER", "particle_diameters", "choose_model", "default_time_limit",
           "plan_training", "pretrained_key"]

#: per-replica batch of 256² patches on a CPU and on a GPU (scaled for other patch sizes)
_BATCH_256 = {"cpu": 8, "gpu": 16}
#: training budget of ``fit(DIR)`` when neither epochs nor a time limit is given
_TIME_LIMIT = {"cpu": 540.0, "gpu": 1200.0}
#: upper bound of the epochs of a run
MAX_EPOCHS = 1000


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


def choose_model(diameters_px, *, base_filters: int = 16) -> dict:
    """A residual UNet whose receptive field covers the large particles with context around them.

    The receptive field must reach at least twice the 90th-percentile particle diameter plus
    16 px (a particle and as much again of its surroundings, so the model sees the support on both
    sides of an edge). The first pool configuration of :data:`POOL_LADDER` that reaches it is
    taken (the last one when none does).

    Returns
    -------
    dict
        ``{"name": "residual_unet", "n_blocks": N, "base_filters": ..., "pool_sizes": [...]}``.
    """
    from ..models.receptive_field import receptive_field
    from ..models.registry import build_model

    d = np.asarray(diameters_px, float)
    large = float(np.percentile(d, 90)) if d.size else 0.0
    target = 2.0 * large + 16.0
    for pools in POOL_LADDER:
        spec = {"name": "residual_unet", "n_blocks": len(pools), "base_filters": base_filters,
                "pool_sizes": list(pools)}
        if receptive_field(build_model({**spec, "base_filters": 1})) >= target:
            break
    return spec


def default_time_limit(device: str) -> float:
    """Seconds of training ``fit(DIR)`` gives itself with no epochs and no time limit."""
    return _TIME_LIMIT[device]


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
    pretrained: str | None = None
    notes: list = field(default_factory=list)

    def fill_epochs(self, step_seconds: float, validation_seconds: float, remaining_s: float, *,
                    fixed_steps: bool = False, min_epochs: int = 10) -> None:
        """Epochs that fit in ``remaining_s`` seconds at the measured speeds.

        Unless ``fixed_steps``, epochs are shortened (to no fewer than 4 steps) when fewer than
        ``min_epochs`` would fit, so that the best epoch is chosen among enough checkpoints.
        """
        self.step_seconds = float(step_seconds)
        self.validation_seconds = float(validation_seconds)

        def fitting(steps):
            return int(math.floor(remaining_s / max(steps * step_seconds + validation_seconds, 1e-6)))

        if not fixed_steps and fitting(self.steps_per_epoch) < min_epochs and self.steps_per_epoch > 4:
            shorter = int((remaining_s / min_epochs - validation_seconds) / max(step_seconds, 1e-6))
            shorter = int(np.clip(shorter, 4, self.steps_per_epoch))
            if shorter < self.steps_per_epoch:
                self.notes.append(f"{self.steps_per_epoch} → {shorter} steps per epoch, so that the "
                                  "budget holds enough epochs to choose the best from")
                self.steps_per_epoch = shorter
        self.epochs = int(np.clip(fitting(self.steps_per_epoch), 1, MAX_EPOCHS))

    def summary(self) -> str:
        """The plan in a few lines, as printed before training."""
        d = self.particle_diameter_px
        model = ", ".join(f"{k}={v}" for k, v in self.model.items() if k not in ("name", "num_classes"))
        lines = [f"plan: {self.model.get('name')}({model})"
                 + (f", receptive field {self.receptive_field_px} px" if self.receptive_field_px else "")
                 + (f", starting from the TEM pre-trained weights {self.pretrained}" if self.pretrained else ""),
                 f"      particles: median {d.get('median', float('nan')):.0f} px, 90th percentile "
                 f"{d.get('p90', float('nan')):.0f} px across ({d.get('count', 0)} in the training masks)",
                 f"      {self.patch_size}² px random patches, batch {self.batch_size}, "
                 f"{self.steps_per_epoch} steps per epoch, {self.epochs} epochs"
                 + (f" ({self.step_seconds:.2f} s per step)" if self.step_seconds else "")
                 + (f", time limit {self.time_limit_s / 60:.1f} min" if self.time_limit_s else "")]
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
    from ..models.receptive_field import downsampling_factor, receptive_field
    from ..models.registry import build_model

    diameters = particle_diameters(train_masks)
    stats = {"count": int(diameters.size),
             "median": float(np.median(diameters)) if diameters.size else float("nan"),
             "p90": float(np.percentile(diameters, 90)) if diameters.size else float("nan")}
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
    wanted = config.patch_size or (256 if rf <= 256 else 512)
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
        time_limit = default_time_limit(device)
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
