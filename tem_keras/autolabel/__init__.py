"""Automatic particle labels with no polarity, size or threshold given, and how sure they are.

:func:`auto_labels` is the default labeller of ``tem-keras label`` and of
``fit(..., labels="auto")``; :func:`label_image` reaches it and the classical pipelines by name
(``"horwath"``: Horwath et al. 2020's pseudo-labels, unchanged; ``"otsu"``).

Modules: :mod:`.structure` (polarity and particle size read from the image), :mod:`.morphology`
(background, specks, holes, edges, each sized by the particle diameter) and :mod:`.labeller`
(the pipeline, its choices and the :class:`LabelRecord`).
"""

from .labeller import METHODS, LabelRecord, auto_labels, label_image
from .structure import estimate_particle_diameter, particle_diameter, particle_polarity

__all__ = ["auto_labels", "label_image", "LabelRecord", "METHODS", "particle_polarity",
           "particle_diameter", "estimate_particle_diameter"]
