"""What a watch has finished, on disk: the ledger and the particle table that follows it.

``OUT/watch_done.jsonl`` holds one JSON object a line for every file finished (``"status":
"done"``) or reported unreadable (``"skipped"``), with the size and modification time of the
version that was processed. A line is appended only after the file's masks and particle rows are
written, so the ledger is the commit record: at a restart, files in it with the same size and time
are not done again, a file changed since is done again (its masks and rows replaced), and
particle rows of a file whose ledger line was never written (a stop in between) are dropped.

``OUT/particles.csv`` has the columns of ``tem-keras predict --particles`` (``image``,
``frame``, then :data:`tem_keras.analysis.particles.MEASUREMENT_COLUMNS` and ``mean_intensity``). The
rows of one file are appended in one write. While a watch runs it holds the lock of
:func:`tem_keras.io.outputs.claim_output` on the table, so a second process writing to the same
folder is refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from .arrivals import FileState

__all__ = ["Ledger", "ParticleTable", "LEDGER_NAME", "TABLE_NAME"]

LEDGER_NAME = "watch_done.jsonl"
TABLE_NAME = "particles.csv"
_KEYS = {"file", "size", "mtime_ns", "status"}  # in every ledger line


def _append_durably(path: Path, text: str) -> None:
    """Append ``text`` in one write, flushed to the disk (a crash keeps it or a prefix of it)."""
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class Ledger:
    """The files a watch has finished (module docstring); the last line about a file wins.

    Parameters
    ----------
    path : str or Path
        ``OUT/watch_done.jsonl``; created at the first :meth:`append`. A last line cut short by a
        crash is removed when the ledger is opened.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.states: dict[str, FileState] = {}  # key -> version finished (done or skipped)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good = 0  # bytes up to the end of the last complete line
        for number, line in enumerate(raw.splitlines(keepends=True), 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("cut short")
                entry = json.loads(line)
                if not isinstance(entry, dict) or not _KEYS <= set(entry):
                    raise ValueError("not a ledger entry")
            except ValueError as error:
                if good + len(line) == len(raw):  # the last line: an append cut short
                    break
                raise TEMInputError(f"line {number} is corrupt ({error}); delete the line (its "
                                    "file is then segmented again) or the whole ledger",
                                    self.path) from None
            self._record(entry)
            good += len(line)
        if good < len(raw):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def _record(self, entry: dict) -> None:
        self.entries.pop(entry["file"], None)  # re-inserted: dict order = order of last lines
        self.entries[entry["file"]] = entry
        self.states[entry["file"]] = FileState(int(entry["size"]), int(entry["mtime_ns"]))

    def done(self) -> list[dict]:
        """Entries of the files segmented (not skipped), in the order they were last finished."""
        return [e for e in self.entries.values() if e["status"] == "done"]

    def outputs(self) -> set[str]:
        """Output names (``Prediction.name``: image column of the table) of the files done."""
        return {name for e in self.done() for name in e.get("outputs", ())}

    def append(self, entry: dict) -> None:
        """Record ``entry`` (keys ``file``, ``size``, ``mtime_ns``, ``status``, ...)."""
        _append_durably(self.path, json.dumps(entry, separators=(",", ":")) + "\n")
        self._record(entry)


class ParticleTable:
    """``OUT/particles.csv`` of a watch: locked while open, appended file by file.

    Parameters
    ----------
    path : str or Path
        The table.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._partial = None

    def lock(self) -> None:
        """Take the table's lock (:func:`tem_keras.io.outputs.claim_output`; its folder is made).

        Raises
        ------
        FileExistsError
            Another live process writes this table.
        """
        from ..io.outputs import claim_output

        self._partial = claim_output(self.path, overwrite=True, advice=(
            "wait for it to finish, or give this watch its own --out folder"))

    def keep_only(self, keep: set[str], *, size_columns=()) -> dict[str, np.ndarray]:
        """Keep only the rows whose ``image`` is in ``keep`` (rows of files the ledger does not
        list as done, and a last line cut short, are removed); needs the lock.

        Returns the values of ``size_columns`` in the rows kept (NaN where empty).
        """
        return self._rewrite(lambda image: image in keep, size_columns)

    def append(self, table) -> None:
        """Append the rows of a :func:`~tem_keras.analysis.particles.measure_particles` table (with the
        ``image`` and ``frame`` columns first); the header is written with the first rows."""
        buffer = io.StringIO()
        table.to_csv(buffer, header=not self.path.exists() or self.path.stat().st_size == 0, index=False)
        _append_durably(self.path, buffer.getvalue())

    def remove(self, names: set[str]) -> None:
        """Remove the rows of images ``names`` (a file segmented again); needs the lock."""
        if names:
            self._rewrite(lambda image: image not in names, ())

    def close(self) -> None:
        """Release the lock."""
        from ..io.outputs import release_output

        if self._partial is not None:
            release_output(self.path)
            self._partial = None

    def _rewrite(self, keep, size_columns) -> dict[str, np.ndarray]:
        if self._partial is None:
            raise RuntimeError(f"{self.path}: lock() the table before rewriting it")
        values = {c: [] for c in size_columns}
        if not self.path.exists():
            return {c: np.zeros(0) for c in size_columns}
        dropped = False
        with open(self.path, newline="", encoding="utf-8") as source, \
                open(self._partial, "w", newline="", encoding="utf-8") as target:
            lines = iter(source)
            header_line = next(lines, "")
            header = next(csv.reader([header_line]), [])
            if not header_line.endswith("\n") or header[:2] != ["image", "frame"]:
                raise TEMInputError("is not a particle table of tem-keras (first columns image, "
                                    "frame); move it away or choose another output folder", self.path)
            target.write(header_line)
            columns = [header.index(c) if c in header else None for c in size_columns]
            for line in lines:
                row = next(csv.reader([line]), [])
                if not line.endswith("\n") or not row or not keep(row[0]):
                    dropped = True
                    continue
                target.write(line)
                for c, i in zip(size_columns, columns):
                    values[c].append(row[i] if i is not None and i < len(row) and row[i] else "nan")
        if dropped:
            os.replace(self._partial, self.path)
        else:
            Path(self._partial).unlink(missing_ok=True)
        return {c: np.asarray(v, dtype=float) for c, v in values.items()}
