"""The serving graph of an export: raw images in, probabilities (or labels) out.

``serve`` runs the TensorFlow twin of the preprocessing (:mod:`tem_keras.data.preprocess_tf`),
pads to the down-sampling multiple, runs the network and crops back; ``serve_mask`` adds the
threshold (:func:`tem_keras.inference.masks.labels_from_probabilities_tf`); ``network`` is the
bare network. The network is the model as rewritten for inference, as :func:`tem_keras.predict`
runs it: batch norms folded into the convolutions, a two-class softmax as a sigmoid of the logit
differences, nearest up-sampling decoders as sub-pixel convolutions.
"""

from __future__ import annotations

from ..data.preprocess_tf import pad_to_multiple_tf, preprocess_tf
from ..inference.masks import labels_from_probabilities_tf

__all__ = ["serving_module", "SIGNATURES"]

#: signatures of an exported SavedModel (``tf.saved_model.load(path).signatures``)
SIGNATURES = ("serving_default", "serve_mask", "network")


def serving_module(model, preprocessing=None, *, downsampling: int | None = None,
                   threshold: float | None = 0.5, rewrite: bool = True):
    """A ``tf.Module`` whose ``serve`` runs preprocessing, padding, ``model`` and cropping.

    Parameters
    ----------
    model : keras.Model
        Input ``[N, H, W, 1]``, output class probabilities ``[N, H, W, C]``.
    preprocessing : Preprocessing, optional
        Default :class:`~tem_keras.data.preprocess.Preprocessing`.
    downsampling : int, optional
        Default :func:`~tem_keras.models.receptive_fields.downsampling_factor` of ``model``.
    threshold : float or None
        Used by ``serve_mask`` (see :func:`tem_keras.inference.labels_from_probabilities`):
        None is 0.5 for binary models and the plain argmax for more classes.
    rewrite : bool
        Run the copy of ``model`` made by :func:`tem_keras.models.for_inference` (batch norms
        folded, two-class softmax as a sigmoid, fused up-sampling decoders), the one
        :func:`tem_keras.predict` runs (:meth:`tem_keras.inference.Predictor.network`): the same
        probabilities up to float rounding, as fast.

    Returns
    -------
    tf.Module
        With ``serve`` (raw images -> probabilities), ``serve_mask`` (raw images -> uint8
        labels) and ``network`` (preprocessed, padded images -> probabilities), each a
        ``tf.function`` of one ``[None, None, None, 1]`` float32 argument, and
        ``serving_signatures``, the signatures to save (``tf.saved_model.save(module, path,
        signatures=module.serving_signatures)``).
    """
    import tensorflow as tf

    from ..data.preprocess import Preprocessing

    preprocessing = preprocessing or Preprocessing()
    if downsampling is None:
        from ..models.receptive_fields import downsampling_factor

        downsampling = downsampling_factor(model)
    d = max(1, int(downsampling))
    threshold = None if threshold is None else float(threshold)
    spec = tf.TensorSpec([None, None, None, 1], tf.float32, name="images")

    module = tf.Module(name="tem_keras_serving")
    if rewrite:  # the network predict() runs, made once per model by its Predictor
        from ..inference.predictor import Predictor

        model = Predictor.of(model).network("float32")
    module.model = model

    @tf.function(input_signature=[spec])
    def network(images):
        return tf.cast(module.model(images, training=False), tf.float32)

    @tf.function(input_signature=[spec])
    def serve(images):
        h, w = tf.shape(images)[1], tf.shape(images)[2]
        x = pad_to_multiple_tf(preprocess_tf(images, preprocessing), d)
        return network(x)[:, :h, :w, :]

    @tf.function(input_signature=[spec])
    def serve_mask(images):
        return labels_from_probabilities_tf(serve(images), threshold)

    @tf.function(input_signature=[spec])
    def serving_default(images):
        return {"probabilities": serve(images)}

    @tf.function(input_signature=[spec])
    def mask_signature(images):
        return {"mask": serve_mask(images)}

    @tf.function(input_signature=[spec])
    def network_signature(images):
        return {"probabilities": network(images)}

    module.serve, module.serve_mask, module.network = serve, serve_mask, network
    module.downsampling = tf.Variable(d, trainable=False, name="downsampling")
    module.threshold = tf.Variable(-1.0 if threshold is None else threshold, trainable=False,
                                   name="threshold")  # -1: argmax
    module.serving_signatures = {"serving_default": serving_default, "serve_mask": mask_signature,
                                 "network": network_signature}
    return module
