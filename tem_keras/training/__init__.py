"""Training: ``fit`` (one call from a dataset folder to a run folder), its config and plan, ``sweep``.

Modules: :mod:`.config` (``TrainingConfig``, recipes), :mod:`.plan` (self-configuration from the
data), :mod:`.fitting` (``fit``), :mod:`.callbacks` (whole-image validation, schedule, time budget),
:mod:`.heldout` (per-image scores and the threshold), :mod:`.folds` (k-fold ensembles),
:mod:`.sweeps` (``sweep``); ``Run`` lives in :mod:`tem_keras.artifacts`.
"""

from .config import RECIPES, TrainingConfig, parse_duration
from .fitting import fit
from .plan import Plan, plan_training
from ..artifacts import Run
from .sweeps import sweep

__all__ = ["fit", "sweep", "Run", "TrainingConfig", "RECIPES", "Plan", "plan_training", "parse_duration"]
