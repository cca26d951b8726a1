"""Nothing the user made is lost: ``--overwrite`` removes only what tem_keras wrote, an output is
never an input, one ``fit`` at a time per run folder, and unwritable outputs give one line.

Every command that takes ``--overwrite`` is run against a folder of the user's files (a data set
with hand-drawn masks, notes, a model) and must refuse with a one-line error (exit status 2),
leaving every file under the test's folder byte-identical: the user's, and any other folder (the
commands run with that folder as the working directory, so default outputs land there too).
The manifest rules themselves (:class:`tem_keras.io.outputs.OutputFolder`) are tested directly.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tem_keras.cli import main
from tem_keras.errors import TEMInputError
from tem_keras.io.outputs import (MANIFEST, OutputExistsError, OutputFolder, legacy_folder,
                               output_error, refuse_inputs)

#: a tiny training: one step of two 64 px patches
TINY_FIT = dict(epochs=1, steps_per_epoch=1, patch_size=64, batch_size=2, augment=False,
                mixed_precision="float32", pretrained=None, verbose=0)
TINY_FIT_CLI = ["--model", "unet", "--depth", "2", "--base-filters", "2", "--epochs", "1",
                "--steps-per-epoch", "1", "--patch-size", "64", "--batch-size", "2", "--no-augment",
                "--mixed-precision", "float32", "--pretrained", "none", "--quiet"]


# --------------------------------------------------------------------------------------------
# The user's files
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """What a user has: ``DS/`` (images, hand-drawn masks, dataset.json), ``home/`` (notes and
    a model file), ``run/`` (a run folder made by hand), ``other/images/a.tif`` (an image with
    the stem of a hand-drawn mask) and ``m.png`` (a mask)."""
    from tem_keras.data.synthetic import make_image
    from tem_keras.io import write_image, write_mask
    from tem_keras.models import build_model

    root = tmp_path_factory.mktemp("template")
    for i, stem in enumerate(("a", "b", "c")):
        sample = make_image(64, seed=i)
        write_image(root / "DS" / "images" / f"{stem}.tif", sample.image, 0.5)
        write_mask(root / "DS" / "masks" / f"{stem}.png", sample.mask)
    (root / "DS" / "dataset.json").write_text('{"pixel_size_nm": 0.5}')
    write_image(root / "other" / "images" / "a.tif", make_image(64, seed=7).image, 0.5)
    write_mask(root / "m.png", sample.mask)
    home = root / "home"
    home.mkdir()
    (home / "notes.txt").write_text("my notes")
    build_model("unet", base_filters=2, depth=2).save(home / "model.keras")
    (root / "run").mkdir()
    shutil.copy(home / "model.keras", root / "run" / "best.keras")
    (root / "run" / "config.json").write_text("{}")
    return root


@pytest.fixture
def user(template, tmp_path, monkeypatch) -> Path:
    """A private copy of the user's files; the working directory is the test's folder."""
    target = tmp_path / "user"
    shutil.copytree(template, target)
    monkeypatch.chdir(tmp_path)
    return target


def snapshot(root: Path) -> dict:
    """Every path under ``root`` (hidden ones too): the SHA-256 of a file, ``/`` for a folder."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        key = path.relative_to(root).as_posix()
        found[key] = "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def cli(capsys, *argv) -> tuple[int, str]:
    """Run ``tem-keras`` in this process: (exit status, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def assert_refused(code: int, err: str, *words) -> None:
    """Exit status 2 with a one-line error holding ``words``."""
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tem-keras") and "error:" in last, err
    for word in words:
        assert str(word) in last, (word, last)


# --------------------------------------------------------------------------------------------
# The five data-loss examples
# --------------------------------------------------------------------------------------------

def test_demo_reports_a_bad_argument_before_touching_the_folder(user, capsys):
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "demo", user / "home", "--overwrite", "--n-images", "0"), "n_images")
    assert_refused(*cli(capsys, "demo", user / "home", "--overwrite", "--size", "8"), "size")
    assert_refused(*cli(capsys, "demo", user / "home", "--overwrite", "--time-limit", "soon"),
                   "time_limit")
    # good arguments: the folder holds the user's files, not an earlier demo
    assert_refused(*cli(capsys, "demo", user / "home", "--overwrite", "--epochs", "1"),
                   user / "home", "did not write")
    assert snapshot(user.parent) == before


@pytest.mark.parametrize("where", ["DS", "parent of DS"])
def test_fit_refuses_a_run_folder_that_is_or_holds_the_data_set(user, capsys, where):
    run_dir = user / "DS" if where == "DS" else user
    before = snapshot(user.parent)
    code, err = cli(capsys, "fit", user / "DS", "--run-dir", run_dir, "--overwrite", *TINY_FIT_CLI)
    assert_refused(code, err, run_dir, "input")
    assert snapshot(user.parent) == before


def test_export_refuses_a_folder_holding_the_model(user):
    import tem_keras

    before = snapshot(user.parent)
    with pytest.raises(TEMInputError, match="home.*model.keras.*input"):
        tem_keras.export(user / "home" / "model.keras", user / "home", overwrite=True, verbose=False)
    with pytest.raises(TEMInputError, match="input"):  # the run being exported, and a folder inside
        tem_keras.export(user / "run", user, formats=("keras",), overwrite=True, verbose=False)
    with pytest.raises(OutputExistsError, match="did not write"):  # the user's own folder
        tem_keras.export(user / "run", user / "DS" / "masks", formats=("keras",), overwrite=True,
                         verbose=False)
    assert snapshot(user.parent) == before


def test_label_never_replaces_hand_drawn_masks(user, capsys):
    before = snapshot(user.parent)
    ds = user / "DS"
    assert_refused(*cli(capsys, "label", ds / "images", "-o", ds, "--overwrite", "--quiet"), ds, "input")
    # other images with the stem of a hand-drawn mask: the data set is not a folder tem_keras made
    assert_refused(*cli(capsys, "label", user / "other" / "images", "-o", ds, "--overwrite", "--quiet"),
                   ds, "did not write")
    assert snapshot(user.parent) == before


def test_label_never_adds_to_a_folder_of_the_users_files(user, capsys):
    """``label other/images -o DS``: automatic masks were added beside the hand-drawn ones
    (``DS`` has no manifest: tem_keras did not make it)."""
    before = snapshot(user.parent)
    for target in (user / "DS", user / "home"):
        assert_refused(*cli(capsys, "label", user / "other" / "images", "-o", target, "--overwrite",
                            "--quiet"), target, "did not write")
    assert snapshot(user.parent) == before


def test_measure_never_writes_over_its_mask(user, capsys):
    before = snapshot(user.parent)
    mask = user / "m.png"
    assert_refused(*cli(capsys, "measure", mask, "-o", mask, "--overwrite"), mask, "input")
    masks = user / "DS" / "masks"
    assert_refused(*cli(capsys, "measure", masks, "-o", masks / "a.png", "--overwrite"), "input")
    # a table the user made is not replaced either
    (user / "home" / "sizes.csv").write_text("mine\n")
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "measure", mask, "-o", user / "home" / "sizes.csv", "--overwrite"),
                   "sizes.csv", "not written by tem_keras")
    assert snapshot(user.parent) == before


# --------------------------------------------------------------------------------------------
# Every other command that takes --overwrite
# --------------------------------------------------------------------------------------------

def test_synth_overwrite_refuses_the_users_folder(user, capsys):
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "synth", user / "home", "--overwrite", "--n-images", "1", "--size", "48"),
                   user / "home", "did not write")
    assert_refused(*cli(capsys, "synth", user / "DS", "--overwrite", "--n-images", "1", "--size", "48"),
                   user / "DS")
    assert snapshot(user.parent) == before


def test_fit_overwrite_refuses_a_folder_of_the_users_files(user, capsys):
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "fit", user / "DS", "--run-dir", user / "home", "--overwrite",
                        *TINY_FIT_CLI), user / "home", "did not write")
    assert snapshot(user.parent) == before


def test_export_overwrite_refuses_a_folder_of_the_users_files(user, capsys):
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "export", user / "run", user / "home", "--overwrite", "--formats",
                        "keras", "--quiet"), user / "home", "not empty")
    assert snapshot(user.parent) == before


def test_predict_overwrite_never_replaces_a_users_file(user, capsys):
    out = user / "home"
    (out / "a_mask.png").write_bytes((user / "DS" / "masks" / "a.png").read_bytes())  # hand-drawn
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "predict", user / "run", user / "DS" / "images" / "a.tif", "-o", out,
                        "--overwrite", "--quiet"), out / "a_mask.png", "not written by tem_keras")
    images = user / "DS" / "images"  # masks among the images they come from
    assert_refused(*cli(capsys, "predict", user / "run", images, "-o", images, "--overwrite",
                        "--quiet"), images, "input")
    assert snapshot(user.parent) == before


def test_evaluate_overwrite_never_replaces_a_users_table(user, capsys):
    out = user / "home"
    (out / "per_image.csv").write_text("mine\n")
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "evaluate", user / "run", user / "DS", "-o", out, "--overwrite",
                        "--quiet"), out / "per_image.csv", "not written by tem_keras")
    assert_refused(*cli(capsys, "evaluate", user / "run", user / "DS", "-o", user / "DS",
                        "--overwrite", "--quiet"), user / "DS", "input")
    assert snapshot(user.parent) == before


def test_explain_overwrite_never_replaces_a_users_file(user, capsys):
    out = user / "home"
    (out / "kernels.png").write_bytes(b"my figure")
    (out / "gradcam.png").write_bytes(b"x")  # an image to explain, where its figure would go
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "explain", user / "run", "--method", "kernels", "-o", out,
                        "--overwrite"), out / "kernels.png", "not written by tem_keras")
    assert_refused(*cli(capsys, "explain", user / "run", out / "gradcam.png", "-o", out,
                        "--overwrite"), "input")
    assert snapshot(user.parent) == before


def test_watch_overwrite_never_replaces_a_users_table(user, capsys):
    out = user / "home"
    (out / "particles.csv").write_text("mine\n")
    watched = user / "DS" / "images"
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "watch", user / "run", watched, "-o", out, "--overwrite", "--once",
                        "--quiet"), out / "particles.csv", "not written by tem_keras")
    assert snapshot(user.parent) == before


def test_sweep_overwrite_checks_its_tables_before_training(user, capsys):
    out = user / "home"
    (out / "sweep.csv").write_text("mine\n")
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "sweep", user / "DS", "--models", "unet", "--seeds", "0",
                        "--out-dir", out, "--overwrite", "--epochs", "1", "--quiet"),
                   out / "sweep.csv", "not written by tem_keras")
    assert snapshot(user.parent) == before


def test_the_zarr_store_never_replaces_a_users_folder(user, capsys):
    pytest.importorskip("zarr")
    out = user / "home.zarr"
    shutil.copytree(user / "home", out)
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "predict", user / "run", user / "DS" / "images" / "a.tif", "-o", out,
                        "--overwrite", "--quiet"), out)
    assert snapshot(user.parent) == before


def test_a_store_killed_while_created_is_no_store_and_the_rerun_makes_it(user, capsys, monkeypatch):
    """A SIGKILL between the Zarr group and its tem_keras attributes left a folder every rerun
    refused as "not a tem_keras prediction store"; the store is now made aside and renamed."""
    pytest.importorskip("zarr")
    from tem_keras.distributed.store import PredictionStore

    out = user.parent / "m.zarr"
    image = user / "DS" / "images" / "a.tif"
    before = snapshot(user)

    def killed(self, *args, **kwargs):  # the group is made, the attributes never come
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / ".zgroup").write_text('{"zarr_format": 2}')
        raise KeyboardInterrupt

    monkeypatch.setattr(PredictionStore, "_create", killed)
    with pytest.raises(SystemExit, match="130"):  # Ctrl-C: exit status 130
        cli(capsys, "predict", user / "run", image, "-o", out, "--quiet")
    assert not out.exists() and not list(user.parent.glob(".m.zarr.*"))
    monkeypatch.undo()
    dead = user.parent / f".m.zarr.{_dead_pid()}.partial"  # what a SIGKILL leaves
    dead.mkdir()
    (dead / ".zgroup").write_text('{"zarr_format": 2}')
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--quiet")[0] == 0
    assert PredictionStore(out).masks.shape[0] == 1
    assert not dead.exists() and snapshot(user) == before


@pytest.mark.parametrize("name", ["quickstart.py", "explain_model.py", "insitu_video.py"])
def test_examples_overwrite_refuses_the_users_folder(user, capsys, name):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / name
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before = snapshot(user.parent)
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--out", str(user / "home"), "--overwrite", "--fast"])
    assert exit_info.value.code == 2
    assert "did not write" in capsys.readouterr().err
    assert snapshot(user.parent) == before


# --------------------------------------------------------------------------------------------
# What tem_keras wrote is replaced, and only that
# --------------------------------------------------------------------------------------------

def test_overwrite_replaces_an_export_and_keeps_the_users_files_beside_it(user, capsys):
    import tem_keras

    out = user.parent / "export"
    tem_keras.export(user / "run", out, formats=("keras",), verbose=False)
    assert {"model.keras", "tem_keras.json", "README.md"} <= OutputFolder(out).listed()
    (out / "notes.txt").write_text("about this model")
    with pytest.raises(OutputExistsError, match="already exists.*--overwrite"):
        tem_keras.export(user / "run", out, formats=("keras",), verbose=False)
    (out / "README.md").write_text("the old card")
    tem_keras.export(user / "run", out, formats=("keras",), overwrite=True, verbose=False)
    assert (out / "notes.txt").read_text() == "about this model"
    assert (out / "README.md").read_text() != "the old card"
    # an export of an older tem_keras (no manifest) is recognised; with a file of the user's, not
    (out / MANIFEST).unlink()
    (out / "notes.txt").unlink()
    tem_keras.export(user / "run", out, formats=("keras",), overwrite=True, verbose=False)
    (out / MANIFEST).unlink()
    (out / "notes.txt").write_text("about this model")
    with pytest.raises(OutputExistsError, match="did not write.*notes.txt"):
        tem_keras.export(user / "run", out, formats=("keras",), overwrite=True, verbose=False)


def test_predict_overwrite_replaces_its_own_masks(user, capsys):
    out = user.parent / "masks"
    image = user / "DS" / "images" / "a.tif"
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--quiet")[0] == 0
    assert "a_mask.png" in OutputFolder(out).listed()
    (out / "notes.txt").write_text("mine")
    assert_refused(*cli(capsys, "predict", user / "run", image, "-o", out, "--quiet"), "--overwrite")
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--overwrite", "--quiet")[0] == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_predict_overwrite_leaves_one_set_of_outputs_per_input(user, capsys):
    """An earlier prediction's files for the same input that a new one does not write (a mask
    in the other format, probabilities not asked for again) are refused without --overwrite and
    removed with it: never two masks for one input, nor probabilities of another run."""
    import tifffile

    out = user.parent / "masks"
    image = user / "DS" / "images" / "a.tif"
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--mask-format", "tif",
               "--probabilities", "--quiet")[0] == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a_mask.tif", "a_probabilities.tif"]
    mask = tifffile.imread(out / "a_mask.tif")
    (out / "b_mask.tif").write_bytes((out / "a_mask.tif").read_bytes())  # the user's file
    mine = (out / "b_mask.tif").read_bytes()
    before = snapshot(user.parent)
    assert_refused(*cli(capsys, "predict", user / "run", image, "-o", out, "--quiet"),
                   "a_mask.tif", "--overwrite")
    assert snapshot(user.parent) == before
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--overwrite", "--quiet")[0] == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a_mask.png", "b_mask.tif"]
    import imageio.v3 as iio

    assert np.array_equal(iio.imread(out / "a_mask.png") > 0, mask > 0)  # the same model, the same mask
    assert (out / "b_mask.tif").read_bytes() == mine


def test_plan_never_writes_over_a_users_file(user, capsys):
    """``plan DS -o DS/dataset.json --overwrite`` replaced the data set's own description."""
    before = snapshot(user.parent)
    for target in (user / "DS" / "dataset.json", user / "home" / "notes.txt"):
        assert_refused(*cli(capsys, "plan", user / "DS", "-o", target, "--overwrite"), target,
                       "not written by tem_keras")
    assert snapshot(user.parent) == before


