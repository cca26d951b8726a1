"""Export a trained model so that colleagues can run it without the training code.

:func:`export` writes an *export folder*::

    OUT_DIR/
      saved_model/        TensorFlow SavedModel: raw float32 images [N, H, W, 1] of any H, W
                          -> class probabilities [N, H, W, C]; preprocessing inside the graph
      model.keras         the Keras model (loads in safe mode: no Lambda layers, no code)
      model.onnx          the same graph as saved_model/ (optional extra: tf2onnx + onnxruntime)
      predict.py          with model.onnx: a copy of tem_keras.export.predict_script, which segments images
                          with onnxruntime and NumPy only (``python predict.py IMAGES -o OUT``)
      bioimageio/         bioimage.io model package (rdf.yaml, zipped SavedModel, test tensors,
                          cover, README.md)
      tem_keras.json      classes, pixel size, normalisation, threshold, receptive field,
                          activation bytes per pixel, metrics, versions, files written
      README.md           the model card

:func:`load` (:func:`tem_keras.artifacts.load`) opens an export folder (or a run folder) and
returns something :func:`tem_keras.predict` accepts.

What the SavedModel graph does
------------------------------
(:mod:`tem_keras.export.serving`; steps 1–3 are :mod:`tem_keras.data.preprocess_tf`, the twin of
the NumPy :mod:`tem_keras.data.preprocess`)

``tf.saved_model.load(path).serve(images)`` with ``images`` a float32 tensor ``[N, H, W, 1]``
(raw intensities, any H and W, each image handled on its own):

1. outlier removal when the run used it (:func:`tem_keras.data.preprocess.remove_outliers`,
   Horwath et al. 2020): the 3×3 median (scipy's ``reflect`` border, i.e. ``SYMMETRIC``
   padding) is the 5th of the 9 neighbours (a min/max selection network); the threshold is
   ``outlier_sigma × 1.4826 × MAD`` of the image minus its median (medians as ``np.median``,
   the mean of the two middle values for even counts); hot pixels are replaced by the mean of
   their non-hot 8 neighbours (sums in float64 as scipy does);
2. per-image standardisation (``"standard"``: mean and standard deviation in float64, then
   float32 arithmetic as NumPy; ``"percentile"``: linear-interpolated percentiles in float64);
3. padding at the bottom and right to a multiple of the model's down-sampling factor, reflect
   (or symmetric when the pad is not smaller than the image) exactly as
   :func:`tem_keras.data.preprocess.pad_to_multiple`;
4. the network (its last layer is a float32 softmax) and cropping back to ``[H, W]``.

The network in the SavedModel (and ONNX) graph is the model as rewritten by
:func:`tem_keras.models.for_inference`, as :func:`tem_keras.predict` runs it: batch norms folded into
the convolutions, a two-class softmax as a sigmoid of the logit differences, nearest up-sampling
decoders as sub-pixel convolutions. The probabilities are the model's up to float rounding
(checked at export: at most 1e-5 apart); ``model.keras`` holds the model as trained.

Non-finite pixels or a constant image stop the call with an ``InvalidArgumentError``.
Signatures: ``serving_default`` (``images`` -> ``probabilities``), ``serve_mask`` (``images`` ->
``mask``, uint8 labels with the exported threshold) and ``network`` (already preprocessed and
padded images -> probabilities: the bare network, used by :func:`load` when there is no
``model.keras``). The same functions are attributes of the loaded object (``.serve``,
``.serve_mask``, ``.network``), returning tensors. The copy zipped into the bioimage.io package
is the same graph, except that its ``serve`` returns ``{"probabilities": ...}``, as
bioimageio.core expects.

Modules
-------
:mod:`~tem_keras.export.folder` (:func:`export`), :mod:`~tem_keras.export.serving` (the graph),
one writer per format (:mod:`~tem_keras.export.saved_model`, :mod:`~tem_keras.export.keras_file`,
:mod:`~tem_keras.export.onnx_file`, :mod:`~tem_keras.export.bioimageio`), and the model card
(:mod:`~tem_keras.export.card` from :mod:`~tem_keras.export.card_template`). The names below are
imported from them on first use, so that ``import tem_keras`` stays light.

Safety
------
A SavedModel is a program: loading it runs TensorFlow graphs written by whoever made it. Only
load SavedModels (and ONNX files) from people you trust. ``model.keras`` is loaded in Keras's
safe mode, which refuses ``Lambda`` layers and other serialised Python code.
"""

from importlib import import_module

# public name -> module that defines it (imported on first use)
_API = {
    "export": "tem_keras.export.folder",
    "check_export": "tem_keras.export.folder",
    "FORMATS": "tem_keras.export.folder",
    "EXPORT_FORMAT": "tem_keras.export.folder",
    "serving_module": "tem_keras.export.serving",
    "model_card": "tem_keras.export.card",
    "validate_bioimageio": "tem_keras.export.bioimageio",
    "ONNX_OPSET": "tem_keras.export.onnx_file",
    "ExportedModel": "tem_keras.artifacts",
    "SavedModelNetwork": "tem_keras.artifacts",
    "load": "tem_keras.artifacts",
    "pad_to_multiple_tf": "tem_keras.data.preprocess_tf",
    "preprocess_tf": "tem_keras.data.preprocess_tf",
    "remove_outliers_tf": "tem_keras.data.preprocess_tf",
    "standardize_tf": "tem_keras.data.preprocess_tf",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tem_keras.export' has no attribute {name!r}")


def __dir__():
    return __all__
