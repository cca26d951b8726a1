"""What tem_keras writes: output folders that remember their files, and locks.

Deletion is safe by construction
--------------------------------
Every folder tem_keras writes into holds a manifest, ``.tem_keras_output``: a text file whose
first line names the kind of folder (``# tem_keras output: run``) and whose other lines are the
paths, relative to the folder, of the files and folders tem_keras wrote there. A path is added
*before* the file is written, so a file left half-written by a killed process is still known.
Lines are only ever appended (one ``write`` per line, ``O_APPEND``), so processes writing into one
folder at once (``predict --shard``) keep each other's lines.

``--overwrite`` (``overwrite=True``) removes or replaces only what the manifest lists: a listed
folder is removed with what it holds, unless it has a manifest of its own (a demo's ``run/``,
a k-fold run's ``fold0/``), whose listed paths are removed in turn. Files tem_keras did not
write are never removed, whatever the options:

- :meth:`OutputFolder.prepare` (commands that make a whole folder: ``fit``'s run folder,
  ``export``, ``demo``, ``synth``) refuses a path that is a file, a folder that is or contains an
  input of the command (the data set, the model file, the run being exported), a folder of
  another kind (an export is never written over a run folder) and an existing folder without a
  manifest that holds files (hidden ones, such as ``.DS_Store``, aside). Folders made by versions
  of tem_keras before the manifest are recognised by a conservative rule, *legacy*: a folder
  whose every entry is a name that kind of folder holds, with the file that identifies it
  (``config.json`` for a run, ``tem_keras.json`` for an export, ...); it gets a manifest listing
  those entries and is treated as tem_keras's own.
- :meth:`OutputFolder.claim` (commands that add files to a folder: ``predict``, ``evaluate``,
  ``explain``, ``label``, ``measure``, ``sweep``) refuses a file that is an input of the command,
  and an existing file the manifest does not list (a hand-drawn mask, a table the user made);
  a listed one is replaced only with ``overwrite``. New files may go into any folder.

Arguments are checked by each command before :meth:`~OutputFolder.prepare` removes anything.

Locks
-----
``predict --particles`` writes ``particles.csv`` row by row while frames are predicted. Two
processes writing to one output folder would each replace the other's table; instead the first
takes a lock file beside it (created atomically, holding its process id) and writes to a
partial file that replaces the table only at the end. A second process finding a live lock is
refused with a message; a lock left by a killed process is taken over. The Zarr stores of
:mod:`tem_keras.distributed` take the same lock (:func:`lock_output`) while a job writes them,
and ``fit`` its run folder (:func:`locked_folder`): one run at a time per run folder.

Errors on output
----------------
:func:`output_error` turns an ``OSError`` (a read-only folder, a file where a folder belongs, a
full disk) into a one-line :class:`~tem_keras.errors.TEMInputError` naming the path; the
``tem-keras`` command reports every ``OSError`` that way (exit status 2).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
from contextlib import contextmanager, suppress
from fnmatch import fnmatch
from pathlib import Path

from ..errors import TEMInputError

__all__ = ["MANIFEST", "OutputExistsError", "OutputFolder", "alive", "claim_output", "legacy_folder", "lock_output",
           "partial_path", "locked_folder", "output_error", "refuse_inputs", "release_output", "unlock_output"]

#: the manifest of an output folder: what tem_keras wrote there
MANIFEST = ".tem_keras_output"
#: the lock of a folder one process at a time writes (a run folder)
FOLDER_LOCK = ".tem_keras.lock"
_KIND_LINE = "# tem_keras output: "
_HEADER = (_KIND_LINE + "{kind}\n# what tem_keras wrote in this folder, one path a line; "
           "--overwrite (overwrite=True) removes only these\n")




class OutputExistsError(TEMInputError, FileExistsError):
    """An output tem_keras will not write: it exists (and overwriting was not asked for), or it
    holds files tem_keras did not write. Both a :class:`~tem_keras.errors.TEMInputError` and a
    ``FileExistsError``; the message starts with the path."""


# ------------------------------------------------------------------------------- inputs
def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def _input_paths(inputs) -> list[Path]:
    """The paths among ``inputs`` (str, PathLike, objects with a ``path``, nested lists), made
    absolute; a glob pattern stands for the folder before its first wildcard."""
    found = []
    for item in inputs:
        if isinstance(item, (list, tuple, set, frozenset)):
            found += _input_paths(item)
            continue
        if not isinstance(item, (str, os.PathLike)):  # a Run's path (not a Keras layer's name)
            item = getattr(item, "path", None)
            item = item if isinstance(item, os.PathLike) else None
        if not isinstance(item, (str, os.PathLike)) or not str(item):
            continue
        parts = Path(item).expanduser().parts
        plain = [i for i, part in enumerate(parts) if any(c in part for c in "*?[")]
        path = Path(*parts[:plain[0]]) if plain else Path(*parts)
        found.append(_resolved(path if str(path) else "."))
    return found


def refuse_inputs(output, inputs, *, within: bool = True) -> None:
    """Refuse an output that is one of ``inputs`` or (``within``) a folder holding one.

    Raises
    ------
    TEMInputError
        Naming ``output`` and the input; nothing has been written.
    """
    out = _resolved(output)
    for source in _input_paths(inputs):
        if source == out:
            raise TEMInputError("is an input of this command (tem_keras never writes over its "
                                "inputs); choose another output", output)
        if within and source.is_relative_to(out):
            raise TEMInputError(f"holds {source}, an input of this command; choose an output "
                                "folder outside it", output)


# ------------------------------------------------------------------------------- manifests
def _visible(folder: Path) -> list[str]:
    """Entries of ``folder`` that are not hidden (``.DS_Store``, the manifest, locks)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def legacy_folder(identifying: str, names):
    """The *legacy* rule for folders written before the manifest: a function of a folder that
    returns its entries when every one matches a pattern of ``names`` and ``identifying`` is
    among them (the folder is then taken as tem_keras's), else None."""
    names = tuple(names)

    def entries(folder: Path):
        visible = _visible(folder)
        if identifying in visible and all(any(fnmatch(v, n) for n in names) for v in visible):
            return visible
        return None

    return entries