def test_label_writes_a_data_set_it_may_replace(user, capsys):
    out = user.parent / "labelled"
    images = user / "other" / "images"
    assert cli(capsys, "label", images, "-o", out, "--quiet")[0] == 0
    assert OutputFolder(out).listed() == {"images/a.tif", "masks/a.png"}
    assert_refused(*cli(capsys, "label", images, "-o", out, "--quiet"), "--overwrite")
    assert cli(capsys, "label", images, "-o", out, "--overwrite", "--quiet")[0] == 0


def test_synthetic_data_set_overwrite_keeps_the_users_files(tmp_path):
    from tem_keras.data.synthetic import make_dataset

    out = make_dataset(tmp_path / "data", n_images=3, size=48, seed=0, progress=False)
    (out / "images" / "mine.tif").write_bytes(b"my image")
    make_dataset(out, n_images=2, size=48, seed=1, overwrite=True, progress=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "mine.tif", "synthetic_000.tif", "synthetic_001.tif"]
    assert (out / "images" / "mine.tif").read_bytes() == b"my image"
    # a data set of an older tem_keras (no manifest, only synthetic files) is recognised
    (out / "images" / "mine.tif").unlink()
    (out / MANIFEST).unlink()
    make_dataset(out, n_images=1, size=48, seed=2, overwrite=True, progress=False)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["synthetic_000.png"]


