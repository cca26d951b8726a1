"""The run folder: its default name, and creating it without overwriting what a user has."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["default_run_dir", "prepare_run_dir"]


def default_run_dir(dataset_dir, model, seed: int, suffix: str = "") -> Path:
    """``runs/<dataset>-<model>-seed<seed><suffix>``."""
    name = (model if isinstance(model, str) else model.get("name", "model") if isinstance(model, dict)
            else getattr(model, "name", "auto") if model is not None else "auto")
    return Path("runs") / f"{Path(dataset_dir).resolve().name}-{name}-seed{seed}{suffix}"


def prepare_run_dir(run_dir: Path, request: dict, *, resume: bool, overwrite: bool) -> dict | None:
    """Create the run folder; return the stored ``config.json`` of an unfinished run that is resumed.

    Raises
    ------
    FileExistsError
        The folder holds a finished run or other files (nothing is overwritten unless
        ``overwrite``), or an unfinished run asked for with different settings.
    """
    if run_dir.exists() and any(run_dir.iterdir()):
        unfinished = (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
        if overwrite:
            shutil.rmtree(run_dir)
        elif unfinished and resume and (run_dir / "config.json").is_file():
            old = json.loads((run_dir / "config.json").read_text())
            changed = sorted(k for k in set(request) | set(old.get("request", {}))
                             if old.get("request", {}).get(k) != request.get(k))
            if changed:
                raise FileExistsError(
                    f"{run_dir}: an unfinished run with different settings ({', '.join(changed)}) is "
                    "here; pass the same settings to resume it, or overwrite=True / another run_dir")
            return old
        else:
            state = "a finished run" if (run_dir / "metrics.json").exists() else "files"
            raise FileExistsError(f"{run_dir}: holds {state}; pass overwrite=True to replace it, "
                                  "or choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return None
