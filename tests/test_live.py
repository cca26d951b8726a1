"""Live segmentation (``tem_keras.watch``, ``tem-keras watch``): files written slowly are
segmented once and completely, a restart does not redo finished files, Ctrl-C stops cleanly.

The completeness rule and the ledger are tested on real files without a model; the watch itself
uses the session's tiny run (tests/conftest.py), with a writer thread that writes TIFFs in
pieces, as acquisition software does, while the watcher runs in the main thread.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import tem_keras
from tem_keras.io import read_image, write_image
from tem_keras.live import (LEDGER_NAME, TABLE_NAME, FolderWatcher, Ledger, ParticleTable,
                            Unreadable, file_state)


def _tiff_bytes(tmp_path, data, name="full.tif") -> bytes:
    path = write_image(tmp_path / name, data, 0.5, overwrite=True)
    return path.read_bytes()


def _poll(watcher, finished=None):
    return list(watcher.poll(finished or {}))


# --------------------------------------------------------------------------------------------
# The completeness rule (no model)
# --------------------------------------------------------------------------------------------

def test_a_file_is_taken_once_its_size_and_time_settled_and_it_reads_whole(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    data = _tiff_bytes(tmp_path, image)
    target = folder / "a.tif"
    watcher = FolderWatcher(folder, settle=0.2, give_up=60)

    target.write_bytes(data[: len(data) // 3])  # the writer pauses longer than settle
    assert _poll(watcher) == []                  # first seen
    time.sleep(0.25)
    assert _poll(watcher) == []                  # settled but unreadable: tried later, not reported
    assert watcher.pending() == 1
    with open(target, "ab") as handle:           # the rest arrives
        handle.write(data[len(data) // 3:])
    assert _poll(watcher) == []                  # changed: the settle time starts again
    time.sleep(0.25)
    (complete,) = _poll(watcher)
    assert complete.key == "a.tif" and complete.state == file_state(target)
    assert len(complete.frames) == 1 and complete.frames[0].pixel_size_nm == pytest.approx(0.5)
    np.testing.assert_array_equal(complete.frames[0].data, image)
    assert complete.read_s >= 0 and time.monotonic() - complete.detected >= 0.2
    assert _poll(watcher, {"a.tif": complete.state}) == []   # finished: not taken again

    growing = folder / "b.tif"                   # written to at every poll: never taken
    growing.write_bytes(data[:100])
    for k in range(4):
        assert _poll(watcher, {"a.tif": complete.state}) == []
        with open(growing, "ab") as handle:
            handle.write(data[100 + 50 * k: 150 + 50 * k])
        time.sleep(0.1)
    assert watcher.pending({"a.tif": complete.state}) == 1


def test_a_file_that_stays_unreadable_is_reported_once_then_taken_when_it_changes(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "junk.tif").write_bytes(b"not a TIFF at all" * 10)
    watcher = FolderWatcher(folder, settle=0.05, give_up=0.3)
    events, start = [], time.monotonic()
    while time.monotonic() - start < 1.0:
        events += _poll(watcher)
        time.sleep(0.05)
    (event,) = events
    assert isinstance(event, Unreadable) and event.key == "junk.tif"
    assert str(folder / "junk.tif") in event.message and "could not be read as TIFF" in event.message
    assert watcher.pending() == 0
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    (folder / "junk.tif").write_bytes(_tiff_bytes(tmp_path, image))   # replaced by a good file
    assert _poll(watcher) == []
    time.sleep(0.1)
    (complete,) = _poll(watcher)
    np.testing.assert_array_equal(complete.frames[0].data, image)


def test_ledger_and_table_drop_what_a_crash_left_unfinished(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_NAME)
    entry = {"file": "a.tif", "size": 10, "mtime_ns": 5, "status": "done", "outputs": ["a"]}
    ledger.append(entry)
    ledger.append(dict(entry, file="b.tif", status="skipped", error="unreadable"))
    ledger.append(dict(entry, size=11))             # a.tif done again after it changed
    with open(tmp_path / LEDGER_NAME, "a") as handle:
        handle.write('{"file": "c.tif", "si')       # a crash in the middle of a line
    reopened = Ledger(tmp_path / LEDGER_NAME)
    assert list(reopened.entries) == ["b.tif", "a.tif"]
    assert reopened.states["a.tif"].size == 11 and reopened.outputs() == {"a"}
    assert (tmp_path / LEDGER_NAME).read_text().endswith("}\n")  # the cut line is gone

    table = tmp_path / TABLE_NAME
    table.write_text("image,frame,area_px\na,-1,12.0\nc,-1,30.0\na,-1,14.0\nc,-1,3")
    particles = ParticleTable(table)
    particles.lock()
    try:
        sizes = particles.keep_only({"a"}, size_columns=("area_px", "missing"))
        assert table.read_text() == "image,frame,area_px\na,-1,12.0\na,-1,14.0\n"
        np.testing.assert_array_equal(sizes["area_px"], [12.0, 14.0])
        assert np.isnan(sizes["missing"]).all()
        assert (tmp_path / f".{TABLE_NAME}.lock").exists()
    finally:
        particles.close()
    assert not (tmp_path / f".{TABLE_NAME}.lock").exists()


# --------------------------------------------------------------------------------------------
# The watch, with the tiny trained run
# --------------------------------------------------------------------------------------------

def _write_slowly(path: Path, data: bytes, pieces: int, pause: float, long_pause_at=None,
                  long_pause: float = 0.0) -> None:
    """Write ``data`` in ``pieces`` appends, ``pause`` s apart (one longer pause if asked)."""
    cuts = np.linspace(0, len(data), pieces + 1).astype(int)
    for k in range(pieces):
        with open(path, "wb" if k == 0 else "ab") as handle:
            handle.write(data[cuts[k]:cuts[k + 1]])
        time.sleep(long_pause if k == long_pause_at else pause)


def _expected(run, path):
    """Masks and particle rows of ``tem_keras.predict`` on the complete file."""
    from tem_keras.inference import particle_rows

    results = tem_keras.predict(run, path, return_image=True)
    results = results if isinstance(results, list) else [results]
    rows = pd.concat([particle_rows(r) for r in results], ignore_index=True)
    return {r.name: r.mask for r in results}, rows


def _mask(out: Path, name: str) -> np.ndarray:
    from skimage.io import imread

    return imread(out / f"{name}_mask.png")


def _ledger_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LEDGER_NAME).read_text().splitlines()]


@pytest.mark.slow
def test_watch_segments_files_written_in_pieces_once_and_completely(tiny_run, tiny_dataset, tmp_path):
    folder, out = tmp_path / "microscope", tmp_path / "live"
    folder.mkdir()
    images = sorted((tiny_dataset / "images").iterdir())
    contents = {p.name: p.read_bytes() for p in images[:3]}
    stack = np.stack([read_image(p).data for p in images[3:5]])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    contents["series_0003.tif"] = (tmp_path / "stack.tif").read_bytes()   # a 2-frame file

    def acquire():
        time.sleep(0.3)
        for k, (name, data) in enumerate(contents.items()):
            # pieces 0.1 s apart (less than settle); the second file pauses 0.8 s half-way
            # (more than settle): read then, it is found truncated and tried again later
            _write_slowly(folder / name, data, pieces=5, pause=0.1,
                          long_pause_at=2 if k == 1 else None, long_pause=0.8)

    writer = threading.Thread(target=acquire)
    writer.start()
    try:
        report = tem_keras.watch(tiny_run, folder, out, interval=0.1, settle=0.4, stop_after=4,
                                 timeout=30, summary_every=0, verbose=False)
    finally:
        writer.join()
    assert report.stopped == "stop_after" and (report.files, report.frames) == (4, 5)
    assert not report.skipped
    assert all(latency >= 0.4 for latency in report.latencies)   # the settle time is part of it

    lines = _ledger_lines(out)
    assert sorted(e["file"] for e in lines) == sorted(contents)   # each file exactly once
    assert all(e["status"] == "done" and e["size"] == len(contents[e["file"]]) for e in lines)
    table = pd.read_csv(out / TABLE_NAME, float_precision="round_trip")
    n_rows = 0
    for name in contents:
        masks, rows = _expected(tiny_run, folder / name)
        for stem, mask in masks.items():
            np.testing.assert_array_equal(_mask(out, stem), mask)
        found = table[table["image"].isin(list(masks))].reset_index(drop=True)
        pd.testing.assert_frame_equal(found, rows, check_dtype=False)
        n_rows += len(rows)
    assert len(table) == n_rows   # no row twice
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*partial*")) and not (out / ".watch_partial").exists()

    # a restart does nothing: finished files are not segmented again
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*_mask.png")}
    again = tem_keras.watch(tiny_run, folder, out, interval=0.05, settle=0.1, once=True,
                            verbose=False)
    assert (again.files, again.stopped) == (0, "once")
    assert len(_ledger_lines(out)) == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_mask.png")} == mtimes

    # a new file is segmented; a file modified after it was done is segmented again, its rows replaced
    modified = images[0].name
    (folder / modified).write_bytes(images[5].read_bytes())
    (folder / "late.tif").write_bytes(images[4].read_bytes())
    third = tem_keras.watch(tiny_run, folder, out, interval=0.05, settle=0.1, once=True,
                            verbose=False)
    assert third.files == 2 and third.done_total == 5
    assert [e["file"] for e in _ledger_lines(out)[4:]] == sorted([modified, "late.tif"])
    table = pd.read_csv(out / TABLE_NAME, float_precision="round_trip")
    masks, rows = _expected(tiny_run, folder / modified)
    np.testing.assert_array_equal(_mask(out, Path(modified).stem), masks[Path(modified).stem])
    found = table[table["image"] == Path(modified).stem].reset_index(drop=True)
    pd.testing.assert_frame_equal(found, rows, check_dtype=False)


@pytest.mark.slow
def test_ctrl_c_stops_the_command_after_the_current_file_and_a_restart_finishes(
        tiny_run, tiny_dataset, tmp_path, capsys):
    from tem_keras.cli import main

    folder, out = tmp_path / "microscope", tmp_path / "live"
    folder.mkdir()
    images = sorted((tiny_dataset / "images").iterdir())[:2]
    (folder / images[0].name).write_bytes(images[0].read_bytes())

    def operator():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / LEDGER_NAME).exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)          # Ctrl-C while the watch waits
        (folder / images[1].name).write_bytes(images[1].read_bytes())

    thread = threading.Thread(target=operator)
    thread.start()
    try:
        status = main(["watch", str(tiny_run.path), str(folder), "-o", str(out), "--interval",
                       "0.05", "--settle", "0.1", "--timeout", "60"])
    finally:
        thread.join()
    printed = capsys.readouterr().out
    assert status == 130
    assert f"{images[0].name}: 1 frame(s)" in printed and "latency" in printed
    assert "stopped: Ctrl-C" in printed
    assert [e["file"] for e in _ledger_lines(out)] == [images[0].name]

    assert main(["watch", str(tiny_run.path), str(folder), "-o", str(out), "--once",
                 "--interval", "0.05", "--settle", "0.1", "--quiet"]) == 0
    assert [e["file"] for e in _ledger_lines(out)] == [p.name for p in images]
    assert "1 file(s)" in capsys.readouterr().out
    table = pd.read_csv(out / TABLE_NAME)
    for path in images:   # each file's rows once
        rows = _expected(tiny_run, folder / path.name)[1]
        assert (table["image"] == path.stem).sum() == len(rows)


def test_watch_refuses_a_foreign_output_folder_and_the_watched_folder(tiny_run, tmp_path, capsys):
    from tem_keras.cli import main

    folder = tmp_path / "microscope"
    folder.mkdir()
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["watch", str(tiny_run.path), str(folder), "-o", str(foreign), "--once"]) == 2
    assert "is not empty and holds no watch ledger" in capsys.readouterr().err
    assert main(["watch", str(tiny_run.path), str(folder), "-o", str(folder), "--once"]) == 2
    assert "must not be the watched folder" in capsys.readouterr().err
    assert main(["watch", str(tiny_run.path), str(tmp_path / "missing"), "-o", str(foreign)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    busy = tmp_path / "busy"   # another live process holds the output folder's lock
    busy.mkdir()
    (busy / f".{TABLE_NAME}.lock").write_text(str(os.getpid()))
    assert main(["watch", str(tiny_run.path), str(folder), "-o", str(busy), "--once"]) == 2
    assert "another tem-keras process" in capsys.readouterr().err


def test_watch_names_a_file_whose_stem_is_taken_by_its_path(tiny_run, tiny_dataset, tmp_path):
    """a.tif, then a.npy (one stem): the second gets a_npy_mask.png, as predict names it, and
    a_mask.png stays the first one's."""
    folder, out = tmp_path / "microscope", tmp_path / "out"
    folder.mkdir()
    image = read_image(sorted((tiny_dataset / "images").iterdir())[0]).data
    write_image(folder / "a.tif", image)
    report = tem_keras.watch(tiny_run, folder, out, once=True, settle=0.05, interval=0.05, verbose=False)
    assert report.files == 1
    np.save(folder / "a.npy", image[::-1])
    report = tem_keras.watch(tiny_run, folder, out, once=True, settle=0.05, interval=0.05, verbose=False)
    assert report.files == 1 and not report.skipped
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["a_mask.png", "a_npy_mask.png"]
    expected, _ = _expected(tiny_run, folder / "a.npy")
    assert np.array_equal(_mask(out, "a_npy"), expected["a"])


def test_watch_reports_an_unwritable_summary_in_one_line(tiny_run, tiny_dataset, tmp_path, capsys):
    from tem_keras.cli import main

    folder, out = tmp_path / "microscope", tmp_path / "out"
    folder.mkdir()
    image = read_image(sorted((tiny_dataset / "images").iterdir())[0]).data
    write_image(folder / "a.tif", image)
    assert main(["watch", str(tiny_run.path), str(folder), "-o", str(out), "--once", "--quiet",
                 "--settle", "0.05", "--interval", "0.05"]) == 0
    (out / "summary.png").unlink()
    (out / "summary.png").mkdir()  # a folder where the figure goes
    write_image(folder / "b.tif", image[::-1])
    capsys.readouterr()
    assert main(["watch", str(tiny_run.path), str(folder), "-o", str(out), "--once", "--quiet",
                 "--settle", "0.05", "--interval", "0.05"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"tem-keras watch: error: {out / 'summary.png'}: is a folder where a file is "
                       "needed; choose another name"), err
    assert not list(out.glob(".summary*.partial.png"))