@pytest.mark.slow
def test_fit_overwrite_replaces_the_run_and_keeps_the_users_files(user, tmp_path):
    import tem_keras
    from tem_keras.training.rundir import RUN_ENTRIES

    run_dir = tmp_path / "runs" / "tiny"  # a finished run, and the user's notes beside it
    OutputFolder(run_dir, "run").prepare(overwrite=False, entries=RUN_ENTRIES)
    for name in ("config.json", "metrics.json", "thresholds.json"):
        (run_dir / name).write_text("{}")
    (run_dir / "history.csv").write_text("epoch\n0\n")
    (run_dir / "notes.txt").write_text("why I ran this")
    with pytest.warns(UserWarning, match="validation image"):
        with pytest.raises(OutputExistsError, match="finished run.*overwrite"):
            tem_keras.fit(user / "DS", "unet", depth=2, base_filters=2, run_dir=run_dir, **TINY_FIT)
        tem_keras.fit(user / "DS", "unet", depth=2, base_filters=2, run_dir=run_dir, overwrite=True,
                      **TINY_FIT)
    assert (run_dir / "notes.txt").read_text() == "why I ran this"
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2  # the new run's one epoch
    assert {"config.json", "best.keras", "history.csv", "logs"} <= OutputFolder(run_dir).listed()
    assert not (run_dir / ".tem_keras.lock").exists()


