"""Checks at the door: the public API's arguments (:mod:`~tem_keras.validation.arguments`: types
and ranges, ``bool`` is not a number) and the files tem_keras reads back
(:mod:`~tem_keras.validation.files`: ``dataset.json``, ``config.json``, ``split.json``,
``thresholds.json``, ``history.csv``, ``tem_keras.json``). Every failure is one line naming the
argument, or the file and the field."""

from .arguments import *  # noqa: F401,F403  (the argument checks, imported as tem_keras.validation.check_*)
from .arguments import __all__ as _arguments

__all__ = list(_arguments)
