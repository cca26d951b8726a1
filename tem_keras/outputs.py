"""Output files that several processes may write: claimed, never silently replaced.

``predict --particles`` writes ``particles.csv`` row by row while frames are predicted. Two
processes writing to one output folder would each replace the other's table; instead the first
takes a lock file beside it (created atomically, holding its process id) and writes to a
partial file that replaces the table only at the end. A second process finding a live lock is
refused with a message; a lock left by a killed process is taken over. The Zarr stores of
:mod:`tem_keras.distributed` take the same lock (:func:`lock_output`) while a job writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["alive", "claim_output", "release_output", "lock_output", "unlock_output"]


def _lock_of(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


#: what a second process is told to do when ``particles.csv`` is locked
_CSV_ADVICE = ("give each process its own --out folder, or use --shard i/n (each shard writes "
               "particles_shard<i>of<n>.csv)")


def lock_output(path, *, advice: str = _CSV_ADVICE) -> Path:
    """Take the lock of ``path`` for this process: ``.<name>.lock`` beside it, created
    atomically, holding the process id. A lock left by a process that no longer exists is taken
    over. Returns the lock file; :func:`unlock_output` removes it.

    Raises
    ------
    FileExistsError
        Another live process holds the lock; the message ends with ``advice``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_of(path)
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or -1)
            except (OSError, ValueError):
                pid = -1
            if attempt == 0 and pid > 0 and not alive(pid):
                lock.unlink(missing_ok=True)  # left by a killed process
                continue
            raise FileExistsError(
                f"{path}: another tem-keras process (pid {pid}) is writing it now (lock {lock.name}); "
                f"{advice}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    return lock


def unlock_output(path) -> None:
    """Remove the lock of ``path`` if this process holds it."""
    lock = _lock_of(Path(path))
    try:
        mine = lock.read_text().strip() == str(os.getpid())
    except OSError:
        mine = False
    if mine:
        lock.unlink(missing_ok=True)


def claim_output(path, *, overwrite: bool) -> Path:
    """Lock ``path`` for this process; returns the partial file to write (``os.replace`` it onto
    ``path`` when complete, then call :func:`release_output`).

    Raises
    ------
    FileExistsError
        Another live process holds the lock, or ``path`` exists and not ``overwrite``.
    """
    path = Path(path)
    lock = lock_output(path)
    if path.exists() and not overwrite:  # written by a process that has finished
        lock.unlink(missing_ok=True)
        raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    return path.parent / f".{path.name}.{os.getpid()}.partial"


def release_output(path) -> None:
    """Remove this process's partial file and lock of ``path`` (after success or failure)."""
    path = Path(path)
    (path.parent / f".{path.name}.{os.getpid()}.partial").unlink(missing_ok=True)
    unlock_output(path)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
