"""The text of the model card (``README.md`` of an export folder) as a ``string.Template``.

Edit the wording here; :func:`tem_keras.export.card.model_card` fills the ``$`` fields from
``tem_keras.json``. Fields ending in ``_block`` are whole lines (possibly none), each ending
with a newline.
"""

from string import Template

__all__ = ["CARD", "TRUST", "BIOIMAGEIO_SECTION"]

#: the safety notice of the card
TRUST = ("A SavedModel (and an ONNX file) is a program: loading it runs the graphs written by "
         "whoever made it. Load SavedModels only from people you trust. `model.keras` loads in "
         "Keras's safe mode, which refuses Lambda layers and other serialised Python code.")

CARD = Template("""\
# $name — tem_keras segmentation model

Semantic segmentation of nanoparticles in transmission electron micrographs, exported by \
tem_keras $version on $created.

## Model

- Architecture: `$architecture`$architecture_details
- Parameters: $parameters; $gflops GFLOPs per megapixel
- Receptive field: $receptive_field
- Down-sampling factor: $downsampling (images are padded to a multiple of it inside the exported graph)
- Classes: $classes
- Output: class probabilities (softmax), float32, same height and width as the input

## Intended use

$pixel_size_advice
- Input: single-channel micrographs, raw intensities (any dtype converted to float32), any \
height and width.

## Training data

${training_block}
## Preprocessing (inside the SavedModel and ONNX graphs)

1. $outlier_step
2. $normalisation_step
3. Reflect-padding at the bottom and right to the down-sampling multiple; the output is cropped back.

## Metrics (test images of the training run, whole images)

${metrics_block}
## Threshold

$threshold_rule (`serve_mask` signature, `tem_keras.json["threshold"]`).$otsu_note

## Limitations

- Trained on few images: check predictions on your own data (`tem-keras evaluate`) before \
measuring particles; accuracy degrades away from the training pixel size, contrast mode \
(bright field / HAADF / HRTEM), particle size and support.
- The receptive field bounds the context the model uses: structures larger than it are judged \
from their parts only.
- Probabilities are not calibrated; the threshold was not tuned unless stated above.
- Within about half a receptive field of the image border the prediction depends on the reflect \
padding.
- Very large images are predicted whole by the SavedModel; use `tem_keras.predict` (tiles) or \
cut tiles yourself when memory is short.

## How to run

Without tem_keras (TensorFlow and NumPy only):

```python
import numpy as np, tensorflow as tf
model = tf.saved_model.load("saved_model")
images = np.asarray(my_image, np.float32)[None, :, :, None]   # [1, H, W, 1], raw
probabilities = model.serve(images).numpy()[0]                  # [H, W, C]
mask = model.serve_mask(images).numpy()[0]                      # uint8 labels
```

See `examples/predict_with_savedmodel.py` in tem_keras for a folder of images.

With tem_keras (tiles for large images, stacks, files with pixel sizes):

```python
import tem_keras
model = tem_keras.load("path/to/this/folder")
result = tem_keras.predict(model, "image.dm4")   # result.mask, result.threshold
```

Command line:

```
tem-keras predict path/to/this/folder images/ --out masks/
```

${onnx_block}\
## Files

${files_block}\
- `tem_keras.json`: classes, pixel size, normalisation, threshold, receptive field, metrics, versions
${skipped_block}${bioimageio_block}
## Validation

At export, the SavedModel and ONNX outputs were compared with the in-memory Keras model (NumPy \
preprocessing) on a test image whose sides are not multiples of the down-sampling:

${checks_block}
## Safety

$trust

## Versions

$versions
""")

#: the section on the bioimage.io package (when it was written or tried)
BIOIMAGEIO_SECTION = Template("""
## bioimage.io package

`bioimageio/` holds `rdf.yaml` (format 0.5), the zipped SavedModel \
(`tensorflow_saved_model_bundle` weights: the same graph, its `serve` returning \
`{"probabilities": ...}` as bioimageio.core expects), test input/output tensors, sample tensors, \
a cover and this card. What the specification cannot describe:
- Outlier removal (3×3 median, MAD threshold, neighbour mean) is not among the spec's \
preprocessing operations, and per-image standardisation would be applied a second time if it \
were declared; so the package declares no preprocessing: it all runs inside the SavedModel, \
which takes raw intensities.
- The padding to the down-sampling multiple also runs inside the graph, so the input axes \
accept any size (min 8, step 1) rather than the network's true step.
- The threshold for masks is stored under `config` (the spec has no mask-threshold field).
- Validation: $validation
""")