# --------------------------------------------------------------------------------------------
# The manifest's rules
# --------------------------------------------------------------------------------------------

def test_clear_removes_only_listed_paths_and_honours_nested_manifests(tmp_path):
    outer = OutputFolder(tmp_path / "demo", "demo").prepare(overwrite=False, entries=["run", "report"])
    inner = OutputFolder(tmp_path / "demo" / "run", "run").prepare(overwrite=False,
                                                                  entries=["config.json", "logs"])
    (inner.path / "config.json").write_text("{}")
    (inner.path / "logs" / "train").mkdir(parents=True)
    (inner.path / "logs" / "train" / "events").write_text("x")
    (inner.path / "notes.txt").write_text("mine")          # the user's, inside a listed folder
    (outer.path / "report").mkdir()
    (outer.path / "report" / "summary.json").write_text("{}")
    (outer.path / "mine.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        OutputFolder(outer.path, "demo").prepare(overwrite=False)
    OutputFolder(outer.path, "demo").prepare(overwrite=True)
    assert set(snapshot(outer.path)) == {MANIFEST, "mine.txt", "run", "run/notes.txt", "run/" + MANIFEST}
    assert OutputFolder(outer.path).listed() == set() and OutputFolder(outer.path).owner == "demo"


def test_kinds_legacy_folders_and_edited_manifests(tmp_path):
    run = OutputFolder(tmp_path / "run", "run").prepare(overwrite=False, entries=["config.json"])
    with pytest.raises(OutputExistsError, match="tem_keras run folder, not a export"):
        OutputFolder(run.path, "export").prepare(overwrite=True)
    old = tmp_path / "old"  # a run folder of an older tem_keras
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "history.csv").write_text("epoch\n0\n")
    legacy = legacy_folder("config.json", ("config.json", "history.csv"))
    assert OutputFolder(old, "run").holds_output(legacy)
    assert not (old / MANIFEST).exists()  # a check writes nothing
    (old / "thesis.docx").write_text("mine")
    with pytest.raises(OutputExistsError, match="thesis.docx"):
        OutputFolder(old, "run").holds_output(legacy)
    # a manifest naming paths outside its folder removes nothing there
    (tmp_path / "outside.txt").write_text("mine")
    edited = OutputFolder(tmp_path / "edited", "files").prepare(overwrite=False)
    with open(edited.manifest, "a") as handle:
        handle.write("../outside.txt\n")
    edited.clear()
    assert (tmp_path / "outside.txt").read_text() == "mine"


