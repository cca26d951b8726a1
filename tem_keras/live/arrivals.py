"""Files that the acquisition software has finished writing: the completeness rule.

A file in the watched folder is *complete* when

1. its size and modification time have not changed for ``settle`` seconds (seen unchanged by two
   polls at least ``settle`` seconds apart), and
2. the real reader (:func:`tem_keras.io.read_stack`) reads every frame of it, and
3. its size and modification time are still the same after that read.

A read that fails, or a file that changes while it is read, means the writer has not finished:
the file is tried again at a later poll and nothing is reported. A file that stays unreadable
after it stopped changing for ``give_up`` seconds is reported once (:class:`Unreadable`, with
the reader's message) and left alone until it changes again. The readers of tem_keras fail on
every truncated file tried (TIFF, NumPy, PNG: half a file is never read as an image); a
multi-page TIFF that is appended page by page with pauses longer than ``settle`` can still be read
with fewer pages, and is then read again (and its outputs replaced) when it changes.

The folder is polled (standard library only) rather than followed through file-system events:
events are not delivered for files written over a network share from the microscope computer, and
a "file closed" event does not prove the writer has finished (acquisition programs may open a file
several times).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileState", "Complete", "Unreadable", "FolderWatcher", "file_state", "read_all_frames"]


@dataclass(frozen=True)
class FileState:
    """Size in bytes and modification time in ns of a file: what "unchanged" compares."""

    size: int
    mtime_ns: int


def file_state(path) -> FileState | None:
    """The :class:`FileState` of ``path``, or None when it is gone (or not a regular file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileState(int(st.st_size), int(st.st_mtime_ns))


@dataclass
class Complete:
    """A file read completely, ready to be segmented.

    Attributes
    ----------
    path : Path
    key : str
        The file's path relative to the watched folder (POSIX separators): its name in the ledger.
    state : FileState
        Size and time of the version that was read.
    frames : list of Micrograph
        Every frame, in memory (the file is not read again).
    detected : float
        ``time.monotonic()`` when this version of the file was first seen (the latency's start).
    read_s : float
        Seconds spent in the reader.
    """

    path: Path
    key: str
    state: FileState
    frames: list
    detected: float
    read_s: float


@dataclass
class Unreadable:
    """A file that stopped changing but could not be read; reported once per version."""

    path: Path
    key: str
    state: FileState
    message: str


@dataclass
class _Seen:
    state: FileState
    since: float              # monotonic time this state was first seen
    failures: int = 0         # failed reads of this state
    reported: bool = False    # reported as unreadable


class FolderWatcher:
    """Polls a folder and hands out each file once it is complete (module docstring).

    Parameters
    ----------
    folder : str or Path
        The folder the acquisition software writes into.
    patterns : sequence of str, optional
        Glob patterns relative to ``folder`` (``"*.dm4"``, ``"run*/*.tif"``). Default: the files
        :func:`tem_keras.io.image_files` lists (every format tem_keras reads, hidden files left out).
    settle : float
        Seconds a file's size and modification time must stay unchanged.
    give_up : float
        Seconds a file that stopped changing may stay unreadable before it is reported.
    exclude : str or Path, optional
        A folder whose files are never taken (the output folder when it lies inside ``folder``).
    """

    def __init__(self, folder, patterns=None, *, settle: float = 0.5, give_up: float = 10.0,
                 exclude=None):
        from ..errors import TEMInputError

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise TEMInputError("is not a folder (watch needs the folder the microscope writes into)",
                                self.folder)
        self.patterns = None if patterns is None else [str(p) for p in patterns]
        self.settle, self.give_up = float(settle), float(give_up)
        self._excluded = None  # the excluded folder's path parts, relative to ``folder``
        if exclude is not None:
            try:
                self._excluded = Path(exclude).resolve().relative_to(self.folder.resolve()).parts
            except ValueError:
                pass  # outside the folder: none of its files can match
        self._seen: dict[str, _Seen] = {}
        self.last_change = time.monotonic()

    # ---- listing ------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The matching files now in the folder, in natural order (``img2`` before ``img10``)."""
        from ..io import image_files, natural_key

        if self.patterns is None:
            found = image_files(self.folder)
        else:
            found = {p for pattern in self.patterns for p in self.folder.glob(pattern)
                     if p.is_file() and not p.name.startswith(".")}
            found = sorted(found, key=natural_key)
        if self._excluded:
            n = len(self._excluded)
            found = [p for p in found if p.relative_to(self.folder).parts[:n] != self._excluded]
        return found

    def key(self, path: Path) -> str:
        """The name of ``path`` in the ledger: relative to the folder, POSIX separators."""
        return Path(path).relative_to(self.folder).as_posix()

    # ---- the rule -----------------------------------------------------------------------

    def poll(self, finished: Mapping[str, FileState] | None = None
             ) -> Iterator[Complete | Unreadable]:
        """Look at the folder once; yield the files that became complete (read) or unreadable.

        Parameters
        ----------
        finished : mapping of key -> FileState
            Files already done (or reported): skipped while their state is the same. A file
            that changed since is taken again.

        Notes
        -----
        A generator: each file is read when the caller asks for the next one, so one file's
        frames are in memory at a time.
        """
        finished = finished or {}
        now = time.monotonic()
        present = set()
        ready = []
        for path in self.files():
            key = self.key(path)
            present.add(key)
            state = file_state(path)
            if state is None or finished.get(key) == state:
                continue
            seen = self._seen.get(key)
            if seen is None or seen.state != state:
                self._seen[key] = _Seen(state, now)
                self.last_change = now
                continue
            if now - seen.since >= self.settle and not seen.reported:
                ready.append((path, key, seen))
        for key in set(self._seen) - present:  # deleted or renamed away
            del self._seen[key]
        for path, key, seen in ready:
            event = self._try_read(path, key, seen)
            if event is not None:
                yield event

    def pending(self, finished: Mapping[str, FileState] | None = None) -> int:
        """Files seen by the last poll that are neither finished nor reported yet."""
        finished = finished or {}
        return sum(1 for key, seen in self._seen.items()
                   if finished.get(key) != seen.state and not seen.reported)

    def forget(self, key: str) -> None:
        """Drop what is known about ``key`` (it was finished, or its processing was abandoned)."""
        self._seen.pop(key, None)

    def _try_read(self, path: Path, key: str, seen: _Seen):
        from ..errors import TEMInputError

        start = time.monotonic()
        try:
            frames = read_all_frames(path)
        except TEMInputError as error:
            frames, problem = None, error.problem
        after = file_state(path)
        now = time.monotonic()
        if after != seen.state:  # written to while being read: not finished
            if after is not None:
                self._seen[key] = _Seen(after, now)
                self.last_change = now
            return None
        if frames is not None:
            return Complete(path, key, seen.state, frames, seen.since, now - start)
        seen.failures += 1
        if now - seen.since < self.give_up:
            return None  # perhaps a writer that paused: try again at the next poll
        seen.reported = True
        return Unreadable(path, key, seen.state,
                          f"{path}: {problem} (unchanged for {now - seen.since:.0f} s and unreadable "
                          f"in {seen.failures} tries: skipped until it changes)")


def read_all_frames(path) -> list:
    """Every frame of a micrograph file as in-memory :class:`~tem_keras.io.Micrograph` objects
    (copies: nothing stays mapped to the file).

    The readers' warnings and log lines about a truncated file are held back; those of a file
    read successfully are issued again.

    Raises
    ------
    TEMInputError
        From the reader, for an incomplete or corrupt file.
    """
    import numpy as np

    from ..io import Micrograph, read_stack

    with warnings.catch_warnings(record=True) as caught, _quiet_loggers():
        warnings.simplefilter("always")
        stack = read_stack(path)
        frames = []
        for i in range(len(stack)):
            mg = stack[i]
            frames.append(Micrograph(np.array(mg.data, copy=True), mg.pixel_size_nm,
                                     dict(mg.metadata), mg.path))
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return frames


class _quiet_loggers:
    """Raise the level of the readers' loggers (tifffile, RosettaSciIO) for one read attempt:
    they log a line for each half-written file otherwise."""

    names = ("tifffile", "rsciio")

    def __enter__(self):
        self.saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in self.names]
        for logger, _ in self.saved:
            logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc):
        for logger, level in self.saved:
            logger.setLevel(level)
