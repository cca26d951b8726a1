"""TIFF: frames from tifffile's page layout, calibration from RosettaSciIO.

Which axes are frames is decided from the pages themselves, never from the array shape alone:

* every series of the file is read, in file order: a TIFF written page by page
  (``tifffile.imwrite(path, frame, append=True)``) holds one series per page; series of
  different image sizes are refused (a stack has one size);

* every axis other than ``Y`` and ``X`` is a frame axis (``Q``, ``I``, ``T``, ``Z``, ``C`` of
  ImageJ hyperstacks and OME files, ...), flattened in file order;
* samples stored *contiguously* after ``X`` (``YXS``) with an RGB photometric tag are colour: the
  frame is converted to luminance (BT.709); grey with extra samples (alpha) keeps the grey
  sample; other contiguous samples are frames;
* samples stored as *separate planes* (``SYX``) are frames. This is what
  ``tifffile.imwrite(np.stack([a, b, c]))`` writes for 3 or 4 grey frames (it tags them RGB), and
  RGB images from cameras, ImageJ and image editors are contiguous, so a planar RGB tag does not
  turn three micrographs into one colour image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import TEMInputError
from .core import FrameSource, axis_calibration, luminance, square_pixel_size, unreadable_error
from .rosetta import acquisition_fields, read_signals

_COLOUR = {"RGB", "YCBCR", "CIELAB", "ICCLAB", "ITULAB", "SEPARATED"}


class _SeriesLayout:
    """How frame ``i`` of one TIFF series maps to a page and a plane inside it."""

    def __init__(self, series, index: int):
        page = series.keyframe
        axes, shape = page.axes, tuple(int(s) for s in page.shape)
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"pages with axes {axes!r} hold no [Y, X] image")
        photometric = getattr(page.photometric, "name", str(page.photometric))
        contiguous = axes.endswith("S") and axes.index("S") > axes.index("X")
        self.colour = contiguous and photometric in _COLOUR and shape[-1] >= 3
        # grey + alpha (or other extra samples) stored contiguously: the grey sample
        self.grey_extra = contiguous and not self.colour and len(page.extrasamples or ()) > 0
        image_axes = "YXS" if self.colour or self.grey_extra else "YX"
        self.index = index
        self.page_axes, self.page_shape = axes, shape
        self.order = [i for i, a in enumerate(axes) if a not in image_axes] + \
                     [axes.index(a) for a in image_axes]
        self.per_page = int(np.prod([shape[i] for i, a in enumerate(axes)
                                     if a not in image_axes]))
        self.n_pages = len(series.pages)
        self.series_axes, self.series_shape = series.axes, tuple(int(s) for s in series.shape)
        n_total = int(np.prod(self.series_shape)) // int(np.prod(shape))
        self.paged = n_total == self.n_pages  # else: ImageJ > 4 GB and the like, read whole
        self.n_frames = n_total * self.per_page
        self.frame_shape = (shape[axes.index("Y")], shape[axes.index("X")])
        self.dtype = page.dtype
        self.photometric = photometric

    def frames_of(self, page_array: np.ndarray) -> np.ndarray:
        """``[n, H, W]`` (or ``[n, H, W, S]`` for colour) from one page's array."""
        page_array = np.transpose(page_array.reshape(self.page_shape), self.order)
        if self.grey_extra:
            page_array = page_array[..., 0]
        return page_array.reshape(-1, *page_array.shape[-(3 if self.colour else 2):])

    def read(self, tif, i: int) -> np.ndarray:
        """Frame ``i`` of this series (grey ``[H, W]``)."""
        page, plane = divmod(int(i), self.per_page)
        series = tif.series[self.index]
        if self.paged:
            frame = self.frames_of(series.asarray(key=page))[plane]
        else:
            whole = series.asarray().reshape(-1, *self.page_shape)
            frame = self.frames_of(whole[page])[plane]
        return luminance(frame[..., :3]) if self.colour else frame


def _describe(layouts) -> str:
    sizes = [f"series {s.index}: {s.n_frames} frame(s) of {s.frame_shape[0]}×{s.frame_shape[1]} px"
             for s in layouts[:4]]
    return "; ".join(sizes) + ("; ..." if len(layouts) > 4 else "")


class _TiffLayout:
    """The frames of every series of a TIFF, in file order: a file written page by page
    (``tifffile.imwrite(path, frame, append=True)``) holds one series per page, and each is a
    frame. Reduced-resolution pages (pyramid levels, thumbnails marked as such) are not frames.

    Raises
    ------
    TEMInputError
        Series of different image sizes: the file is not one stack.
    """

    def __init__(self, tif, path):
        self.series = [_SeriesLayout(s, k) for k, s in enumerate(tif.series)]
        first = self.series[0]
        if any(s.frame_shape != first.frame_shape for s in self.series):
            raise TEMInputError("holds pages of different sizes (" + _describe(self.series) + "); "
                                "a stack needs one size: save each size in its own file", path)
        self.offsets = np.cumsum([0] + [s.n_frames for s in self.series])
        self.n_frames = int(self.offsets[-1])
        self.frame_shape = first.frame_shape
        self.colour = first.colour
        self.dtype = first.dtype
        self.photometric = first.photometric
        self.series_axes = first.series_axes if len(self.series) == 1 else \
            f"{len(self.series)} series of {first.series_axes}"

    def read(self, tif, i: int) -> np.ndarray:
        """Frame ``i`` counted over all series."""
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.series[k].read(tif, i - int(self.offsets[k]))