def test_claims_refuse_inputs_and_files_not_written(tmp_path):
    folder = OutputFolder(tmp_path / "out", inputs=[tmp_path / "out" / "a.png", tmp_path / "imgs" / "*.tif"])
    with pytest.raises(TEMInputError, match="a.png: is an input"):
        folder.check("a.png", overwrite=True)
    path = folder.claim("b.csv", overwrite=False)
    path.write_text("1")
    with pytest.raises(OutputExistsError, match="already exists"):
        folder.claim("b.csv", overwrite=False)
    assert folder.claim("b.csv", overwrite=True) == path
    (folder.path / "c.csv").write_text("mine")
    with pytest.raises(OutputExistsError, match="not written by tem_keras"):
        folder.claim("c.csv", overwrite=True)
    with pytest.raises(TEMInputError, match="input"):  # a glob stands for its folder
        refuse_inputs(tmp_path, [tmp_path / "imgs" / "*.tif"])
    refuse_inputs(tmp_path / "imgs" / "masks", [tmp_path / "imgs" / "*.tif"])  # inside: fine


def test_two_processes_record_into_one_manifest(tmp_path):
    code = ("import sys; from tem_keras.io.outputs import OutputFolder\n"
            "f = OutputFolder(sys.argv[1])\n"
            "for i in range(200): f.record(f'{sys.argv[2]}{i}.png')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag]) for tag in "ab"]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    listed = OutputFolder(tmp_path).listed()
    assert len(listed) == 400 and OutputFolder(tmp_path).owner == "files"


# --------------------------------------------------------------------------------------------
# One fit at a time per run folder
# --------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_fit_into_a_locked_run_folder_is_refused(user, capsys):
    run_dir = user.parent / "run_locked"
    run_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / ".tem_keras.lock").write_text(str(sleeper.pid))
        before = snapshot(user.parent)
        assert_refused(*cli(capsys, "fit", user / "DS", "--run-dir", run_dir, *TINY_FIT_CLI),
                       run_dir, f"pid {sleeper.pid}", "training into it")
        assert snapshot(user.parent) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_run_lock_is_taken_over_and_released(tmp_path):
    from tem_keras.training.rundir import run_lock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".tem_keras.lock").write_text(str(_dead_pid()))
    with run_lock(run_dir) as lock:
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(FileExistsError, match="another tem-keras process"):
            with run_lock(run_dir):
                pass
    assert not lock.exists() and run_dir.is_dir()
    with run_lock(tmp_path / "new"):  # a folder made for the lock goes when nothing was written
        pass
    assert not (tmp_path / "new").exists()