def _name(name) -> str:
    text = Path(name).as_posix()
    if "\n" in text or text.startswith("/") or ".." in Path(text).parts or text in ("", "."):
        raise TEMInputError("is not a file name tem_keras can record", name)
    return text


class OutputFolder:
    """A folder tem_keras writes into, with its manifest (see the module docstring).

    Parameters
    ----------
    path : str or Path
    kind : str
        What the folder is: ``"run"``, ``"export"``, ``"demo"``, ``"dataset"``, ... for folders
        made whole by one command (:meth:`prepare`), ``"files"`` for folders files are added to
        (:meth:`claim`).
    inputs : iterable
        Paths the command reads (objects with a ``path``, such as a Run, count too): never
        written over, and never inside a folder :meth:`prepare` makes.
    """

    def __init__(self, path, kind: str = "files", *, inputs=()):
        self.path = Path(path)
        self.kind = kind
        self.inputs = _input_paths(inputs)
        self._owner = self._listed = None
        self._on_disk = False

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r}, {self.kind!r})"

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def _read(self) -> None:
        self._owner, self._listed, self._on_disk = None, set(), False
        try:
            text = self.manifest.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return
        except (OSError, UnicodeDecodeError) as error:
            raise TEMInputError(f"cannot be read ({error}); remove it, or choose another folder",
                                self.manifest) from None
        self._owner, self._on_disk = "files", True
        for line in text.splitlines():
            if line.startswith(_KIND_LINE):
                self._owner = line[len(_KIND_LINE):].strip()
            elif line and not line.startswith("#"):
                self._listed.add(line)

    def listed(self, *, refresh: bool = False) -> set[str]:
        """The paths the manifest lists (relative, POSIX); empty without a manifest."""
        if self._listed is None or refresh:
            self._read()
        return self._listed

    @property
    def owner(self) -> str | None:
        """The kind the manifest declares; None without one."""
        self.listed()
        return self._owner

    def record(self, *names) -> None:
        """Add ``names`` to the manifest (created, with the folder, when missing) before they
        are written. The manifest is not read for this: a name listed twice is harmless."""
        new = list(dict.fromkeys(map(_name, names)))
        if self._listed is not None:  # read before: skip what it lists
            new = [n for n in new if n not in self._listed]
            if self._on_disk and not new:
                return
        self.path.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{n}\n" for n in new)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd = None
        if not self._on_disk:  # perhaps a new manifest: the header and what was adopted first
            try:
                fd = os.open(self.manifest, flags | os.O_EXCL, 0o644)
            except FileExistsError:  # there already (or another process made it just now)
                pass
            else:
                text = _HEADER.format(kind=self._owner or self.kind) + "".join(
                    f"{n}\n" for n in sorted(self._listed or ())) + text
                self._owner = self._owner or self.kind
        if fd is None:
            fd = os.open(self.manifest, flags)
        try:
            os.write(fd, text.encode("utf-8"))  # one write: lines of processes do not interleave
        finally:
            os.close(fd)
        self._on_disk = True
        if self._listed is not None:
            self._listed.update(new)

    # ---------------------------------------------------------------- folders made whole
    def holds_output(self, legacy=None) -> bool:
        """Whether the folder holds an earlier output of this kind (False: absent, empty, or
        nothing listed is left). Touches nothing on disk.

        Raises
        ------
        TEMInputError
            The path is a file, or is or holds an input.
        OutputExistsError
            A folder of another kind, or one without a manifest holding files (unless
            ``legacy``, from :func:`legacy_folder`, recognises it).
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise TEMInputError("exists and is not a folder; choose another name for the output", path)
        refuse_inputs(path, self.inputs, within=True)
        if not path.is_dir():
            return False
        owner = self.owner
        if owner is None:
            visible = _visible(path)
            if not visible:
                return False
            adopted = legacy(path) if legacy is not None else None
            if not adopted:
                shown = ", ".join(visible[:3]) + (", ..." if len(visible) > 3 else "")
                raise OutputExistsError(
                    f"is not empty: it holds files tem_keras did not write ({shown}) and no "
                    f"{MANIFEST} manifest; nothing was changed: choose a new or empty folder", path)
            self._owner, self._listed = self.kind, set(adopted)  # recorded with the next write
            return True
        if owner != self.kind:
            raise OutputExistsError(f"is a tem_keras {owner} folder, not a {self.kind} folder, and "
                                    "is never replaced by one; choose another folder", path)
        return any((path / n).exists() or (path / n).is_symlink() for n in self.listed())

    def check_prepare(self, *, overwrite: bool, legacy=None) -> bool:
        """What :meth:`prepare` would refuse, checked touching nothing (commands check their
        outputs before the long work starts); returns whether an earlier output is there.

        Raises
        ------
        OutputExistsError
            An earlier output is there and not ``overwrite``; see also :meth:`holds_output`.
        """
        held = self.holds_output(legacy)
        if held and not overwrite:
            raise OutputExistsError(
                f"already exists and is not empty (a tem_keras {self.kind} folder); pass "
                "--overwrite (overwrite=True) to replace it, or choose another folder", self.path)
        return held

    def prepare(self, *, overwrite: bool, legacy=None, entries=()) -> "OutputFolder":
        """Make the folder ready for a new output: check it (:meth:`check_prepare`), remove
        the earlier output when ``overwrite`` (:meth:`clear`), create it and record ``entries``.

        Raises
        ------
        OutputExistsError
            An earlier output is there and not ``overwrite``; see also :meth:`holds_output`.
        """
        if self.check_prepare(overwrite=overwrite, legacy=legacy):
            self.clear()
        self.record(*entries)
        return self

    def clear(self) -> None:
        """Remove every listed path (a listed folder with a manifest of its own: its listed
        paths, then the folder if nothing else is left); the manifest stays, listing nothing."""
        root = _resolved(self.path)
        for name in sorted(self.listed(), key=lambda n: (-n.count("/"), n)):
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if not _resolved(target.parent).joinpath(target.name).is_relative_to(root):
                continue  # not a path tem_keras wrote (an edited manifest)
            if target.is_symlink() or not target.is_dir():
                target.unlink()
            elif (target / MANIFEST).is_file():
                inner = OutputFolder(target)
                inner.clear()
                if not _visible(target):
                    inner.manifest.unlink()
                    with suppress(OSError):
                        target.rmdir()
            else:
                shutil.rmtree(target)
            parent = target.parent
            while parent != self.path and _resolved(parent).is_relative_to(root):
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
                parent = parent.parent
        partial = self.path / f"{MANIFEST}.{os.getpid()}.partial"
        partial.write_text(_HEADER.format(kind=self.owner or self.kind), encoding="utf-8")
        os.replace(partial, self.manifest)
        self._listed, self._on_disk = set(), True

    # ---------------------------------------------------------------- files added
    def check(self, name, *, overwrite: bool) -> Path:
        """The path of file ``name`` in the folder, if it may be written there (nothing is
        recorded): not an input, not an existing file tem_keras did not write, and an earlier
        one of tem_keras's only with ``overwrite``.

        Raises
        ------
        TEMInputError
            The folder is a file, or the file is an input.
        OutputExistsError
            The file exists: not listed (never replaced), or listed and not ``overwrite``.
        """
        name = _name(name)
        if self.path.exists() and not self.path.is_dir():
            raise TEMInputError("exists and is not a folder; choose another output folder", self.path)
        target = self.path / name
        refuse_inputs(self.path, self.inputs, within=False)
        refuse_inputs(target, self.inputs, within=True)
        if target.is_dir() and not target.is_symlink():
            raise TEMInputError("is a folder; give the name of a file to write", target)
        if target.exists() or target.is_symlink():
            if name not in self.listed() and name not in self.listed(refresh=True):
                raise OutputExistsError(
                    f"exists and was not written by tem_keras (no record of it in {MANIFEST}); it "
                    "is never replaced, even with --overwrite: move it, or choose another output",
                    target)
            if not overwrite:
                raise OutputExistsError("already exists; pass --overwrite (overwrite=True) to "
                                        "replace it", target)
        return target

    def claim(self, name, *, overwrite: bool) -> Path:
        """:meth:`check` file ``name``, record it and create its folder; returns its path."""
        target = self.check(name, overwrite=overwrite)
        self.record(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


# ------------------------------------------------------------------------------- locks
def _lock_of(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


#: what a second process is told to do when ``particles.csv`` is locked
_CSV_ADVICE = ("give each process its own --out folder, or use --shard i/n (each shard writes "
               "particles_shard<i>of<n>.csv)")


def _take_lock(lock: Path, path: Path, advice: str, doing: str) -> Path:
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
                f"{path}: another tem-keras process (pid {pid}) is {doing} now (lock {lock.name}); "
                f"{advice}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    return lock


def _release_lock(lock: Path) -> None:
    try:
        mine = lock.read_text().strip() == str(os.getpid())
    except OSError:
        mine = False
    if mine:
        lock.unlink(missing_ok=True)


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
    return _take_lock(_lock_of(path), path, advice, "writing it")


def unlock_output(path) -> None:
    """Remove the lock of ``path`` if this process holds it."""
    _release_lock(_lock_of(Path(path)))


@contextmanager
def locked_folder(folder, *, advice: str, doing: str = "writing into it"):
    """Hold ``folder/.tem_keras.lock`` (created atomically, holding the process id) for the
    ``with`` block: one process at a time writes the folder; a lock left by a process that no
    longer exists is taken over. The folder is created, and removed again afterwards when it
    was created here and is left empty.

    Raises
    ------
    TEMInputError
        ``folder`` is a file.
    FileExistsError
        Another live process holds the lock; the message ends with ``advice``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise TEMInputError("exists and is not a folder; choose another name for the output", folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / FOLDER_LOCK
    try:
        _take_lock(lock, folder, advice, doing)
        try:
            yield lock
        finally:
            _release_lock(lock)
    finally:
        if created:
            with suppress(OSError):
                folder.rmdir()  # only when nothing was written


def claim_output(path, *, overwrite: bool, advice: str = _CSV_ADVICE) -> Path:
    """Lock ``path`` for this process; returns the partial file to write (``os.replace`` it onto
    ``path`` when complete, then call :func:`release_output`).

    ``advice`` ends the message when another process holds the lock.

    Raises
    ------
    FileExistsError
        Another live process holds the lock, or ``path`` exists and not ``overwrite``.
    """
    path = Path(path)
    lock = lock_output(path, advice=advice)
    if path.exists() and not overwrite:  # written by a process that has finished
        lock.unlink(missing_ok=True)
        raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    return partial_path(path)


def partial_path(path) -> Path:
    """``.<name>.<pid>.partial`` beside ``path``: where this process builds ``path`` before renaming
    it into place. Those left by killed processes (files or folders) are removed first."""
    path = Path(path)
    for left in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        pid = left.name[len(path.name) + 2:-len(".partial")]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            if left.is_dir():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)
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


