"""The run folder: its default name, its lock, and creating it without overwriting what a user has.

A run folder holds a manifest (:mod:`tem_keras.io.outputs`) listing :data:`RUN_ENTRIES`;
``overwrite=True`` removes only those. A folder without a manifest is a run folder of an older
tem_keras when it holds ``config.json`` and nothing but names of :data:`RUN_ENTRIES` (the legacy
rule); any other folder holding files is refused.
"""

from __future__ import annotations

from pathlib import Path

from ..io.outputs import OutputExistsError, OutputFolder, legacy_folder, locked_folder
from ..validation.files import check_config_json, read_json

__all__ = ["RUN_ENTRIES", "check_run_dir", "default_run_dir", "prepare_run_dir", "run_lock"]

#: what ``fit`` writes into a run folder (``fold<i>``: the runs of a k-fold run)
RUN_ENTRIES = ("config.json", "split.json", "history.csv", "best.keras", "last.keras", "metrics.json",
               "thresholds.json", "plots", "logs", "backup", "pseudo_labels", "selftrain.json", "rounds")
_LEGACY_RUN = legacy_folder("config.json", RUN_ENTRIES + ("fold[0-9]*",))


def default_run_dir(dataset_dir, model, seed: int, suffix: str = "") -> Path:
    """``runs/<dataset>-<model>-seed<seed><suffix>``."""
    name = (model if isinstance(model, str) else model.get("name", "model") if isinstance(model, dict)
            else getattr(model, "name", "auto") if model is not None else "auto")
    return Path("runs") / f"{Path(dataset_dir).resolve().name}-{name}-seed{seed}{suffix}"


def check_run_dir(run_dir: Path, inputs=()) -> None:
    """Refuse, touching nothing, a run folder that is or holds one of ``inputs`` (the data
    set), is another kind of tem_keras output, or holds files tem_keras did not write."""
    OutputFolder(run_dir, "run", inputs=inputs).holds_output(legacy=_LEGACY_RUN)


def run_lock(run_dir: Path):
    """The lock of a run folder for one ``fit`` (a context manager; see
    :func:`tem_keras.io.outputs.locked_folder`): a second ``fit`` into it while the first runs is
    refused; a lock left by a killed ``fit`` is taken over."""
    return locked_folder(run_dir, doing="training into it",
                         advice="wait for it to finish (it resumes from here if it is stopped), "
                         "or choose another run folder")


def prepare_run_dir(run_dir: Path, request: dict, *, resume: bool, overwrite: bool,
                    entries=()) -> dict | None:
    """Create the run folder; return the stored ``config.json`` of an unfinished run that is resumed.

    ``entries`` are recorded in its manifest besides :data:`RUN_ENTRIES`.

    Raises
    ------
    OutputExistsError
        The folder holds a finished run (nothing is overwritten unless ``overwrite``), files
        tem_keras did not write or another kind of output (never overwritten), or an unfinished
        run asked for with different settings.
    """
    run_dir = Path(run_dir)
    folder = OutputFolder(run_dir, "run")
    if folder.holds_output(legacy=_LEGACY_RUN):
        # round 0's state is backed up; a student round's progress is in rounds/ (selftrain)
        unfinished = (((run_dir / "backup").is_dir() or (run_dir / "rounds").is_dir())
                      and not (run_dir / "metrics.json").exists())
        if overwrite:
            folder.clear()
        elif unfinished and resume and (run_dir / "config.json").is_file():
            path = run_dir / "config.json"
            old = check_config_json(read_json(path, advice="; pass --overwrite (overwrite=True) to start "
                                              "the run again"), path)
            changed = sorted(k for k in set(request) | set(old.get("request", {}))
                             if old.get("request", {}).get(k) != request.get(k))
            if changed:
                raise OutputExistsError(
                    f"an unfinished run with different settings ({', '.join(changed)}) is here; "
                    "pass the same settings to resume it, or overwrite=True (--overwrite) / another "
                    "run folder", run_dir)
            folder.record(*RUN_ENTRIES, *entries)
            return old
        else:
            state = "a finished run" if (run_dir / "metrics.json").exists() else "an unfinished run"
            raise OutputExistsError(f"holds {state}; pass overwrite=True (--overwrite) to replace it, "
                                    "or choose another run folder", run_dir)
    folder.record(*RUN_ENTRIES, *entries)
    return None
