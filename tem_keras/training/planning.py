"""An editable plan: see what ``fit`` will do before it trains, change it, train from it.

``tem_keras.plan(DIR, "plan.json")`` (``tem-keras plan DIR -o plan.json``) writes the data's
fingerprint (images per split, image and pixel sizes, particle diameters, class fractions, stored
intensities), the plan ``fit(DIR)`` would follow (model, patch, batch, time limit, warm start) and
the split. Epochs and steps per epoch stay ``null`` until ``fit`` measures a training step, unless
set. ``fit(DIR, plan="plan.json")`` trains from the file: its ``plan`` and ``split`` sections, as
edited, checked against the data (:func:`~tem_keras.training.plan.check_plan`). Like nnU-Net's
``plans.json`` [1]_, the fingerprint is for reading; the plan is for editing.

References
----------
.. [1] Isensee, F. et al. nnU-Net: a self-configuring method for deep learning-based biomedical
   image segmentation. Nat. Methods 18, 203-211 (2021).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from ..validation.files import check_split
from ..validation import check_path
from .config import TrainingConfig, check_fit_arguments

__all__ = ["plan", "read_plan_file", "EDITABLE"]

#: the plan fields a user may edit (the others are derived and recomputed)
EDITABLE = ("model", "patch_size", "batch_size", "steps_per_epoch", "epochs", "time_limit_s", "pretrained")


def plan(dataset_dir, out=None, *, config: TrainingConfig | None = None, labels: str = "masks",
         particles: str = "auto", preprocessing=None, overwrite: bool = False, verbose: int = 1) -> dict:
    """The fingerprint and plan of ``fit(dataset_dir, config=config)``, written to ``out`` (JSON).

    Parameters
    ----------
    dataset_dir : str or Path
        A dataset folder (see :func:`tem_keras.data.discover`).
    out : str or Path, optional
        The JSON file to write (refused when it exists, unless ``overwrite``).
    config : TrainingConfig, optional
        Options as ``fit`` takes them (default: ``fit``'s defaults).
    labels, particles, preprocessing
        As for :func:`~tem_keras.training.fit`.

    Returns
    -------
    dict
        ``{"fingerprint": ..., "plan": ..., "split": ..., "request": ..., "editable": [...]}``.
    """
    import tensorflow as tf

    from ..io import read_image
    from .inputs import fingerprint, read_training_inputs
    from .plan import plan_training

    check_fit_arguments(dataset_dir, preprocessing=preprocessing, labels=labels, particles=particles,
                        overwrite=overwrite, verbose=verbose)
    check_path("out", out, optional=True, what="a JSON file")
    config = config or TrainingConfig()
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    folder = None
    if out is not None:  # never over a file tem_keras did not write (dataset.json, the user's notes)
        from ..io.outputs import OutputFolder

        out = Path(out)
        folder = OutputFolder(out.parent)
        folder.check(out.name, overwrite=overwrite)
    inputs = read_training_inputs(dataset_dir, config, labels=labels, particles=particles,
                                  preprocessing=preprocessing, verbose=verbose)
    device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    images, masks, _ = inputs.read["train"]
    planned = plan_training(config.with_recipe(), images, masks, num_classes=inputs.dataset.num_classes,
                            device=device)
    planned.labels = inputs.labels
    by_stem = {s.stem: s for s in inputs.dataset.labelled}
    raw = [np.percentile(np.asarray(read_image(by_stem[stem].image).data, np.float64), (1, 50, 99))
           for name in ("train", "val", "test") for stem in inputs.split[name]]
    record = {"fingerprint": fingerprint(inputs, raw), "plan": planned.to_dict(), "split": inputs.split,
              "request": config.to_dict(), "editable": list(EDITABLE),
              "note": "edit the fields of 'plan' listed in 'editable' (null epochs / steps_per_epoch: from "
                      "the time limit) and 'split', then fit(DIR, plan=THIS_FILE)"}
    if out is not None:
        folder.claim(out.name, overwrite=overwrite).write_text(json.dumps(record, indent=2, default=float) + "\n")
    if verbose:
        print(planned.summary(), flush=True)
    return record


def read_plan_file(path) -> tuple:
    """``(Plan, split or None)`` from a file written by :func:`plan` (and maybe edited).

    Raises
    ------
    TEMInputError
        Unreadable JSON, no ``plan`` section, unknown fields, or a split that is not three lists
        of image names — naming the file and the field.
    """
    from .plan import Plan

    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as error:
        raise TEMInputError(f"cannot read the plan ({error.strerror or error})", path) from None
    except ValueError as error:
        raise TEMInputError(f"not valid JSON ({error})", path) from None
    if not isinstance(record, dict) or not isinstance(record.get("plan"), dict):
        raise TEMInputError("no 'plan' section: write one with `tem-keras plan DIR -o FILE`", path)
    known = {f.name for f in fields(Plan)}
    unknown = sorted(set(record["plan"]) - known)
    if unknown:
        raise TEMInputError(f"unknown plan field(s) {unknown}; editable: {list(EDITABLE)}", path)
    try:
        planned = Plan(**record["plan"])
    except TypeError as error:
        raise TEMInputError(f"incomplete plan ({error})", path) from None
    planned.planned_share, planned.step_seconds, planned.validation_seconds = {}, None, None
    split = check_split(record.get("split"), path)  # lists of names, no image in two splits
    return planned, ({k: list(split.get(k, [])) for k in ("train", "val", "test")} if split else None)
