"""``sweep``: models × seeds on one data set, mean ± std of the test scores (Sytwu et al. 2022)."""

from __future__ import annotations

from pathlib import Path

from ..io.outputs import OutputFolder
from ..validation import check_int, check_path
from .config import check_fit_arguments
from .fitting import fit

__all__ = ["sweep"]


#: the tables and plot of a sweep, beside its run folders
_SWEEP_FILES = ("sweep.csv", "summary.csv", "dice_vs_receptive_field.png")


def _check_sweep_arguments(dataset_dir, models, seeds, out_dir, overwrite) -> None:
    """The arguments only ``sweep`` takes (``fit`` checks the rest), before anything is trained."""
    check_fit_arguments(dataset_dir, overwrite=overwrite)
    check_path("out_dir", out_dir, what="a folder")
    if isinstance(models, (str, dict)) or not isinstance(models, (list, tuple)) or not models:
        raise TypeError(f"models must be a non-empty list of registry names or {{'name': ...}} dicts, got {models!r}")
    for spec in models:
        if not (isinstance(spec, str) or (isinstance(spec, dict) and isinstance(spec.get("name"), str))):
            raise TypeError(f"models: each must be a registry name or a dict with a 'name', got {spec!r}")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple, range)) or not len(seeds):
        raise TypeError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        check_int("seeds", seed, 0)


def sweep(dataset_dir, models, seeds=(0, 1, 2, 3, 4), *, out_dir="sweeps", overwrite=False,
          **fit_kwargs):
    """Train every model with every seed and tabulate test scores (the Sytwu et al. 2022 study).

    Parameters
    ----------
    dataset_dir : str or Path
    models : list of str or dict
        Registry names or ``{"name": ..., **kwargs}`` configurations; a dict may carry a ``label``.
    seeds : sequence of int
    out_dir : str or Path
        Folder of the runs and of ``sweep.csv``, ``summary.csv`` and ``dice_vs_receptive_field.png``.
    **fit_kwargs
        Passed to :func:`fit`.

    Returns
    -------
    pandas.DataFrame
        Mean ± std of each score per configuration, with parameters and receptive field.
    """
    import pandas as pd

    from ..models.description import describe

    _check_sweep_arguments(dataset_dir, models, seeds, out_dir, overwrite)
    out_dir = Path(out_dir)
    folder = OutputFolder(out_dir, inputs=[dataset_dir])
    for name in _SWEEP_FILES:  # before hours of training
        folder.check(name, overwrite=overwrite)
    rows = []
    for spec in models:
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        label = spec.pop("label", None) or "_".join(
            [spec["name"]] + [f"{k}{v}" for k, v in spec.items() if k != "name"]).replace(" ", "")
        for seed in seeds:
            run = fit(dataset_dir, dict(spec), seed=seed, run_dir=out_dir / f"{label}-seed{seed}",
                      overwrite=overwrite, **fit_kwargs)
            info = describe(run.model, pixel_size_nm=run.pixel_size_nm)
            per_image = {k: v["mean"] for k, v in run.metrics.get("per_image", {}).items()}
            scores = {**per_image, "f1": per_image.get("dice"),
                      "soft_dice": run.metrics.get("at_0.5", {}).get("soft_dice")}
            rows.append({"label": label, "seed": seed, "parameters": info["parameters"],
                         "receptive_field_px": info["receptive_field_px"],
                         "receptive_field_nm": info.get("receptive_field_nm"),
                         **{k: scores.get(k) for k in ("dice", "soft_dice", "iou", "f1")}})
    table = pd.DataFrame(rows)
    table.to_csv(folder.claim("sweep.csv", overwrite=overwrite), index=False)
    summary = (table.groupby("label", sort=False)
               .agg(parameters=("parameters", "first"), receptive_field_px=("receptive_field_px", "first"),
                    receptive_field_nm=("receptive_field_nm", "first"),
                    dice_mean=("dice", "mean"), dice_std=("dice", "std"),
                    soft_dice_mean=("soft_dice", "mean"), soft_dice_std=("soft_dice", "std"),
                    n_seeds=("seed", "count"))
               .reset_index())
    summary.to_csv(folder.claim("summary.csv", overwrite=overwrite), index=False)
    from ..io.figures import plot_dice_vs_receptive_field

    plot_dice_vs_receptive_field(summary, folder.claim("dice_vs_receptive_field.png", overwrite=overwrite))
    return summary