class _TiffFrames:
    """Frames of every TIFF series, read page by page (the file is opened for each read)."""

    def __init__(self, path: Path, layout: _TiffLayout):
        self.path, self.layout = path, layout
        self.shape = (layout.n_frames, *layout.frame_shape)
        self.dtype = layout.dtype

    def __getitem__(self, index):
        import tifffile

        (i,) = index if isinstance(index, tuple) else (index,)
        with tifffile.TiffFile(self.path) as tif:
            return self.layout.read(tif, i)


def open_tiff(path: Path, fmt: str) -> FrameSource:
    """TIFF: pixels with tifffile one page at a time; calibrations through RosettaSciIO
    (DigitalMicrograph, ImageJ, FEI, Zeiss, ...).

    RosettaSciIO names only the ImageJ unit ``micron``; other ImageJ units (``nm``, ``Å``)
    are taken from the ImageJ description here. Resolution tags alone (dpi) are ignored.
    The calibration is used only when RosettaSciIO saw the same ``[H, W]`` as tifffile.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            layout = _TiffLayout(tif, path)
            unit = (tif.imagej_metadata or {}).get("unit")
    except TEMInputError:
        raise
    except Exception as error:
        raise unreadable_error(path, fmt, error) from error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # readers warn about tags they do not know
        try:
            signals = read_signals(path, fmt, "tiff")
        except TEMInputError:
            signals = []
        try:
            metadata, pixel_size_nm = _calibration_of(path, fmt, signals, layout, unit)
        finally:
            _close_tiff_handles(signals)
    metadata["original_dtype"] = str(layout.dtype)
    metadata["tiff_axes"] = layout.series_axes
    if layout.colour:
        metadata["channels"] = layout.photometric
    if layout.n_frames > 1:
        metadata["stack_shape"] = (layout.n_frames,)
    frames = _TiffFrames(path, layout)

    def read_frame(i):
        try:
            return frames[i]
        except Exception as error:  # truncated data only shows when the pixels are read
            raise unreadable_error(path, fmt, error) from error

    return FrameSource(layout.n_frames, layout.frame_shape, read_frame, pixel_size_nm, metadata,
                       True)


def _calibration_of(path, fmt, signals, layout, unit) -> tuple[dict, float | None]:
    metadata = {"format": fmt, "signal_type": "image", "units": None, "scale": 1.0}
    signal = signals[0] if signals else None
    if signal is None:
        metadata["note"] = "no calibration could be read (RosettaSciIO failed on this file)"
        return metadata, None
    axes = signal["axes"]
    if tuple(int(s) for s in signal["data"].shape[-2:]) != layout.frame_shape or len(axes) < 2:
        metadata["note"] = ("calibration ignored: RosettaSciIO saw a different image shape "
                            f"{tuple(signal['data'].shape)}")
        return metadata, None
    for axis in axes[-2:]:
        if unit and axis.get("units") is None:
            axis["units"] = unit
    (y_nm, yrec), (x_nm, xrec) = (axis_calibration(a.get("scale"), a.get("units"))
                                  for a in axes[-2:])
    if yrec and xrec:
        metadata["signal_type"] = "diffraction"
    metadata.update(units=axes[-1].get("units"), scale=float(axes[-1].get("scale", 1.0)))
    metadata.update(acquisition_fields(signal))
    pixel_size_nm = square_pixel_size(path, y_nm, x_nm, metadata)
    if len(axes) > 2:
        metadata["frame_axes"] = [{"name": a.get("name"), "scale": float(a.get("scale", 1.0)),
                                   "units": a.get("units")} for a in axes[:-2]]
    return metadata, pixel_size_nm


def _close_tiff_handles(signals: list[dict]) -> None:
    """Close the TiffFile that RosettaSciIO's lazy reader keeps inside its dask graph (its
    pixels are read with :class:`_TiffFrames` instead), rather than leave it to the garbage
    collector."""
    import gc

    import tifffile

    seen, frontier = set(), [s["data"] for s in signals]
    for _ in range(12):
        following = []
        for item in frontier:
            if id(item) in seen or isinstance(item, (str, bytes, int, float, type)):
                continue
            seen.add(id(item))
            if isinstance(item, (tifffile.TiffFile, tifffile.TiffPageSeries)):
                getattr(item, "parent", item).close()
            else:
                following.extend(gc.get_referents(item))
        frontier = following
