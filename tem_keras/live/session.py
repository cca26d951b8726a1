"""Live segmentation: :func:`watch` segments each micrograph as the microscope writes it.

One watch, step by step:

1. The model is loaded once; its :class:`~tem_keras.inference.Predictor` (the network rewritten
   for inference, traced once for every image shape) is built and called once before the folder
   is watched, and reused for every file.
2. The folder is polled every ``interval`` seconds; a file is taken when it is complete
   (:mod:`.arrivals`: size and time unchanged for ``settle`` seconds, then read whole by the
   reader of its format).
3. Its frames (all in memory, as read) are segmented by :func:`tem_keras.predict_stack`; the
   masks are written as ``tem-keras predict`` writes them (``<name>_mask.png``; each written under
   a temporary name and renamed, so a mask file is always whole), the particles appended to
   ``particles.csv`` and the file recorded in the ledger (:mod:`.ledger`); one line with the
   latency (from the moment the final version of the file was seen to its last mask written) is
   printed.
4. ``summary.png`` is redrawn every few seconds (:mod:`.summary`).

Stopping and restarting: the first Ctrl-C (SIGINT) lets the current file finish and stops; a
second one abandons it (nothing about it is committed, it is done again at the next start). A
restart with the same output folder continues: files in the ledger with the same size and time
are not done again; a file modified after it was done is segmented again and its masks and
particle rows replaced (if it can no longer be read, they are removed).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from ..io.outputs import OutputFolder
from .arrivals import Complete, FolderWatcher, Unreadable
from .ledger import LEDGER_NAME, TABLE_NAME, Ledger, ParticleTable
from .summary import SIZE_COLUMNS, LiveSummary

__all__ = ["watch", "WatchReport", "SUMMARY_NAME"]

SUMMARY_NAME = "summary.png"
_PARTIAL = ".watch_partial"  # masks are written here, then renamed into the output folder


@dataclass
class WatchReport:
    """What one :func:`watch` session did.

    Attributes
    ----------
    files, frames, particles : int
        Segmented in this session.
    skipped : list of str
        Files reported unreadable (or refused) in this session.
    latencies : list of float
        Seconds from the final version of each file seen to its last mask written.
    stopped : str
        Why it stopped: ``"once"``, ``"stop_after"``, ``"timeout"``, ``"stop"`` (the ``stop``
        event) or ``"interrupt"`` (Ctrl-C).
    abandoned : str or None
        The file being segmented when a second Ctrl-C came (done again at the next start).
    done_total : int
        Files in the ledger, all sessions.
    out : Path
    """

    out: Path
    files: int = 0
    frames: int = 0
    particles: int = 0
    skipped: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    stopped: str = ""
    abandoned: str | None = None
    done_total: int = 0

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C stopped it (the command line exits with status 130)."""
        return self.stopped == "interrupt"

    def __str__(self) -> str:
        text = (f"watch: {self.files} file(s), {self.frames} frame(s), {self.particles} particles "
                f"segmented in this session")
        if self.latencies:
            text += (f"; latency median {np.median(self.latencies):.2f} s, "
                     f"max {max(self.latencies):.2f} s")
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        if self.abandoned:
            text += f"; {self.abandoned} abandoned (done again at the next start)"
        why = {"once": "nothing left to do", "stop_after": "--stop-after reached",
               "timeout": "no new file within the timeout", "stop": "stop requested",
               "interrupt": "Ctrl-C"}.get(self.stopped, self.stopped)
        return text + f"; {self.done_total} file(s) done in {self.out}; stopped: {why}"


