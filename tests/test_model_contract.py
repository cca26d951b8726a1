"""The contract every zoo architecture keeps, checked on a tiny instance of each.

``ModelContract`` holds the checks (as ``BaseModelTester`` does in segmentation_models_pytorch);
each architecture is a short subclass naming a tiny configuration of a registry name or preset
(``tem-keras models``). The contract:

* one-channel input of any height and width, a ``[N, H, W, C]`` float32 softmax output;
* the network runs at a non-square size that is a multiple of its down-sampling factor;
* :func:`tem_keras.predict` (which pads) gives ``[H, W, C]`` float32 probabilities summing to 1
  and a ``[H, W]`` mask for images of odd sizes;
* a ``.keras`` file reloads (safe mode, no custom objects) to the same outputs;
* building never touches the network (no pretrained weights are downloaded).

``test_every_architecture_has_a_contract`` fails when a builder or preset is added to the registry
without a subclass here.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tem_keras.models import build_model, downsampling_factor  # noqa: E402
from tem_keras.models.registry import MODELS, PRESETS  # noqa: E402


def _offline(*args, **kwargs):
    raise OSError("the model contract tests run offline: building tried to open a network connection")


def _image(shape, seed=0):
    """Smooth blobs on noise, so that probabilities vary over the image."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=shape), 3) * 10 + rng.normal(size=shape) * 0.3
    return image.astype(np.float32)


class ModelContract:
    """The checks; a subclass sets ``config`` (a tiny registry config) and may loosen ``atol``."""

    #: ``{"name": registry name or preset, **tiny keyword arguments}``
    config: dict = {}
    #: image sizes for ``predict``: odd, non-square, not multiples of any down-sampling
    sizes = ((37, 53), (64, 96))
    #: tolerance of the ``.keras`` round trip
    atol = 1e-5

    @pytest.fixture(scope="class")
    def model(self):
        keras.utils.set_random_seed(0)
        with pytest.MonkeyPatch.context() as mp:  # no download, whatever the builder tries
            mp.setattr(socket.socket, "connect", _offline)
            mp.setattr(socket, "create_connection", _offline)
            return build_model(dict(self.config))

    @pytest.fixture(scope="class")
    def reloaded(self, model, tmp_path_factory):
        path = tmp_path_factory.mktemp("contract") / "model.keras"
        model.save(path)
        return keras.saving.load_model(path)  # safe mode, custom layers registered by the builders

    def test_input_is_one_channel_of_any_size(self, model):
        assert tuple(model.inputs[0].shape) == (None, None, None, 1)
        assert len(model.outputs) == 1 and model.outputs[0].shape[-1] >= 2
        assert str(model.outputs[0].dtype) == "float32"

    def test_runs_at_a_non_square_multiple_of_the_downsampling(self, model):
        d = downsampling_factor(model)
        assert d >= 1
        x = _image((3 * max(d, 8), 5 * max(d, 8)))[None, ..., None]
        y = np.asarray(model(x, training=False))
        assert y.shape == (1, x.shape[1], x.shape[2], model.outputs[0].shape[-1])
        assert y.dtype == np.float32 and np.all(y >= 0)
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)

    def test_predict_at_odd_sizes(self, model):
        from tem_keras import predict

        classes = model.outputs[0].shape[-1]
        for k, shape in enumerate(self.sizes):
            result = predict(model, _image(shape, seed=k), return_probabilities=True)
            p = result.probabilities
            assert p.shape == (*shape, classes) and p.dtype == np.float32
            assert np.all(np.isfinite(p)) and np.all(p >= 0)
            np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
            assert result.mask.shape == shape and result.mask.dtype == np.uint8
            assert int(result.mask.max()) < classes

    def test_keras_round_trip_gives_the_same_outputs(self, model, reloaded):
        from tem_keras import predict

        assert [type(layer).__name__ for layer in reloaded.layers] == [type(layer).__name__ for layer in model.layers]
        assert reloaded.count_params() == model.count_params()
        assert [w.shape for w in reloaded.weights] == [w.shape for w in model.weights]
        d = downsampling_factor(model)
        x = _image((2 * max(d, 8), 3 * max(d, 8)), seed=5)[None, ..., None]
        np.testing.assert_allclose(np.asarray(reloaded(x, training=False)),
                                   np.asarray(model(x, training=False)), atol=self.atol, rtol=0)
        image = _image(self.sizes[0], seed=6)
        np.testing.assert_allclose(predict(reloaded, image, return_probabilities=True).probabilities,
                                   predict(model, image, return_probabilities=True).probabilities,
                                   atol=self.atol, rtol=0)


