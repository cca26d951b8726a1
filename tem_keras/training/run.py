"""``Run``: a finished (or loaded) training run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TEMInputError

__all__ = ["Run"]


@dataclass
class Run:
    """A finished (or loaded) training run.

    Attributes
    ----------
    path : Path
        The run folder.
    model : keras.Model
        The model with the best validation weights.
    config : dict
        Contents of ``config.json``.
    history : pandas.DataFrame
        One row per epoch.
    metrics : dict
        Test-split scores (``metrics.json``).
    split : dict
        Stems of the train/val/test images.
    """

    path: Path
    model: object
    config: dict
    history: object = None
    metrics: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path) -> "Run":
        """Open a run folder (the best model, config, history, metrics and split)."""
        import keras
        import pandas as pd

        from .. import models  # noqa: F401  (registers the custom layers)

        path = Path(path)
        for name in ("config.json", "best.keras"):
            if not (path / name).is_file():
                raise TEMInputError(f"not a finished tem_keras run folder: {name} is missing", path)
        config = json.loads((path / "config.json").read_text())
        model = keras.saving.load_model(path / "best.keras", compile=False)
        try:
            history = pd.read_csv(path / "history.csv")
        except (FileNotFoundError, pd.errors.EmptyDataError):  # no epoch finished yet
            history = None
        read = lambda n: json.loads((path / n).read_text()) if (path / n).is_file() else {}  # noqa: E731
        return cls(path, model, config, history, read("metrics.json"), read("split.json"))

    @property
    def preprocessing(self):
        from ..data.preprocess import Preprocessing

        return Preprocessing.from_dict(self.config["preprocessing"])

    @property
    def pixel_size_nm(self):
        return self.config.get("pixel_size_nm")

    def predict(self, image, **kwargs):
        """Class probabilities ``[H, W, C]`` for one image (array or file); see :func:`predict_image`."""
        from ..inference import predict_image

        return predict_image(self.model, image, preprocessing=self.preprocessing, **kwargs)

    def __repr__(self):
        dice = self.metrics.get("per_image", {}).get("dice")
        test = f"test dice {dice['mean']:.3f} ± {dice['std']:.3f} per image" if dice else "no test images"
        return f"Run({str(self.path)!r}, model={self.model.name!r}, {test})"