def test_a_killed_particle_table_leaves_nothing_behind_the_rerun(user, capsys):
    """``predict --particles`` killed (SIGKILL) while writing left its lock and its
    ``.particles.csv.<pid>.partial``; the rerun took the lock over but kept the partial file."""
    out = user.parent / "masks"
    image = user / "DS" / "images" / "a.tif"
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--particles", "--quiet")[0] == 0
    table = (out / "particles.csv").read_bytes()
    dead = _dead_pid()
    (out / ".particles.csv.lock").write_text(str(dead))  # what the killed rerun left
    (out / f".particles.csv.{dead}.partial").write_text("image,frame\na,")
    (out / ".particles.csv.notapid.partial").write_text("mine")  # not a name tem_keras writes
    before = snapshot(user)
    assert cli(capsys, "predict", user / "run", image, "-o", out, "--particles", "--overwrite",
               "--quiet")[0] == 0
    left = sorted(p.name for p in out.iterdir() if p.name.startswith(".particles"))
    assert left == [".particles.csv.notapid.partial"]
    assert (out / "particles.csv").read_bytes() == table  # the same rows, once
    assert snapshot(user) == before


@pytest.mark.slow
def test_two_fits_into_one_run_folder_at_once(template, tmp_path):
    """A real fit in another process holds the lock; a second one is refused, and after the
    first ends its run folder is whole."""
    run_dir = tmp_path / "run"
    code = ("import sys, tem_keras\n"
            "tem_keras.fit(sys.argv[1], 'unet', depth=2, base_filters=2, run_dir=sys.argv[2], "
            "epochs=6, steps_per_epoch=2, patch_size=64, batch_size=2, augment=False, "
            "mixed_precision='float32', pretrained=None, verbose=0)\n")
    first = subprocess.Popen([sys.executable, "-c", code, str(template / "DS"), str(run_dir)])
    try:
        import time

        for _ in range(600):
            if (run_dir / ".tem_keras.lock").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        import tem_keras

        with pytest.raises(FileExistsError, match="another tem-keras process.*training into it"):
            tem_keras.fit(template / "DS", "unet", depth=2, base_filters=2, run_dir=run_dir, **TINY_FIT)
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    assert (run_dir / "metrics.json").is_file() and not (run_dir / ".tem_keras.lock").exists()