# ---------------------------------------------------------------------------------------------
# One subclass per builder and per preset, at tiny widths
# ---------------------------------------------------------------------------------------------

class TestUnet(ModelContract):
    config = {"name": "unet", "depth": 2, "base_filters": 2, "batch_norm": True, "upsampling": "nearest"}


class TestEncoderDecoder(ModelContract):
    config = {"name": "encoder_decoder", "filters": (2, 4), "kernel_sizes": (5, 3)}


class TestResidualUnet(ModelContract):
    config = {"name": "residual_unet", "n_blocks": 2, "base_filters": 2, "pool_sizes": (2, 4),
              "dilation_rates": (1, 2, 1)}


@pytest.mark.slow
class TestFcn8s(ModelContract):
    config = {"name": "fcn8s", "weights": None}  # VGG16 widths are fixed; no ImageNet weights


class TestShallowCnn(ModelContract):
    config = {"name": "shallow_cnn", "filters": 2, "kernel_size": 5, "batch_norm": True, "num_classes": 3}


# slow: a MobileNetV2 encoder (two 3-4 s traces); the fast tier checks the small zoo and FCN-8s
@pytest.mark.slow
class TestSegmentationModels(ModelContract):
    config = {"name": "sm", "arch": "Linknet", "backbone": "mobilenetv2", "weights": None}
    # a deep network: summation order may differ between kernels oneDNN picks (see test_models.py)
    atol = 1e-4


class TestUnetHorwath512(ModelContract):
    config = {"name": "unet_horwath_512", "base_filters": 2}


class TestUnetHorwath1024(ModelContract):
    config = {"name": "unet_horwath_1024", "base_filters": 2}


class TestUnetGroschner(ModelContract):
    config = {"name": "unet_groschner", "base_filters": 2}


class TestEncoderDecoderHorwath(ModelContract):
    config = {"name": "encoder_decoder_horwath", "filters": (2, 2, 4)}


class TestResidualUnetSytwu(ModelContract):
    config = {"name": "residual_unet_sytwu", "base_filters": 2}


# slow: the network of TestFcn8s (VGG16, no weights) under the preset's name
@pytest.mark.slow
class TestFcn8sGroschner(ModelContract):
    config = {"name": "fcn8s_groschner", "weights": None}  # the preset's ImageNet weights: never downloaded


# slow: a second VGG16 (15 M parameters); TestFcn8s checks the undilated one in the fast tier
@pytest.mark.slow
class TestFcn8sDilated(ModelContract):
    config = {"name": "fcn8s_dilated", "weights": None}


class TestShallowCnnSingle(ModelContract):
    config = {"name": "shallow_cnn_single"}


class TestShallowCnnWide(ModelContract):
    config = {"name": "shallow_cnn_wide", "filters": 4}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_architecture_has_a_contract():
    covered = {sub.config["name"] for sub in _subclasses(ModelContract)}
    assert set(MODELS) | set(PRESETS) <= covered, sorted(set(MODELS) | set(PRESETS) - covered)
    assert covered <= set(MODELS) | set(PRESETS), sorted(covered - set(MODELS) - set(PRESETS))


def test_the_offline_guard_stops_a_download():
    """The guard of the ``model`` fixture does stop what a weight download would do."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _offline)
        mp.setattr(socket, "create_connection", _offline)
        with pytest.raises(OSError, match="offline"):
            socket.create_connection(("127.0.0.1", 9))
        with socket.socket() as s, pytest.raises(OSError, match="offline"):
            s.connect(("127.0.0.1", 9))
