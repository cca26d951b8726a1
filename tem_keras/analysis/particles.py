"""Particles from segmentation masks: label, split, measure in nm, size distributions, tracks.

Plain functions from masks or probability maps to :class:`pandas.DataFrame` tables, one row per
particle, with sizes in pixels and, when the pixel size is known, in nanometres.

References
----------
.. [1] J. P. Horwath, D. N. Zakharov, R. Mégret, E. A. Stach, npj Computational Materials 6,
       108 (2020) -- connected components of the thresholded output, particle size over time in
       ETEM movies.
.. [2] C. G. Granqvist, R. A. Buhrman, "Ultrafine metal particles", Journal of Applied Physics
       47, 2200 (1976) -- log-normal size distributions of nanoparticles.
.. [3] L. Vincent, P. Soille, "Watersheds in digital spaces", IEEE Transactions on Pattern
       Analysis and Machine Intelligence 13, 583-598 (1991).
.. [4] S. van der Walt et al., "scikit-image: image processing in Python", PeerJ 2, e453 (2014)
       -- ``regionprops``, whose definitions the measurements follow.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import TEMInputError
from ..validation import check_bool, check_int, check_number

__all__ = ["particle_mask", "label_particles", "measure_particles", "count_particles",
           "MissingPixelSizeWarning", "size_distribution",
           "plot_size_distribution", "track_particles", "plot_size_vs_time", "MEASUREMENT_COLUMNS",
           "SOURCE_COLUMNS", "add_source_columns"]

#: Columns of :func:`measure_particles`, in order (``mean_intensity`` only with an image).
MEASUREMENT_COLUMNS = (
    "label", "centroid_y_px", "centroid_x_px", "centroid_y_nm", "centroid_x_nm", "area_px",
    "area_nm2", "equivalent_diameter_px", "equivalent_diameter_nm", "major_axis_px",
    "minor_axis_px", "major_axis_nm", "minor_axis_nm", "eccentricity", "perimeter_px",
    "circularity", "solidity", "touches_border",
)

#: The first columns of every particle table of a prediction (``predict --particles``, ``watch``,
#: the demo's report), before :data:`MEASUREMENT_COLUMNS`: see :func:`add_source_columns`.
SOURCE_COLUMNS = ("image", "frame")


def add_source_columns(table, image: str, frame: int | None = None):
    """A table of :func:`measure_particles` with :data:`SOURCE_COLUMNS` first: ``image`` (its
    name) and ``frame`` (its index in a stack; missing for a single image, an empty cell in a
    CSV file). One column order for every particle table of tem_keras.

    >>> import numpy as np
    >>> mask = np.zeros((8, 8), bool); mask[2:6, 2:6] = True
    >>> add_source_columns(measure_particles(mask, 0.5, min_area=1), "a")[["image", "frame", "area_px"]]
      image  frame  area_px
    0     a   <NA>     16.0
    """
    import pandas as pd

    table = table.copy()
    table.insert(0, SOURCE_COLUMNS[0], image)
    table.insert(1, SOURCE_COLUMNS[1], pd.array([frame] * len(table), dtype="Int64"))
    return table


# --------------------------------------------------------------------------------------------
# Mask and labels
# --------------------------------------------------------------------------------------------

def particle_mask(mask_or_probabilities, *, threshold: float = 0.5, class_index: int = 1):
    """Boolean particle mask from a mask, a class-label map or a probability map.

    Parameters
    ----------
    mask_or_probabilities : array_like
        * bool ``[H, W]``: used as is;
        * integer ``[H, W]``: class-label map, particles are ``== class_index`` (a {0, 255}
          mask counts 255 as 1);
        * float ``[H, W]``: particle probability, particles are ``>= threshold``;
        * float ``[H, W, K]``: per-class probabilities, particles are
          ``[..., class_index] >= threshold``.
    threshold : float
        Probability threshold (e.g. from :func:`tem_keras.analysis.metrics.otsu_threshold`).
    class_index : int
        Particle class.

    Returns
    -------
    (H, W) ndarray of bool
    """
    arr = np.asarray(getattr(mask_or_probabilities, "data", mask_or_probabilities))
    check_number("threshold", threshold, 0.0, 1.0)
    check_int("class_index", class_index, 0)
    if arr.dtype.kind not in "biuf":
        raise TEMInputError(f"a mask must be an array of booleans, integer labels or "
                            f"probabilities, got dtype {arr.dtype}")
    if arr.size == 0:
        raise TEMInputError(f"the mask is empty: shape {arr.shape} has no pixels")
    if arr.ndim == 3 and np.issubdtype(arr.dtype, np.floating):
        if not 0 <= class_index < arr.shape[-1]:
            raise TEMInputError(f"class_index {class_index} is outside the {arr.shape[-1]} "
                                f"channels of the probability map {arr.shape}")
        arr = arr[..., class_index]
    if arr.ndim != 2:
        raise TEMInputError(f"expected a 2-D mask or probability map [H, W] (or [H, W, K] "
                            f"probabilities); got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        if class_index == 1 and arr.max() == 255 and arr.min() >= 0:
            bright = arr == 255
            if np.count_nonzero(arr) == np.count_nonzero(bright):  # only 0 and 255
                return bright
        return arr == class_index
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise TEMInputError("probability map holds NaN or infinite values")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise TEMInputError(f"probability map must lie in [0, 1]; got range "
                                f"[{float(arr.min()):g}, {float(arr.max()):g}]")
        return arr >= threshold
    raise TEMInputError(f"unsupported mask dtype {arr.dtype}")


def label_particles(mask, *, min_area: int = 10, split_touching: bool = True,
                    min_distance: int | None = None, split_depth: float | None = None,
                    exclude_border: bool = True) -> np.ndarray:
    """Label particles (8-connected), split touching ones, drop small and border particles.

    Touching particles are split by a watershed of the distance transform [3]_. Its markers are
    the maxima of the distance transform that are at least ``min_distance`` apart (distance to
    the nearest other maximum of the same component) *and* rise at least ``split_depth`` above
    the saddle that joins them to a higher maximum (h-maxima), so that a noisy outline or an
    elongated particle is not cut into pieces.

    Parameters
    ----------
    mask : (H, W) array_like of bool
        Particle mask.
    min_area : int
        Particles smaller than this many pixels (after splitting) are dropped.
    split_touching : bool
        Split touching particles by the distance-transform watershed.
    min_distance : int, optional
        Minimum distance (pixels) between the centres of two particles. Default: half the median
        equivalent radius of the connected components (at least 3 px), i.e. tied to the
        expected particle size.
    split_depth : float, optional
        Minimum depth (pixels of distance transform, > 0) of the neck between two particles for
        them to be split. Default: ``max(1.5, 0.15 * median radius)``.
    exclude_border : bool
        Drop particles touching the image border (their size is unknown).

    Returns
    -------
    (H, W) ndarray of int32
        0 = background, particles numbered 1..n in raster order of their first pixel.

    Notes
    -----
    The markers are found component by component in compiled passes (:mod:`tem_keras.analysis.watershed`);
    the labels are identical to those of the whole-image procedure with scikit-image
    (``peak_local_max(distance, labels=components)``, ``h_maxima``, one ``watershed`` of the
    whole image), which ``tests/test_particles.py`` keeps as the reference.
    """
    from skimage.measure import label

    from .regions import first_pixels
    from .watershed import watershed_split

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise TEMInputError(f"mask must be 2-D [H, W]; got shape {mask.shape}")
    if mask.size == 0:
        raise TEMInputError(f"the mask is empty: shape {mask.shape} has no pixels")
    min_area = check_int("min_area", min_area, 0)
    check_int("min_distance", min_distance, 1, optional=True)
    check_number("split_depth", split_depth, 0.0, low_open=True, optional=True)
    check_bool("split_touching", split_touching)
    check_bool("exclude_border", exclude_border)
    components = np.ascontiguousarray(label(mask, connectivity=2), dtype=np.int32)
    n_components = int(components.max())
    if n_components == 0:
        return components.astype(np.int32)
    labels = components
    if split_touching:
        areas = np.bincount(components.ravel())[1:]
        median_radius = float(np.sqrt(np.median(areas) / np.pi))
        if min_distance is None:
            min_distance = max(3, int(round(0.5 * median_radius)))
        if split_depth is None:
            split_depth = max(1.5, 0.15 * median_radius)
        labels = watershed_split(np.ascontiguousarray(mask), components, n_components,
                                 int(min_distance), float(split_depth))
    # drop border particles and small ones; number the others 1..n in raster order of their
    # first pixel
    first, area, border = first_pixels(labels, int(labels.max()))
    keep = (area > 0) & (area >= min_area)
    if exclude_border:
        keep &= ~border
    kept = np.flatnonzero(keep)
    lut = np.zeros(first.size, np.int32)
    lut[kept[np.argsort(first[kept])]] = np.arange(1, kept.size + 1, dtype=np.int32)
    return lut[labels]


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

PIXEL_SIZE_HELP = ("no pixel size: the *_nm columns are NaN. Give it with pixel_size_nm=... "
                   "(tem-keras predict/measure --pixel-size-nm), or write \"pixel_size_nm\" in the "
                   "data set's dataset.json; PNG, JPEG, BMP and plain TIFF files carry none")
_NOTED: dict = {}


class MissingPixelSizeWarning(UserWarning):
    """Particles were measured without a pixel size (shown once per process)."""


def _note_missing_pixel_size() -> None:
    if not _NOTED.get("pixel_size"):
        _NOTED["pixel_size"] = True
        warnings.warn(PIXEL_SIZE_HELP, MissingPixelSizeWarning, stacklevel=3)


def count_particles(mask_or_probabilities, *, threshold: float = 0.5, class_index: int = 1,
                    min_area: int = 1, split_touching: bool = False,
                    exclude_border: bool = False) -> int:
    """Number of particles in a segmentation: for counting per frame, not for sizes.

    :func:`measure_particles` is tuned for size distributions: it drops particles touching the
    border (their size is unknown), drops particles under 10 px and splits touching ones, and
    so reports a few per cent fewer particles than the mask's connected components. Counting
    keeps them all by default: the 8-connected components of the mask.

    Parameters
    ----------
    mask_or_probabilities : array_like
        Mask, class-label map or probability map (see :func:`particle_mask`).
    threshold, class_index
        How the particle mask is made (see :func:`particle_mask`).
    min_area : int, default 1
        Ignore specks smaller than this many pixels.
    split_touching, exclude_border : bool, default False
        As :func:`label_particles`; set ``split_touching=True`` to count touching particles
        one by one.

    Returns
    -------
    int
    """
    mask = particle_mask(mask_or_probabilities, threshold=threshold, class_index=class_index)
    labels = label_particles(mask, min_area=min_area, split_touching=split_touching,
                             exclude_border=exclude_border)
    return int(labels.max())


def _pixel_size(pixel_size_nm, image):
    if pixel_size_nm is None and image is not None:
        pixel_size_nm = getattr(image, "pixel_size_nm", None)
    if pixel_size_nm is None:
        return None
    if isinstance(pixel_size_nm, (bool, np.bool_)):  # True would be a pixel of 1 nm
        raise TEMInputError(f"pixel_size_nm must be a number; got {pixel_size_nm!r}")
    try:
        value = float(pixel_size_nm)
    except (TypeError, ValueError):
        raise TEMInputError(f"pixel_size_nm must be a number; got {pixel_size_nm!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise TEMInputError(f"pixel_size_nm must be a positive number; got {pixel_size_nm!r}")
    return value


def _ellipse(central, area):
    """Major and minor axes and eccentricity of the ellipse with the same second central moments
    (``mu_20``, ``mu_02``, ``mu_11`` per row), from the inertia tensor as regionprops does."""
    mu20, mu02, mu11 = central.T
    both = mu20 + mu02
    tensor = np.empty((len(area), 2, 2))
    tensor[:, 0, 0] = (both - mu20) / area
    tensor[:, 1, 1] = (both - mu02) / area
    tensor[:, 0, 1] = tensor[:, 1, 0] = -mu11 / area
    small, large = np.clip(np.linalg.eigvalsh(tensor), 0, None).T
    with np.errstate(invalid="ignore", divide="ignore"):
        eccentricity = np.where(large > 0, np.sqrt(1 - small / large), 0.0)
    return 4 * np.sqrt(large), 4 * np.sqrt(small), eccentricity


def measure_particles(mask_or_probabilities, pixel_size_nm: float | None = None, *, image=None,
                      threshold: float = 0.5, min_area: int = 10, split_touching: bool = True,
                      exclude_border: bool = True, class_index: int = 1,
                      min_distance: int | None = None, split_depth: float | None = None,
                      return_labels: bool = False):
    """Measure every particle of a segmentation: position, size and shape, in px and nm.

    Parameters
    ----------
    mask_or_probabilities : array_like
        Mask, class-label map or probability map (see :func:`particle_mask`).
    pixel_size_nm : float, optional
        Pixel size in nm. Taken from ``image.pixel_size_nm`` when ``image`` is a
        :class:`~tem_keras.io.Micrograph` and this is None.
    image : array_like or Micrograph, optional
        The micrograph, for ``mean_intensity`` (and the pixel size).
    threshold, class_index
        How the particle mask is made (see :func:`particle_mask`).
    min_area, split_touching, min_distance, split_depth, exclude_border
        How particles are labelled (see :func:`label_particles`); ``min_area`` in pixels.
    return_labels : bool
        Also return the label image (its values are the ``label`` column).

    Returns
    -------
    table : pandas.DataFrame
        One row per particle, columns :data:`MEASUREMENT_COLUMNS` (and ``mean_intensity`` with
        an image): centroids (row ``y``, column ``x``), area, equivalent-disk diameter, major and
        minor axes of the ellipse with the same second moments, eccentricity, perimeter (the
        length of the particle's outline, smoothed by a 1 px Gaussian to undo the pixel
        staircase), circularity ``4 pi A / P**2`` of that outline and the area inside it (at most
        1; 0.98-0.995 for digitised disks of radius 3-50 px, about pi/4 for a square), solidity
        (area / convex area). The ``*_nm`` and ``*_nm2`` columns are always present and NaN when the pixel size is unknown.
    labels : (H, W) ndarray of int32
        Only with ``return_labels``.

    Notes
    -----
    The columns are those of ``skimage.measure.regionprops`` [4]_, computed for all particles at
    once in compiled passes (:mod:`tem_keras.analysis.regions`). Labels, areas, centroids,
    equivalent diameters, solidity and ``touches_border`` are identical to it; the perimeter is
    not regionprops' (a pixel-centre path, which made circularity reach 1.25 on small disks) but
    the length of ``skimage.measure.find_contours(gaussian_filter(region, 1), 0.5)``; the axes
    (relative 1e-12), ``eccentricity`` (absolute 1e-7: its square root magnifies the
    rounding of near-round particles) and ``mean_intensity`` (relative 1e-12) agree within the
    rounding of sums taken in another order (``tests/test_particles.py``).
    """
    import pandas as pd

    from .regions import region_measurements

    mask = particle_mask(mask_or_probabilities, threshold=threshold, class_index=class_index)
    check_int("min_area", min_area, 0)
    check_bool("return_labels", return_labels)
    px = _pixel_size(pixel_size_nm, image)
    if px is None:
        _note_missing_pixel_size()
    intensity = None
    if image is not None:
        intensity = np.asarray(getattr(image, "data", image), dtype=np.float64)
        if intensity.shape != mask.shape:
            raise TEMInputError(f"image and mask have different shapes: image {intensity.shape}, "
                                f"mask {mask.shape}")
    labels = label_particles(mask, min_area=min_area, split_touching=split_touching,
                             min_distance=min_distance, split_depth=split_depth,
                             exclude_border=exclude_border)
    n = int(labels.max())
    props = region_measurements(labels, n, intensity)
    scale = np.nan if px is None else px
    height, width = mask.shape
    area = props["area"].astype(float)
    centroid = props["centroid"].reshape(n, 2)
    major, minor, eccentricity = _ellipse(props["central_moments"].reshape(n, 3), area)
    perimeter = props["perimeter"]
    with np.errstate(invalid="ignore", divide="ignore"):  # the contour and its own area: <= 1
        circularity = np.where(perimeter > 0, 4 * np.pi * props["contour_area"] / perimeter ** 2, np.nan)
    bbox = props["bbox"].reshape(n, 4)
    touches = ((bbox[:, 0] == 0) | (bbox[:, 1] == 0) | (bbox[:, 2] == height)
               | (bbox[:, 3] == width))
    # regionprops' (4 A / pi) ** (1 / 2), element by element (numpy's ** 0.5 is a sqrt)
    diameter = np.array([(4 * a / np.pi) ** (1 / 2) for a in area.tolist()], dtype=float)
    table = pd.DataFrame({
        "label": np.arange(1, n + 1, dtype=np.int64),
        "centroid_y_px": centroid[:, 0],
        "centroid_x_px": centroid[:, 1],
        "centroid_y_nm": centroid[:, 0] * scale,
        "centroid_x_nm": centroid[:, 1] * scale,
        "area_px": area,
        "area_nm2": area * scale ** 2,
        "equivalent_diameter_px": diameter,
        "equivalent_diameter_nm": diameter * scale,
        "major_axis_px": major,
        "minor_axis_px": minor,
        "major_axis_nm": major * scale,
        "minor_axis_nm": minor * scale,
        "eccentricity": eccentricity,
        "perimeter_px": perimeter,
        "circularity": circularity,
        "solidity": area / props["convex_area"],
        "touches_border": touches.astype(bool),
    })
    if intensity is not None:
        table["mean_intensity"] = props["intensity_sum"] / props["area"]
    table.attrs["pixel_size_nm"] = px
    if return_labels:
        return table, labels
    return table


# --------------------------------------------------------------------------------------------
# Size distributions
# --------------------------------------------------------------------------------------------

def _size_values(table, column):
    if column not in getattr(table, "columns", ()):
        raise TEMInputError(f"table has no column {column!r}; columns: {list(table.columns)}")
    values = np.asarray(table[column], dtype=float)
    if column.endswith("_nm") and len(values) and np.isnan(values).all():
        fallback = column[:-3] + "_px"
        if fallback in table.columns:
            column, values = fallback, np.asarray(table[fallback], dtype=float)
    values = values[np.isfinite(values)]
    return column, values


def size_distribution(table, column: str = "equivalent_diameter_nm", bins="auto") -> dict:
    """Summary statistics and log-normal fit of particle sizes.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`measure_particles`.
    column : str
        Size column. If it is a ``*_nm`` column and all NaN (pixel size unknown), the matching
        ``*_px`` column is used; ``column`` in the result says which.
    bins : int, sequence or str
        Histogram bins (as :func:`numpy.histogram_bin_edges`).

    Returns
    -------
    dict
        ``column``, ``units`` (``"nm"`` or ``"px"``), ``count``, ``mean``, ``std`` (ddof=1),
        ``median``, ``min``, ``max``, ``lognormal_mu`` and ``lognormal_sigma`` (maximum-likelihood
        log-normal fit with zero location, ``scipy.stats.lognorm.fit(x, floc=0)``: the sizes'
        logarithms have mean mu and standard deviation sigma; median size ``exp(mu)``),
        ``geometric_mean`` = ``exp(mu)``, ``bin_edges`` and ``counts`` (lists). Statistics are
        NaN when there are too few particles (fewer than 1, or 2 for std and the fit).
    """
    from scipy import stats

    column, values = _size_values(table, column)
    units = "nm" if column.endswith("_nm") or column.endswith("_nm2") else "px"
    out = {"column": column, "units": units, "count": int(values.size), "mean": np.nan,
           "std": np.nan, "median": np.nan, "min": np.nan, "max": np.nan,
           "lognormal_mu": np.nan, "lognormal_sigma": np.nan, "geometric_mean": np.nan,
           "bin_edges": [], "counts": []}
    if values.size == 0:
        return out
    out.update(mean=float(values.mean()), median=float(np.median(values)),
               min=float(values.min()), max=float(values.max()))
    if values.size >= 2:
        out["std"] = float(values.std(ddof=1))
        positive = values[values > 0]
        if positive.size >= 2 and np.ptp(positive) > 0:
            sigma, _, scale = stats.lognorm.fit(positive, floc=0)
            out.update(lognormal_mu=float(np.log(scale)), lognormal_sigma=float(sigma),
                       geometric_mean=float(scale))
    edges = np.histogram_bin_edges(values, bins=bins)
    counts, edges = np.histogram(values, bins=edges)
    out["bin_edges"] = edges.tolist()
    out["counts"] = counts.tolist()
    return out


def plot_size_distribution(table, column: str = "equivalent_diameter_nm", bins="auto", ax=None):
    """Histogram of particle sizes with the fitted log-normal density.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`measure_particles`.
    column, bins
        As :func:`size_distribution`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    summary = size_distribution(table, column, bins)
    column, values = _size_values(table, column)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    if values.size:
        ax.hist(values, bins=summary["bin_edges"], density=True, color="0.75", edgecolor="0.4",
                label=f"n = {summary['count']}")
    if np.isfinite(summary["lognormal_sigma"]):
        x = np.linspace(max(values.min() * 0.5, 1e-12), values.max() * 1.3, 300)
        pdf = stats.lognorm.pdf(x, summary["lognormal_sigma"], scale=summary["geometric_mean"])
        label = (f"log-normal: median {summary['geometric_mean']:.3g} {summary['units']}, "
                 f"σ = {summary['lognormal_sigma']:.2f}")
        ax.plot(x, pdf, "C3", lw=2, label=label)
    name = column.replace("_", " ")
    ax.set_xlabel(name)
    ax.set_ylabel("probability density")
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------------------------
# Tracking over frames
# --------------------------------------------------------------------------------------------