# --------------------------------------------------------------------------------------------
# Unwritable outputs: one line naming the path, exit status 2
# --------------------------------------------------------------------------------------------

OUTPUT_COMMANDS = {
    "synth": lambda u, o: ["synth", o, "--n-images", "1", "--size", "48"],
    "label": lambda u, o: ["label", u / "other" / "images", "-o", o, "--quiet"],
    "measure": lambda u, o: ["measure", u / "m.png", "-o", o / "particles.csv"],
    "fit": lambda u, o: ["fit", u / "DS", "--run-dir", o, *TINY_FIT_CLI],
    "export": lambda u, o: ["export", u / "run", o, "--formats", "keras", "--quiet"],
    "predict": lambda u, o: ["predict", u / "run", u / "DS" / "images" / "a.tif", "-o", o, "--quiet"],
    "evaluate": lambda u, o: ["evaluate", u / "run", u / "DS", "-o", o, "--quiet"],
    "explain": lambda u, o: ["explain", u / "run", "--method", "kernels", "-o", o],
}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_a_file_where_the_output_folder_belongs(user, capsys, command):
    blocker = user / "home" / "notes.txt"
    before = snapshot(user.parent)
    code, err = cli(capsys, *OUTPUT_COMMANDS[command](user, blocker / "out"))
    assert_refused(code, err, blocker)
    assert snapshot(user.parent) == before


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_a_read_only_output_folder(user, capsys, command):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = user.parent / "read_only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = cli(capsys, *OUTPUT_COMMANDS[command](user, locked / "out"))
        assert_refused(code, err, "permission denied")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_a_read_only_file_system(user, capsys, monkeypatch, command):
    """The same as root can see it: every folder under ``ro/`` refuses to be made (EROFS)."""
    read_only = user.parent / "ro"
    make = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if Path(os.path.abspath(self)).is_relative_to(read_only):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return make(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    before = snapshot(user.parent)
    code, err = cli(capsys, *OUTPUT_COMMANDS[command](user, read_only / "out"))
    assert_refused(code, err, read_only / "out", "read-only file system")
    assert snapshot(user.parent) == before


@pytest.mark.parametrize("code, words", [
    (errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
    (errno.ENOSPC, "no space left"), (errno.EISDIR, "is a folder where a file is needed")])
def test_output_errors_name_the_path_in_one_line(tmp_path, code, words):
    error = output_error(OSError(code, os.strerror(code), str(tmp_path / "out" / "x.png")))
    assert str(error).startswith(str(tmp_path / "out" / "x.png") + ": ") and words in str(error)
    assert "\n" not in str(error)
    (tmp_path / "file").write_text("x")
    error = output_error(OSError(errno.ENOTDIR, "Not a directory", str(tmp_path / "file" / "a" / "b")))
    assert str(error).startswith(f"{tmp_path / 'file'}: is a file where a folder is needed")


def test_an_unwritable_file_inside_a_command_is_one_line(user, capsys, monkeypatch):
    """An OSError raised deep inside a writer (here: a full disk while the CSV is written)."""
    import pandas as pd

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    code, err = cli(capsys, "measure", user / "m.png", "-o", user.parent / "sizes.csv")
    assert_refused(code, err, "sizes.csv", "no space left")
