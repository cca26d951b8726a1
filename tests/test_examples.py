"""The scripts in ``examples/`` run as a user runs them (``--fast``: tiny data, two training steps),
two at a time in their own processes, and refuse to replace a folder that holds files."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: script → its command line ({out}: the output folder) and files it must have written there
SCRIPTS = {
    "quickstart.py": (["{python}", "quickstart.py", "--fast", "--out", "{out}"],
                      ["particles.csv", "run/best.keras", "export/saved_model/saved_model.pb"]),
    "quickstart_cli.sh": (["bash", "quickstart_cli.sh", "{out}", "--fast"],
                          ["particles_from_masks.csv", "run/thresholds.json",
                           "export/saved_model/saved_model.pb"]),
    "insitu_video.py": (["{python}", "insitu_video.py", "--fast", "--out", "{out}"],
                        ["particle_tracks.csv", "size_vs_time.csv", "size_vs_time.png"]),
    "explain_model.py": (["{python}", "explain_model.py", "--fast", "--out", "{out}"],
                         ["shallow_cnn_wide_kernel_matches.csv", "unet_grad_cam.png",
                          "unet_effective_receptive_field.png"]),
}


def _env():
    """This interpreter's ``bin`` first on PATH (``tem-keras`` for the shell script) and this
    checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(name: str, out: Path) -> subprocess.CompletedProcess:
    command = [part.format(python=sys.executable, out=out) for part in SCRIPTS[name][0]]
    return subprocess.run(command, cwd=EXAMPLES, env=_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def ran(request, tmp_path_factory):
    """The selected scripts run, two at a time: name → (output folder, completed process)."""
    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_example_runs"]
    outs = {name: tmp_path_factory.mktemp(name.split(".")[0]) / "out" for name in names}
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(names, pool.map(lambda name: _run(name, outs[name]), names)))
    return {name: (outs[name], done[name]) for name in names}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_example_runs(name, ran):
    out, proc = ran[name]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    missing = [f for f in SCRIPTS[name][1] if not (out / f).is_file()]
    assert not missing, (missing, sorted(str(p.relative_to(out)) for p in out.rglob("*"))[:50])
    assert "Traceback" not in proc.stderr
    if name == "insitu_video.py":
        tracks = pd.read_csv(out / "particle_tracks.csv")
        assert sorted(tracks["frame"].unique()) == list(range(5))  # every frame of the movie
        assert tracks["equivalent_diameter_nm"].gt(0).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart.py", "quickstart_cli.sh"])
def test_example_refuses_a_folder_with_files(name, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = _run(name, out)
    assert proc.returncode == 2
    assert "not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "notes.txt").read_text() == "keep me" and sorted(os.listdir(out)) == ["notes.txt"]