class _Stopper:
    """Stop requests: a ``threading.Event`` from the caller and, in the main thread, Ctrl-C —
    the first one asks to stop after the current file, a second raises KeyboardInterrupt."""

    def __init__(self, event: threading.Event | None):
        self.event = event
        self.interrupted = False
        self._wake = threading.Event()
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_interrupt(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self._wake.set()
        try:  # os.write: print() is not safe inside a signal handler
            os.write(2, b"\ntem-keras watch: stopping after the current file "
                        b"(Ctrl-C again abandons it)\n")
        except OSError:
            pass

    @property
    def requested(self) -> bool:
        return self.interrupted or (self.event is not None and self.event.is_set())

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            self._wake.wait(min(left, 0.1))


def _check_options(interval, settle, give_up, stop_after, timeout, summary_every, min_area,
                   split_touching, mask_format):
    from ..validation import check_bool, check_choice, check_int, check_number

    check_number("interval", interval, 0, low_open=True)
    check_number("settle", settle, 0)
    check_number("give_up", give_up, 0)
    check_int("stop_after", stop_after, 1, optional=True)
    check_number("timeout", timeout, 0, optional=True)
    check_number("summary_every", summary_every, 0)
    check_int("min_area", min_area, 0)
    check_bool("split_touching", split_touching)
    check_choice("mask_format", mask_format, ("png", "tif"))


def _check_output(out: Path, folder: Path, overwrite: bool) -> None:
    """Refuse the watched folder, and a non-empty folder that is not a watch's (unless ``overwrite``)."""
    if out.resolve() == folder.resolve():
        raise TEMInputError("the output folder must not be the watched folder (masks would be "
                            "taken for new micrographs); give another -o folder", out)
    ours = (out / LEDGER_NAME).exists()
    if (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()) and not ours
            and not overwrite):
        raise FileExistsError(f"{out}: is not empty and holds no watch ledger ({LEDGER_NAME}): "
                              "choose a new output folder, or pass --overwrite to write into it")


def _mask_names(names) -> list[str]:
    return [f"{name}_mask.{ext}" for name in names for ext in ("png", "tif")]


def _own_files(files: OutputFolder) -> None:
    """A watch folder of a tem_keras older than the manifest: record what its ledger says it
    wrote (the ledger, table, figure and the masks of the files done)."""
    out = files.path
    if files.owner is None and (out / LEDGER_NAME).is_file():
        names = [LEDGER_NAME, TABLE_NAME, SUMMARY_NAME] + _mask_names(Ledger(out / LEDGER_NAME).outputs())
        files.record(*[n for n in names if (out / n).exists()])


def _remove_outputs(files: OutputFolder, names) -> None:
    """Remove the masks of output ``names`` that the manifest lists."""
    listed = files.listed()
    for name in _mask_names(names):
        if name in listed:
            (files.path / name).unlink(missing_ok=True)


