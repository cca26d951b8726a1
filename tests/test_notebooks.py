"""Execute every example notebook top to bottom with ``FAST = True`` and check what it produces.

Each notebook runs in a fresh kernel (``python3``: jupyter_client starts it with this
interpreter, ``sys.executable``, so the kernel imports the tem_keras under test) in a temporary
working directory, with the ``FAST = False`` line of its ``parameters`` cell replaced by
``FAST = True`` (tiny data, a few training steps), two notebooks at a time. They write into
``tem_keras_nbXX/`` below the working directory; the checks read those files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 600


def test_notebooks_are_present_and_clean():
    """Six notebooks, no committed outputs, a ``parameters`` cell first with ``FAST = False``."""
    assert len(NAMES) == 6, NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code_cells[0].metadata.get("tags", []), name
        assert "FAST = False" in code_cells[0].source, name
        assert all(not c.outputs and c.execution_count is None for c in code_cells), \
            f"{name}: clear the outputs before committing"
        assert any(c.cell_type == "markdown" and "Use your own data" in c.source for c in nb.cells), name
        # a markdown cell starting with four spaces renders as a code block
        assert not [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(" ")], name


def _fast(nb):
    """Set ``FAST = True`` in the cell tagged ``parameters``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            assert "FAST = False" in cell.source
            cell.source = cell.source.replace("FAST = False", "FAST = True", 1)
            return nb
    raise AssertionError("no cell tagged 'parameters'")


#: notebooks executed at once: each kernel is mostly one busy Python thread, so two share a
#: 2-core machine well (the six took 183 s instead of about 250 s one after the other)
PARALLEL = 2


@contextlib.contextmanager
def _kernel_imports_this_checkout():
    """Kernels started inside import the same tem_keras as this test (editable install or checkout)."""
    before = os.environ.get("PYTHONPATH")
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = root + (os.pathsep + before if before else "")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def executed(request, tmp_path_factory):
    """The selected notebooks executed with ``FAST = True``, ``PARALLEL`` at a time, each in a fresh
    kernel and its own working directory: name → (working directory, notebook, error or None)."""
    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_notebook_runs"]

    async def run(name, gate):
        async with gate:
            workdir = tmp_path_factory.mktemp(name[:2])
            nb = _fast(nbformat.read(NOTEBOOKS / name, as_version=4))
            client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=TIMEOUT_S,
                                             resources={"metadata": {"path": str(workdir)}})
            try:
                await client.async_execute()
            except Exception as error:  # reported by the notebook's own test
                return name, (workdir, nb, error)
            return name, (workdir, nb, None)

    async def run_all():
        gate = asyncio.Semaphore(PARALLEL)
        return dict(await asyncio.gather(*(run(name, gate) for name in names)))

    with _kernel_imports_this_checkout():
        return asyncio.run(run_all())


def _text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(o.get("data", {}).get("text/plain", ""))
            out.append(o.get("data", {}).get("text/markdown", ""))
    return "\n".join(out)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_kernel_runs_this_interpreter(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, tem_keras\nprint(sys.executable)\nprint(tem_keras.__file__)")])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    lines = nb.cells[0].outputs[0]["text"].split()
    assert Path(lines[0]).resolve() == Path(sys.executable).resolve()
    import tem_keras

    assert Path(lines[1]).resolve() == Path(tem_keras.__file__).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, executed):
    tmp_path, nb, error = executed[name]
    if error is not None:
        raise error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.get("output_type") == "error"]
    assert not errors, errors
    assert _images(nb) >= 1, "no figure was shown"
    check = CHECKS.get(name[:2])
    if check:
        check(tmp_path, nb)


def _check_01(tmp, nb):
    work = tmp / "tem_keras_nb01"
    summary = json.loads((work / "summary.json").read_text())
    assert 0.0 <= summary["test_dice_per_image"] <= 1.0
    assert summary["particles_true"] > 0
    assert (work / "particles.csv").is_file()
    assert (work / "export" / "saved_model" / "saved_model.pb").is_file()
    assert (work / "run" / "best.keras").is_file()


def _check_02(tmp, nb):
    import pandas as pd

    work = tmp / "tem_keras_nb02"
    results = pd.read_csv(work / "results.csv")
    assert len(results) == 4   # 2 receptive fields + batch norm off/on in FAST mode
    assert results["dice_mean"].between(0, 1).all()
    rf = results[results["sweep"] == "receptive field"]
    assert rf["receptive_field_px"].tolist() == [44, 120]
    assert rf["parameters"].nunique() == 1
    assert (work / "sweep_rf" / "dice_vs_receptive_field.png").is_file()
    assert "shallow_cnn_wide" in _text(nb)   # the model table


def _check_03(tmp, nb):
    import pandas as pd

    work = tmp / "tem_keras_nb03"
    matches = pd.read_csv(work / "kernel_matches.csv")
    assert len(matches) == 32
    assert matches["abs_correlation"].between(0, 1).all()
    cams = pd.read_csv(work / "grad_cam_by_layer.csv")
    assert set(cams["method"]) == {"gradcam", "gradcam++"}
    assert cams[["on particles", "on support"]].ge(0).all().all()
    erf = pd.read_csv(work / "effective_receptive_field.csv")
    assert (erf["95 % of the gradient (px)"] <= erf["gradient support (px)"]).all()
    assert _images(nb) >= 6


def _check_04(tmp, nb):
    import pandas as pd

    work = tmp / "tem_keras_nb04"
    tracks = pd.read_csv(work / "particle_tracks.csv")
    assert {"frame", "particle", "equivalent_diameter_nm", "time_s"} <= set(tracks.columns)
    summary = json.loads((work / "summary.json").read_text())
    assert summary["frames"] == 5
    assert 0.0 <= summary["mean_dice"] <= 1.0
    routes = json.loads((work / "routes.json").read_text())  # the few-label section
    assert set(routes) == {"full supervision", "label-free", "2 masks", "pseudo-labels"}
    assert all(0.0 <= v <= 1.0 for v in routes.values())
    assert (work / "run_label_free" / "selftrain.json").is_file()


def _check_05(tmp, nb):
    import pandas as pd

    comparison = pd.read_csv(tmp / "tem_keras_nb05" / "comparison.csv", index_col=0)
    assert list(comparison.index) == ["FCN-8s, pretrained VGG16", "UNet from scratch"]
    assert comparison["dice (test images)"].between(0, 1).all()
    assert comparison.loc["FCN-8s, pretrained VGG16", "parameters"] > 100 * comparison.loc[
        "UNet from scratch", "parameters"]


def _check_06(tmp, nb):
    import pandas as pd

    work = tmp / "tem_keras_nb06"
    assert "done without tem_keras" in _text(nb)
    check = pd.read_csv(work / "check.csv")
    assert len(check) == 3
    assert (check["max |difference|"] < 1e-4).all()
    assert (work / "export" / "tem_keras.json").is_file()


CHECKS = {"01": _check_01, "02": _check_02, "03": _check_03, "04": _check_04, "05": _check_05,
          "06": _check_06}