def track_particles(masks_or_tables, pixel_size_nm: float | None = None, *,
                    max_distance: float = 10.0, memory: int = 0, **measure_kwargs):
    """Link particles across frames of a movie into tracks.

    Each frame's particles are matched to the tracks alive in the previous ``memory + 1``
    frames by minimising the total centroid displacement (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``); pairs further apart than ``max_distance`` are not
    linked and start a new track.

    Parameters
    ----------
    masks_or_tables : sequence
        One entry per frame: a mask / probability map (measured with :func:`measure_particles`)
        or a table from :func:`measure_particles`; a 3-D array ``[T, H, W]`` is a stack of masks.
    pixel_size_nm : float, optional
        Pixel size for masks (tables keep their own columns).
    max_distance : float
        Largest displacement between linked frames, in pixels.
    memory : int
        Number of frames a particle may disappear for and still continue its track.
    **measure_kwargs
        Passed to :func:`measure_particles` for masks.

    Returns
    -------
    pandas.DataFrame
        The measurement columns plus ``frame`` and ``particle`` (track id, 0, 1, ... in order
        of first appearance), sorted by particle then frame.
    """
    import pandas as pd
    from scipy.optimize import linear_sum_assignment

    if max_distance <= 0:
        raise TEMInputError(f"max_distance must be > 0 pixels; got {max_distance}")
    if memory < 0:
        raise TEMInputError(f"memory must be >= 0; got {memory}")
    frames = []
    for i, item in enumerate(masks_or_tables):
        if isinstance(item, pd.DataFrame):
            table = item.copy()
        else:
            table = measure_particles(item, pixel_size_nm, **measure_kwargs)
        for col in ("centroid_y_px", "centroid_x_px"):
            if col not in table.columns:
                raise TEMInputError(f"frame {i}: table lacks column {col!r}")
        table.insert(0, "frame", i)
        frames.append(table.reset_index(drop=True))
    if not frames:
        raise TEMInputError("no frames given")

    next_id = 0
    # active tracks: id -> (last frame, y, x)
    active: dict[int, tuple[int, float, float]] = {}
    for i, table in enumerate(frames):
        ids = np.full(len(table), -1, np.int64)
        alive = [(tid, y, x) for tid, (f, y, x) in active.items() if i - f <= memory + 1]
        if alive and len(table):
            prev_yx = np.array([[y, x] for _, y, x in alive])
            cur_yx = table[["centroid_y_px", "centroid_x_px"]].to_numpy(float)
            cost = np.sqrt(((prev_yx[:, None, :] - cur_yx[None, :, :]) ** 2).sum(-1))
            gated = np.where(cost <= max_distance, cost, max_distance * 1e6 + 1)
            rows, cols = linear_sum_assignment(gated)
            for r, c in zip(rows, cols):
                if cost[r, c] <= max_distance:
                    ids[c] = alive[r][0]
        for c in np.flatnonzero(ids < 0):
            ids[c] = next_id
            next_id += 1
        table.insert(1, "particle", ids)
        for tid, y, x in zip(ids, table["centroid_y_px"], table["centroid_x_px"]):
            active[int(tid)] = (i, float(y), float(x))
        active = {tid: v for tid, v in active.items() if i - v[0] <= memory}
    tracks = pd.concat(frames, ignore_index=True)
    return tracks.sort_values(["particle", "frame"], kind="stable").reset_index(drop=True)


def plot_size_vs_time(tracks, column: str = "equivalent_diameter_nm", *, ax=None,
                      seconds_per_frame: float | None = None, min_length: int = 2):
    """Particle size against time, one line per track (e.g. growth or coarsening in ETEM).

    Parameters
    ----------
    tracks : pandas.DataFrame
        Output of :func:`track_particles`.
    column : str
        Size column (a ``*_nm`` column that is all NaN falls back to ``*_px``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    seconds_per_frame : float, optional
        Time axis in seconds instead of frames.
    min_length : int
        Tracks seen in fewer frames are not drawn.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    column, _ = _size_values(tracks, column)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    for pid, track in tracks.groupby("particle"):
        if len(track) < min_length:
            continue
        t = track["frame"].to_numpy(float)
        if seconds_per_frame is not None:
            t = t * seconds_per_frame
        ax.plot(t, track[column], "-o", ms=3, lw=1, label=f"particle {pid}")
    ax.set_xlabel("time (s)" if seconds_per_frame is not None else "frame")
    ax.set_ylabel(column.replace("_", " "))
    if len(ax.lines) <= 10 and ax.lines:
        ax.legend(fontsize=7)
    return ax
