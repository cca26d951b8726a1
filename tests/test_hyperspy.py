"""HyperSpy signals in and out of :func:`tem_keras.predict` (:mod:`tem_keras.io.hyperspy`): pixel
size from the signal axes, lazy stacks frame by frame, masks back as a signal with the same axes."""

from __future__ import annotations

import numpy as np
import pytest

from tem_keras.errors import TEMInputError

hs_signals = pytest.importorskip("hyperspy.signals")
pytest.importorskip("tensorflow")


def _signal(data, scale=0.5, units="nm", lazy=False, nav=()):
    """A Signal2D with calibrated signal axes and navigation axes ``nav`` of (name, scale, units)."""
    signal = hs_signals.Signal2D(data)
    for axis, name in zip(signal.axes_manager.signal_axes, ("x", "y")):
        axis.name, axis.scale, axis.units, axis.offset = name, scale, units, 3.0
    for axis, (name, s, u) in zip(signal.axes_manager.navigation_axes, nav):
        axis.name, axis.scale, axis.units = name, s, u
    signal.metadata.General.title = "particles"
    return signal.as_lazy() if lazy else signal


def _frames(n, h=40, w=56):
    from tem_keras.data.synthetic import make_image

    return np.stack([make_image(max(h, w), seed=s).image[:h, :w] for s in range(n)]).astype(np.float32)


def test_signal_stack_reads_frames_and_pixel_size():
    from tem_keras.io.hyperspy import signal_stack

    data = _frames(6).reshape(2, 3, 40, 56)  # navigation 3 (x) × 2 (y)
    stack = signal_stack(_signal(data, scale=0.002, units="µm", lazy=True,
                                 nav=[("time", 0.1, "s"), ("tilt", 2.0, "deg")]))
    assert len(stack) == 6 and stack.pixel_size_nm == pytest.approx(2.0) and stack.shape == (6, 40, 56)
    for i, frame in enumerate(stack):  # frames in the order of signal.data
        assert np.array_equal(frame.data, data.reshape(6, 40, 56)[i])
    assert stack[4].metadata["frame_axes"][0]["name"] == "tilt"
    assert signal_stack(_signal(data[0, 0], units="px")).pixel_size_nm is None
    assert signal_stack(_signal(data[0, 0], scale=5.0, units="Å")).pixel_size_nm == pytest.approx(0.5)


def test_predict_on_a_signal_uses_its_pixel_size(tiny_run):
    from tem_keras import measure_particles, predict

    image = _frames(1)[0]
    result = predict(tiny_run, _signal(image, scale=0.25))
    reference = predict(tiny_run, image)
    assert result.pixel_size_nm == pytest.approx(0.25) and np.array_equal(result.mask, reference.mask)
    table = measure_particles(result.mask, result.pixel_size_nm, min_area=1)
    assert len(table) and np.allclose(table["area_nm2"], table["area_px"] * 0.25**2)


def test_lazy_stack_signal_masks_come_back_as_a_signal(tiny_run):
    from tem_keras import predict, predict_stack

    data = _frames(4).reshape(2, 2, 40, 56)
    signal = _signal(data, scale=0.5, lazy=True, nav=[("x_scan", 10.0, "nm"), ("time", 0.5, "s")])
    masks = predict(tiny_run, signal, as_signal=True)
    reference = [r.mask for r in predict(tiny_run, data.reshape(4, 40, 56))]
    assert isinstance(masks, hs_signals.Signal2D) and masks.data.dtype == np.uint8
    assert np.array_equal(masks.data, np.stack(reference).reshape(2, 2, 40, 56))
    for got, want in zip(masks.axes_manager.navigation_axes + masks.axes_manager.signal_axes,
                         signal.axes_manager.navigation_axes + signal.axes_manager.signal_axes):
        assert (got.name, got.scale, got.offset, got.units, got.size) == \
            (want.name, want.scale, want.offset, want.units, want.size)
    assert masks.metadata.Segmentation.threshold == 0.5
    assert masks.metadata.General.title == "Mask of particles"
    streamed = list(predict_stack(tiny_run, signal, frames=[1, 3]))
    assert [p.frame for p in streamed] == [1, 3] and streamed[1].pixel_size_nm == 0.5
    assert np.array_equal(streamed[1].mask, reference[3])


def test_signal_errors(tiny_run):
    from tem_keras import predict

    with pytest.raises(TEMInputError, match="two signal axes"):
        predict(tiny_run, hs_signals.Signal1D(np.ones((4, 50))))
    with pytest.raises(TypeError, match="as_signal"):
        predict(tiny_run, _frames(1)[0], as_signal=True)