def watch(model, folder, out, *, options=None, pattern=None, interval: float = 0.5,
          settle: float = 0.5, give_up: float = 10.0, once: bool = False,
          stop_after: int | None = None, timeout: float | None = None, min_area: int = 10,
          split_touching: bool = True, mask_format: str = "png", summary_every: float = 5.0,
          overwrite: bool = False, stop: threading.Event | None = None, verbose: bool = True,
          **keywords) -> WatchReport:
    """Segment each new micrograph of ``folder`` as it is written; masks, particles and a
    summary figure go to ``out`` (see the module docstring for the steps).

    Parameters
    ----------
    model : keras.Model, Run, str or Path
        Anything :func:`tem_keras.load` opens (run folder, export folder, ``.keras`` file).
    folder : str or Path
        The folder the acquisition software writes into.
    out : str or Path
        Output folder: ``<name>_mask.png``, ``particles.csv``, ``summary.png`` and the ledger
        ``watch_done.jsonl``. A folder with a ledger is continued.
    pattern : str or list of str, optional
        Glob patterns relative to ``folder`` (default: every format :mod:`tem_keras.io` reads).
    interval : float
        Seconds between two looks at the folder.
    settle : float
        Seconds a file's size and modification time must stay unchanged before it is read.
    give_up : float
        Seconds a file that stopped changing may stay unreadable before it is reported (once)
        and skipped until it changes.
    once : bool
        Stop when every file in the folder is done (or skipped) and none is being written.
    stop_after : int, optional
        Stop after this many files segmented in this session.
    timeout : float, optional
        Stop after this many seconds without a new or changing file.
    options : PredictOptions, optional
        How to predict, as :func:`tem_keras.predict` (or its fields as keywords: ``threshold``,
        ``tile_size``, ``batch_size``, ``mixed_precision``, ``tta``, ``pixel_size_nm``, ...).
    min_area, split_touching
        Smallest particle in pixels, and whether touching particles are split
        (:func:`tem_keras.measure_particles`; splitting takes most of its time).
    mask_format : {"png", "tif"}
    summary_every : float
        Smallest number of seconds between two drawings of ``summary.png``.
    overwrite : bool
        Write into a non-empty folder that is not a watch's, or start a watch's folder again from
        nothing (its ledger, table, figure and masks are removed first). Files tem_keras did not
        write are never replaced: a file whose mask would replace one is skipped with a message
        (the folder's manifest, ``.tem_keras_output``, lists what tem_keras wrote).
    stop : threading.Event, optional
        Set it (from another thread) to stop after the current file.
    verbose : bool
        Print a line per file on stdout (unreadable files are reported on stderr in any case).

    Returns
    -------
    WatchReport
        Also when stopped by Ctrl-C (``report.interrupted``).

    Raises
    ------
    TEMInputError
        The folder does not exist, the output folder is the watched folder, a corrupt ledger.
    FileExistsError
        ``out`` is not empty and is not a watch's folder, or another process is writing to it.
    """
    from ..inference.options import PredictOptions
    from ..inference.predict import open_model

    options = PredictOptions.build(options, **keywords)
    _check_options(interval, settle, give_up, stop_after, timeout, summary_every, min_area,
                   split_touching, mask_format)
    folder, out = Path(folder), Path(out)
    watcher = FolderWatcher(folder, [pattern] if isinstance(pattern, str) else pattern,
                            settle=settle, give_up=give_up, exclude=out)
    _check_output(out, folder, overwrite)
    files = OutputFolder(out, "watch", inputs=[folder])
    if not (out / LEDGER_NAME).exists():  # a table or figure of the user's is never replaced
        for name in (TABLE_NAME, SUMMARY_NAME):
            files.check(name, overwrite=True)
    table = ParticleTable(out / TABLE_NAME)
    table.lock()  # before anything in ``out`` is touched: a second process is refused here
    report = WatchReport(out)
    try:
        _own_files(files)
        if overwrite:  # start over: remove what earlier watches wrote here, and only that
            _remove_outputs(files, Ledger(out / LEDGER_NAME).outputs())
            for name in (LEDGER_NAME, TABLE_NAME, SUMMARY_NAME):
                if name in files.listed():
                    (out / name).unlink(missing_ok=True)
        files.record(LEDGER_NAME, TABLE_NAME, SUMMARY_NAME)
        bundle = open_model(model)
        options.for_model(bundle)  # the model's own threshold checked before the first file
        _warm_up(bundle, options.mixed_precision)
        ledger = Ledger(out / LEDGER_NAME)
        sizes = table.keep_only(ledger.outputs(), size_columns=SIZE_COLUMNS)
        summary = LiveSummary(out / SUMMARY_NAME, every=summary_every)
        summary.restore(ledger.done(), sizes)
        segmenter = _Segmenter(bundle, options, files, ledger, table, summary,
                               dict(min_area=min_area, split_touching=split_touching), mask_format)
        if verbose:
            done = len(ledger.done())
            print(f"watching {folder} (Ctrl-C stops); masks, {TABLE_NAME} and {SUMMARY_NAME} in "
                  f"{out}" + (f"; {done} file(s) already done there" if done else ""), flush=True)
        with _Stopper(stop) as stopper:
            _loop(watcher, segmenter, stopper, report, interval=interval, once=once,
                  stop_after=stop_after, timeout=timeout, verbose=verbose)
    finally:
        shutil.rmtree(out / _PARTIAL, ignore_errors=True)
        table.close()
    report.done_total = len(ledger.done())
    if verbose:
        print(report, flush=True)
    return report


