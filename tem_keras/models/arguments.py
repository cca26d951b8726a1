"""One vocabulary for the builders' arguments, and the old names accepted for one release.

Every builder of the zoo names the same thing the same way: ``weights`` (initialisation of a
pretrained encoder: None, ``"imagenet"``, ...), ``freeze_encoder``, ``num_classes`` (output
classes) and ``channels`` (input channels). :func:`uniform_arguments` lets a builder take the
names used before (``encoder_weights``, ``encoder_freeze``, ``n_classes``, ``classes``,
``in_channels``) with a :class:`DeprecationWarning`.

>>> import warnings
>>> @uniform_arguments
... def head(num_classes=2, channels=1):
...     return num_classes, channels
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     head(n_classes=3)
(3, 1)
>>> print(caught[0].category.__name__, caught[0].message)
DeprecationWarning head(n_classes=...) is deprecated and will be removed in the next release: use num_classes=...
"""

from __future__ import annotations

import functools
import inspect
import warnings

__all__ = ["RENAMED", "uniform_arguments"]

#: old name -> name of the zoo's vocabulary
RENAMED = {"encoder_weights": "weights", "encoder_freeze": "freeze_encoder",
           "n_classes": "num_classes", "classes": "num_classes", "in_channels": "channels"}


def uniform_arguments(builder):
    """``builder`` also accepting the old names of :data:`RENAMED` for the arguments it has,
    with a :class:`DeprecationWarning`; both names at once is a TypeError."""
    parameters = inspect.signature(builder).parameters
    renames = {old: new for old, new in RENAMED.items() if new in parameters and old not in parameters}

    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        for old, new in renames.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{builder.__name__}() got {old}= and {new}=: give only {new}= "
                                    f"({old} is its old name)")
                warnings.warn(f"{builder.__name__}({old}=...) is deprecated and will be removed in "
                              f"the next release: use {new}=...", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
        return builder(*args, **kwargs)

    return wrapper
