"""Adapter over segmentation-models 1.0.1 (Unet, FPN, Linknet with many encoder backbones).

``segmentation_models`` is imported with ``SM_FRAMEWORK=tf.keras`` (set by :mod:`tem_keras._env`),
which under TensorFlow 2.21 resolves to Keras 3. The adapter builds the network with linear
output and appends the tem_keras float32 softmax head.

Backbones under Keras 3 (segmentation-models 1.0.1, TF 2.21, Keras 3.15; build, train, ``.keras``
save and safe-mode reload with identical outputs, checked with ``Unet`` at 64×64, 1 channel,
``weights=None``; one training step is tested for Unet-resnet18 and FPN-mobilenetv2):

* work: ``resnet18``, ``resnet34``, ``resnet50``, ``vgg16``, ``vgg19``, ``mobilenet``,
  ``mobilenetv2``, ``efficientnetb0``, ``efficientnetb3``, ``inceptionv3`` (``FPN`` and
  ``Linknet`` checked with ``resnet18`` and ``mobilenetv2``);
* build but do not reload: ``seresnet18`` and ``resnext50`` (and the other SE-/ResNeXt nets,
  whose blocks use ``Lambda`` layers: Keras 3 cannot deserialize them, in safe mode or not);
* do not build: ``densenet121`` (and the other DenseNets: layer names containing ``/``, which
  Keras 3 refuses).

:data:`KERAS3_BACKBONES` lists the ones that work; others raise a clear error unless
``allow_untested=True``.

References
----------
P. Yakubovskiy, Segmentation Models, https://github.com/qubvel/segmentation_models (2019).
"""

from __future__ import annotations

import contextlib
import io
import os

import keras
from keras import layers

from .arguments import uniform_arguments
from .blocks import model_input, softmax_head
from .weights import PretrainedWeightsUnavailable, network_timeout

__all__ = ["sm_model", "KERAS3_BACKBONES", "BROKEN_BACKBONES"]

ARCHITECTURES = ("Unet", "FPN", "Linknet")
#: backbones that build, save and reload (safe mode) under Keras 3
KERAS3_BACKBONES = (
    "resnet18", "resnet34", "resnet50", "vgg16", "vgg19", "mobilenet", "mobilenetv2",
    "efficientnetb0", "efficientnetb3", "inceptionv3",
)
#: backbones known to fail under Keras 3, with the reason
BROKEN_BACKBONES = {
    "densenet121": "does not build: layer names contain '/', refused by Keras 3",
    "densenet169": "is a DenseNet like densenet121, which does not build (not tried itself)",
    "densenet201": "is a DenseNet like densenet121, which does not build (not tried itself)",
    "seresnet18": "does not reload from .keras: Lambda layers in the SE blocks",
    "seresnet34": "has the SE blocks of seresnet18, which does not reload from .keras (not tried itself)",
    "resnext50": "does not reload from .keras: Lambda layers in the grouped convolutions",
    "resnext101": "has the blocks of resnext50, which does not reload from .keras (not tried itself)",
    "inceptionresnetv2": "uses Lambda layers, so cannot reload from .keras (not tried)",
}


def _import_sm():
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
    # segmentation_models prints its framework to stdout on import; keep stdout clean for the CLI
    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm

    return sm


@uniform_arguments
def sm_model(
    arch: str = "Unet",
    backbone: str = "resnet34",
    weights: str | None = None,
    freeze_encoder: bool = False,
    channels: int = 1,
    num_classes: int = 2,
    allow_untested: bool = False,
    name: str | None = None,
) -> keras.Model:
    """A segmentation-models network with a 1-channel input and the tem_keras softmax head.

    With ``weights=None`` the network is built directly for ``channels`` inputs. With
    ``weights="imagenet"`` (3-channel weights) a 1×1 convolution ``channels_to_rgb`` maps
    the input to 3 channels first (the approach recommended by segmentation-models), and the
    network is a nested model. ImageNet weights are fetched by segmentation-models through
    Keras's cache; offline and not cached this fails with
    :class:`~tem_keras.models.weights.PretrainedWeightsUnavailable`. Input sizes must be a
    multiple of 32.

    Parameters
    ----------
    arch : {"Unet", "FPN", "Linknet"}
        Decoder architecture.
    backbone : str
        Encoder, e.g. ``"resnet34"``; see :data:`KERAS3_BACKBONES` for those that work under Keras 3.
    weights : {None, "imagenet"}
        Encoder initialisation (``encoder_weights`` before; the old name is still accepted).
    freeze_encoder : bool
        Make the encoder non-trainable.
    channels : int
        Input channels.
    num_classes : int
        Output classes.
    allow_untested : bool
        Build a backbone that is not in :data:`KERAS3_BACKBONES` anyway.
    name : str, optional
        Model name (default ``sm_{arch}_{backbone}``).

    Returns
    -------
    keras.Model
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    if backbone in BROKEN_BACKBONES and not allow_untested:
        raise ValueError(f"segmentation-models backbone {backbone!r} {BROKEN_BACKBONES[backbone]} under "
                         f"Keras 3; use one of {KERAS3_BACKBONES}")
    if backbone not in KERAS3_BACKBONES and not allow_untested:
        raise ValueError(f"segmentation-models backbone {backbone!r} is not tested under Keras 3; use one "
                         f"of {KERAS3_BACKBONES} or pass allow_untested=True")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    sm = _import_sm()
    builder = getattr(sm, arch)
    in_channels = 3 if weights == "imagenet" else int(channels)
    try:
        with network_timeout():
            net = builder(backbone, input_shape=(None, None, in_channels), classes=int(num_classes),
                          activation="linear", encoder_weights=weights,
                          encoder_freeze=freeze_encoder)
    except Exception as err:
        if weights == "imagenet" and ("URL fetch failure" in str(err) or isinstance(err, OSError)):
            raise PretrainedWeightsUnavailable(
                f"ImageNet weights for segmentation-models backbone {backbone!r} are not in the Keras "
                f"cache (~/.keras/models) and could not be downloaded ({err}). Alternatives: "
                "weights=None, or copy the weights file into the Keras cache."
            ) from err
        raise
    if weights == "imagenet":
        inputs = model_input(channels)
        x = layers.Conv2D(3, 1, name="channels_to_rgb")(inputs)
        x = net(x)
    else:  # flat graph: the softmax head goes straight onto the network's logits
        inputs, x = net.inputs[0], net.outputs[0]
    outputs = softmax_head(x, num_classes, project=False)
    return keras.Model(inputs, outputs, name=name or f"sm_{arch.lower()}_{backbone}")
