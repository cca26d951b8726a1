"""Shared fixtures: the real data beside the checkout, one tiny synthetic data set, one tiny trained
run and one export of it.

The run and the export are made once per session and shared by the test files that only need *a*
trained model (inference, export, explain, command line); tests that check learning train their
own. Treat them as read-only: a test that changes a run or export folder copies it first
(``copy_of``).

Test tiers: ``pytest -m "not slow"`` is the fast tier; ``python -m pytest -q`` (the README's
command, CI) runs everything. ``slow`` marks the demo, the notebooks, multi-process training and
large images (registered in setup.cfg). Both tiers run on one worker process per core (pytest-xdist,
``--dist=loadfile``: a test file stays on one worker, so its module fixtures are built once);
the slow tests are handed out first so that the longest files do not finish last on one worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: the network of the shared run: a UNet of depth 2 with 4 base filters (down-sampling 4)
TINY_MODEL = {"name": "unet", "depth": 2, "base_filters": 4}
#: the training settings of the shared run: 2 epochs of 2 steps of 2 random 64 px patches
TINY_TRAINING = dict(epochs=2, steps_per_epoch=2, patch_size=64, batch_size=2, augment=False,
                     mixed_precision="float32", verbose=0)


def pytest_collection_modifyitems(config, items):
    """Slow tests first (a stable sort: the order inside each group stays as collected)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Six 64² bright-field synthetic micrographs with exact masks (``images/``, ``masks/``,
    ``dataset.json``); read-only."""
    from tem_keras.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("tiny_dataset") / "data", n_images=6, size=64, seed=0,
                        progress=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A finished :class:`~tem_keras.artifacts.Run` of ``TINY_MODEL`` on ``tiny_dataset``
    (config.json, thresholds.json, metrics.json, best.keras, ...); read-only."""
    import tem_keras

    return tem_keras.fit(tiny_dataset, dict(TINY_MODEL), run_dir=tmp_path_factory.mktemp("tiny_run") / "run",
                         **TINY_TRAINING)


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """The export folder of ``tiny_run`` in every format available here; read-only."""
    import tem_keras

    return tem_keras.export(tiny_run, tmp_path_factory.mktemp("tiny_export") / "unet", verbose=False)


@pytest.fixture
def copy_of(tmp_path):
    """``copy_of(folder)``: a private copy of a shared (read-only) folder, for tests that change it."""
    def copy(folder: Path, name: str | None = None) -> Path:
        target = tmp_path / (name or Path(folder).name)
        shutil.copytree(folder, target)
        return target

    return copy