def _warm_up(bundle, mixed_precision) -> None:
    """Build the model's Predictor (rewritten, traced once for every shape) and call it once,
    and import what the first file needs and measure two touching disks (the compiled particle
    kernels: loaded from Numba's cache, compiled on the very first run), so that the first
    file's latency is that of the others."""
    import skimage.io  # noqa: F401  (masks)

    from ..inference import Predictor, resolve_precision
    from ..analysis.particles import measure_particles

    rows, columns = np.mgrid[:40, :64]
    disks = (np.hypot(rows - 20, columns - 22) < 10) | (np.hypot(rows - 20, columns - 40) < 10)
    measure_particles(disks, 1.0, image=disks.astype(np.float32))

    predictor = Predictor.of(bundle.model)
    side = 4 * predictor.downsampling
    predictor.function(resolve_precision(mixed_precision))(
        np.zeros((1, side, side, predictor.channels), np.float32))


def _loop(watcher, segmenter, stopper, report, *, interval, once, stop_after, timeout, verbose):
    """Poll, segment, redraw, until a stop condition; Ctrl-C is turned into ``report.stopped``."""
    ledger = segmenter.ledger
    last_activity = time.monotonic()
    current = None
    try:
        while True:
            for event in watcher.poll(ledger.states):
                current = event.key
                if isinstance(event, Unreadable):
                    segmenter.skip(event, event.message, report)
                else:
                    segmenter.segment(event, report, verbose)
                watcher.forget(event.key)
                current = None
                last_activity = time.monotonic()
                if stopper.requested or (stop_after and report.files >= stop_after):
                    break
            segmenter.summary.refresh()  # between polls: files ready now are not held up by it
            if stopper.requested:
                report.stopped = "interrupt" if stopper.interrupted else "stop"
            elif stop_after and report.files >= stop_after:
                report.stopped = "stop_after"
            elif once and watcher.pending(ledger.states) == 0:
                report.stopped = "once"
            elif (timeout is not None
                  and time.monotonic() - max(last_activity, watcher.last_change) >= timeout):
                report.stopped = "timeout"
            if report.stopped:
                break
            stopper.wait(interval)
    except KeyboardInterrupt:
        report.stopped, report.abandoned = "interrupt", current
        if current is not None:
            watcher.forget(current)
    finally:
        segmenter.summary.refresh(force=True)


