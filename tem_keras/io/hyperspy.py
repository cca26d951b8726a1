"""HyperSpy signals in and out.

:func:`signal_stack` reads a HyperSpy ``Signal2D`` (lazy or not; navigation axes make a stack of
frames) as a :class:`~tem_keras.io.MicrographStack` whose pixel size comes from the calibration of
its two signal axes (nm, µm, Å, ... converted to nm, as for files); a lazy signal's frames are
computed one at a time. :func:`masks_to_signal` returns masks as a ``Signal2D`` with the input's
navigation and signal axes (names, scales, offsets, units).

HyperSpy is an optional dependency (``pip install "tem_keras[hyperspy]"``): signals are recognised
by their attributes, and HyperSpy is imported only to build an output signal.

References
----------
F. de la Peña et al., HyperSpy, https://hyperspy.org (``Signal2D``, ``axes_manager``).
"""

from __future__ import annotations

import numpy as np

from ..errors import TEMInputError
from .core import (
    Micrograph,
    MicrographStack,
    array_source,
    axis_calibration,
    square_pixel_size,
)

__all__ = ["is_signal", "masks_to_signal", "signal_stack"]


def is_signal(x) -> bool:
    """True for a HyperSpy signal (anything with ``axes_manager``, ``data`` and ``metadata``)."""
    return all(hasattr(x, name) for name in ("axes_manager", "data", "metadata"))


def _title(signal) -> str:
    try:
        return str(signal.metadata.get_item("General.title", "") or "")
    except AttributeError:
        return ""


def _axes_in_array_order(signal) -> list:
    """The signal's axes in the order of ``signal.data``'s dimensions (HyperSpy lists navigation
    and signal axes fastest first: x before y)."""
    manager = signal.axes_manager
    return list(manager.navigation_axes)[::-1] + list(manager.signal_axes)[::-1]


def signal_stack(signal) -> MicrographStack:
    """The frames of a HyperSpy ``Signal2D`` with the pixel size of its signal axes.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D or LazySignal2D
        Navigation axes (any number) are flattened into frames in the order of ``signal.data``.

    Returns
    -------
    MicrographStack
        One frame per navigation position; ``pixel_size_nm`` from the signal axes (None when
        they are uncalibrated, in reciprocal units or not square); metadata ``title`` and the
        navigation axes (``frame_axes``).

    Raises
    ------
    TEMInputError
        The signal does not have exactly two signal axes, or holds no real numbers.
    """
    manager = signal.axes_manager
    title = _title(signal)
    shape = tuple(int(s) for s in signal.data.shape)
    if manager.signal_dimension != 2:
        raise TEMInputError(f"a HyperSpy signal with two signal axes (Signal2D) is needed, got "
                            f"{manager.signal_dimension} signal axes in data of shape {shape} "
                            f"({title or 'untitled'}); use signal.as_signal2D(...) to choose the "
                            "image axes")
    x_axis, y_axis = manager.signal_axes
    (y_nm, y_reciprocal), (x_nm, x_reciprocal) = (axis_calibration(a.scale, a.units)
                                                  for a in (y_axis, x_axis))
    metadata = {"format": "HyperSpy signal", "title": title, "units": x_axis.units,
                "scale": float(x_axis.scale),
                "signal_type": "diffraction" if x_reciprocal and y_reciprocal else "image"}
    pixel_size_nm = square_pixel_size(title or None, y_nm, x_nm, metadata)
    if manager.navigation_dimension:
        metadata["frame_axes"] = [{"name": str(a.name), "scale": float(a.scale), "units": str(a.units)}
                                  for a in list(manager.navigation_axes)[::-1]]
    source = array_source(title or None, "HyperSpy signal", signal.data, pixel_size_nm, metadata)
    n = source.n_frames

    def frame(i: int) -> Micrograph:
        extra = {"frame": i, "n_frames": n} if n > 1 else {}
        return Micrograph(source.read_frame(i), pixel_size_nm, {**source.metadata, **extra})

    return MicrographStack(frame, n, pixel_size_nm=pixel_size_nm, frame_shape=source.frame_shape,
                           lazy=source.lazy)


def masks_to_signal(masks, like, *, title: str | None = None, metadata: dict | None = None):
    """Masks as a HyperSpy ``Signal2D`` with the axes (and calibration) of the signal ``like``.

    Parameters
    ----------
    masks : array_like
        ``[H, W]`` or ``[frames, H, W]`` labels, one frame per navigation position of ``like``
        (in the order of ``like.data``).
    like : hyperspy signal
        The signal the masks were predicted from.
    title : str, optional
        Default ``"Mask of <title of like>"``.
    metadata : dict, optional
        Set under ``metadata.Segmentation`` (for example the threshold and the model).

    Returns
    -------
    hyperspy.signals.Signal2D
        uint8 labels of ``like.data``'s shape.
    """
    from hyperspy.signals import Signal2D

    masks = np.asarray(masks)
    shape = tuple(int(s) for s in like.data.shape)
    if masks.size != int(np.prod(shape)):
        raise ValueError(f"{masks.shape[0] if masks.ndim == 3 else 1} mask(s) of "
                         f"{masks.shape[-2:]} do not fill a signal of shape {shape}")
    axes = [axis.get_axis_dictionary() for axis in _axes_in_array_order(like)]
    out = Signal2D(masks.reshape(shape), axes=axes)
    out.metadata.set_item("General.title", title or f"Mask of {_title(like) or 'signal'}")
    out.metadata.set_item("Signal.quantity", "label (0 = background)")
    for key, value in (metadata or {}).items():
        out.metadata.set_item(f"Segmentation.{key}", value)
    return out
