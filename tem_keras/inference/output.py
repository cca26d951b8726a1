"""What is made from a prediction for people to look at: overlays, files, particle rows, threshold
curves."""

from __future__ import annotations

import numpy as np

__all__ = ["overlay", "save_prediction", "particle_rows", "plot_threshold_curve"]


def overlay(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 picture of ``image`` (1–99 % contrast stretch) with the mask tinted and outlined.

    Class 1 is red, 2 green, 3 blue, ...; particle outlines are drawn in full colour.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, (1, 99))
    grey = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = np.array([[1, 0.15, 0.1], [0.1, 0.9, 0.2], [0.2, 0.4, 1], [1, 0.9, 0.1], [0.9, 0.2, 1]])
    for k in range(1, int(mask.max(initial=0)) + 1):
        region = mask == k
        if not region.any():
            continue
        colour = colours[(k - 1) % len(colours)]
        rgb[region] = (1 - alpha) * rgb[region] + alpha * colour
        edge = region & ~ndimage.binary_erosion(region)
        rgb[edge] = colour
    return (rgb * 255 + 0.5).astype(np.uint8)


#: the files of one prediction, after ``<name>_``
_KINDS = ("mask.png", "mask.tif", "probabilities.tif", "overlay.png")


def save_prediction(prediction, out_dir, *, mask_format: str = "png",
                    probabilities: bool = False, overlay_png: bool = False,
                    overwrite: bool = False) -> dict:
    """Write a :class:`~tem_keras.inference.Prediction` into ``out_dir``.

    Files: ``<name>_mask.<png|tif>`` (:attr:`~tem_keras.inference.Prediction.name`, unique among
    the inputs of one call), optionally ``<name>_probabilities.tif`` (float32, one page
    per class, pixel size in nm) and ``<name>_overlay.png`` (:func:`overlay`).

    ``out_dir`` is a folder, or a :class:`tem_keras.io.outputs.OutputFolder` (one for many
    predictions: it knows the inputs, and reads its manifest once). Each file is recorded in the
    folder's manifest; an existing file replaces only one tem_keras wrote, and only with
    ``overwrite`` (a file tem_keras did not write is never replaced).

    Returns the paths written, by kind.
    """
    from ..io import write_mask, write_probabilities
    from ..io.outputs import OutputExistsError, OutputFolder

    folder = out_dir if isinstance(out_dir, OutputFolder) else OutputFolder(out_dir)
    names = {"mask": f"{prediction.name}_mask.{mask_format}"}
    if probabilities:
        if prediction.probabilities is None:
            raise ValueError("predict with return_probabilities=True to save probabilities")
        names["probabilities"] = f"{prediction.name}_probabilities.tif"
    if overlay_png:
        if prediction.image is None:
            raise ValueError("predict with return_image=True to save overlays")
        names["overlay"] = f"{prediction.name}_overlay.png"
    for name in names.values():  # all refused before any is written
        folder.check(name, overwrite=overwrite)
    # an earlier prediction's files for this input that this one does not replace (the other mask
    # format, probabilities or an overlay not asked for now) would sit beside the new mask as if
    # they were its own: removed with ``overwrite`` (only files tem_keras wrote), refused without
    stale = [f"{prediction.name}_{kind}" for kind in _KINDS if f"{prediction.name}_{kind}" not in names.values()]
    stale = [name for name in stale if (folder.path / name).is_file() and name in folder.listed()]
    if stale and not overwrite:
        raise OutputExistsError(f"holds {stale[0]} from an earlier prediction of this input, which "
                                "this one would not replace; pass --overwrite (overwrite=True) to "
                                "remove it, or choose another output folder", folder.path)
    claim = {kind: folder.claim(name, overwrite=overwrite) for kind, name in names.items()}
    written = {"mask": write_mask(claim["mask"], prediction.mask, overwrite=True)}
    if probabilities:
        p = prediction.probabilities
        written["probabilities"] = write_probabilities(
            claim["probabilities"], p[..., 1] if p.shape[-1] == 2 else p, prediction.pixel_size_nm,
            overwrite=True)
    if overlay_png:
        from skimage.io import imsave

        imsave(claim["overlay"], overlay(prediction.image, prediction.mask), check_contrast=False)
        written["overlay"] = claim["overlay"]
    for name in stale:
        (folder.path / name).unlink(missing_ok=True)
    return written


def particle_rows(prediction, *, min_area: int = 10, split_touching: bool = True):
    """The particles of a :class:`~tem_keras.inference.Prediction` as rows of a particle table:
    ``image`` (:attr:`~tem_keras.inference.Prediction.name`) and ``frame`` (missing for a single
    image) first (:func:`tem_keras.analysis.particles.add_source_columns`), then
    :func:`tem_keras.analysis.particles.measure_particles`' columns (with ``mean_intensity`` when the
    prediction kept its image). The missing-pixel-size warning is left to the caller (the
    ``*_nm`` columns are NaN then)."""
    import warnings

    from ..analysis.particles import MissingPixelSizeWarning, add_source_columns, measure_particles

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPixelSizeWarning)
        table = measure_particles(prediction.mask, prediction.pixel_size_nm, image=prediction.image,
                                  min_area=min_area, split_touching=split_touching)
    return add_source_columns(table, prediction.name, prediction.frame)


def plot_threshold_curve(curve, path, *, best: float | None = None):
    """Precision, recall and F1 against threshold (from :func:`tem_keras.analysis.metrics.threshold_curve`).

    Parameters
    ----------
    curve : pandas.DataFrame or dict
        Columns ``threshold`` and any of ``precision``, ``recall``, ``f1``, ``dice``, ``iou``.
    path : str or Path
        PNG file to write.
    best : float, optional
        Marked with a vertical line.
    """
    from ..io.figures import new_figure, save_figure

    fig, ax = new_figure(figsize=(5, 3.6))
    thresholds = np.asarray(curve["threshold"])
    for key in ("precision", "recall", "f1", "iou"):
        if key in curve:
            ax.plot(thresholds, np.asarray(curve[key]), label=key)
    if best is not None:
        ax.axvline(best, color="grey", ls="--", label=f"best {best:.2f}")
    ax.set(xlabel="threshold on particle probability", ylabel="score", ylim=(0, 1.02), xlim=(0, 1))
    ax.legend(loc="lower left")
    return save_figure(fig, path)