class _Segmenter:
    """Segments one complete file and commits its outputs (masks, table rows, ledger line)."""

    def __init__(self, bundle, options, files, ledger, table, summary, measure_options, mask_format):
        self.bundle, self.options, self.files, self.out = bundle, options, files, files.path
        self.ledger, self.table, self.summary = ledger, table, summary
        self.measure_options, self.mask_format = measure_options, mask_format
        self.owners = {name: e["file"] for e in ledger.done() for name in e.get("outputs", ())}
        self.noted = False

    def skip(self, event, message: str, report) -> None:
        """Report ``event``'s file and record it as skipped; outputs of an earlier version of it
        are removed (they no longer describe the file)."""
        print(f"tem-keras watch: {message}", file=sys.stderr, flush=True)
        self._drop_earlier_outputs(event.key, keep=())
        self.ledger.append({"file": event.key, "size": event.state.size,
                            "mtime_ns": event.state.mtime_ns, "status": "skipped",
                            "error": message})
        report.skipped.append(event.key)

    def segment(self, event: Complete, report, verbose: bool) -> None:
        from ..inference import particle_rows, predict_stack, save_prediction
        from ..io import MicrographStack

        frames = event.frames
        source = frames[0] if len(frames) == 1 else MicrographStack(
            frames.__getitem__, len(frames), path=event.path)
        started = time.monotonic()
        try:
            results = list(predict_stack(self.bundle, source, options=self.options, return_image=True))
        except TEMInputError as error:
            self.skip(event, f"{error} (skipped until it changes)", report)
            return
        predicted = time.monotonic()
        names = [r.name for r in results]
        clash = self._clash(names, event.key)
        if clash:  # the stem is another file's: named by its path, as predict names such inputs
            from ..inference.sources import path_stem

            stem = path_stem(event.key)  # key: the path relative to the watched folder
            for r in results:
                r.stem = stem
            names = [r.name for r in results]
            clash = self._clash(names, event.key)
        if clash:
            self.skip(event, f"{event.path}: its outputs would replace those of {', '.join(clash)} "
                      "(same file name stem); rename one of them", report)
            return
        masks = [f"{name}_mask.{self.mask_format}" for name in names]
        try:  # a file the watch did not write is never replaced
            for mask in masks:
                self.files.check(mask, overwrite=True)
        except FileExistsError as error:
            self.skip(event, f"{error} (skipped until it changes)", report)
            return
        self.files.record(*masks)
        partial = self.out / _PARTIAL
        for result in results:
            written = save_prediction(result, partial, mask_format=self.mask_format, overwrite=True)
            for path in written.values():
                os.replace(path, self.out / Path(path).name)
        written_at = time.monotonic()
        tables = [particle_rows(r, **self.measure_options) for r in results]
        if not self.noted and any(r.pixel_size_nm is None for r in results):
            from ..analysis.particles import PIXEL_SIZE_HELP

            print(f"tem-keras watch: note: {event.key}: {PIXEL_SIZE_HELP}", file=sys.stderr, flush=True)
            self.noted = True
        self._drop_earlier_outputs(event.key, keep=names)
        import pandas as pd

        self.table.append(pd.concat(tables, ignore_index=True))
        measured = time.monotonic()
        acquired = event.state.mtime_ns / 1e9
        stats = [self.summary.add(t, acquired) for t in tables]
        latency = written_at - event.detected
        self.ledger.append({
            "file": event.key, "size": event.state.size, "mtime_ns": event.state.mtime_ns,
            "status": "done", "outputs": names,
            "frames": [[n, c, None if np.isnan(m) else round(m, 6)] for n, (c, m) in zip(names, stats)],
            "size_column": self.summary.column, "latency_s": round(latency, 4),
            "read_s": round(event.read_s, 4), "predict_s": round(predicted - started, 4),
            "write_s": round(written_at - predicted, 4), "measure_s": round(measured - written_at, 4),
            "finished": datetime.now().isoformat(timespec="seconds")})
        self.owners.update(dict.fromkeys(names, event.key))
        count = sum(c for c, _ in stats)
        report.files += 1
        report.frames += len(results)
        report.particles += count
        report.latencies.append(latency)
        if verbose:
            means = [m for _, m in stats if np.isfinite(m)]
            size = f", mean diameter {np.mean(means):.3g} {self.summary.units}" if means else ""
            print(f"{datetime.now():%H:%M:%S} {event.key}: {len(results)} frame(s), {count} "
                  f"particles{size}; latency {latency:.2f} s", flush=True)

    def _clash(self, names, key: str) -> list[str]:
        """The other files whose outputs have one of ``names`` (case ignored)."""
        owners = {n.casefold(): f for n, f in self.owners.items()}
        return sorted({owners[n.casefold()] for n in names
                       if owners.get(n.casefold(), key) != key})

    def _drop_earlier_outputs(self, key: str, keep) -> None:
        """A file done before and modified since: remove its particle rows, and its masks not in
        ``keep`` (those are about to be replaced)."""
        previous = self.ledger.entries.get(key)
        if previous is None or previous["status"] != "done":
            return
        old = set(previous.get("outputs", ()))
        for name in old - set(keep):
            (self.out / f"{name}_mask.{self.mask_format}").unlink(missing_ok=True)
            self.owners.pop(name, None)
        self.table.remove(old)