# ------------------------------------------------------------------------------- errors
def _blocking_file(path: Path) -> Path | None:
    """The first ancestor of ``path`` (or itself) that exists and is not a folder."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


#: errors of a two-path call (``os.replace``, ``os.rename``) that are about its target
_ABOUT_TARGET = {errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.EXDEV}


def output_error(error: OSError) -> TEMInputError:
    """A one-line :class:`TEMInputError` naming the path of ``error`` and the problem."""
    path, code = error.filename, error.errno
    if error.filename2 is not None and code in _ABOUT_TARGET:
        path = error.filename2  # os.replace(partial, target): the target is the problem
    if path is None:
        return TEMInputError(" ".join(str(error).split()) or type(error).__name__)
    path = Path(os.fsdecode(path))
    blocking = (_blocking_file(path) if code == errno.EEXIST
                else _blocking_file(path.parent) if code in (errno.ENOTDIR, errno.ENOENT) else None)
    if blocking is not None:
        return TEMInputError("is a file where a folder is needed; remove or rename it, or choose "
                             "another output", blocking)
    if code == errno.EISDIR:
        return TEMInputError("is a folder where a file is needed; choose another name", path)
    if code in (errno.EACCES, errno.EPERM):
        return TEMInputError("permission denied; check the permissions of the folder, or choose "
                             "another one", path)
    if code == errno.EROFS:
        return TEMInputError("is on a read-only file system; choose another folder", path)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return TEMInputError("no space left on the device; free some, or write elsewhere", path)
    return TEMInputError((error.strerror or str(error)).rstrip("."), path)
