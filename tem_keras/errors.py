"""The one exception users see for bad input: it names the file and the problem."""

from __future__ import annotations

import os


class TEMInputError(ValueError):
    """Bad input data: a missing, unreadable or inconsistent file, or an unusable array.

    Parameters
    ----------
    problem : str
        What is wrong, in words a microscopist understands.
    path : str or os.PathLike, optional
        The file or folder concerned; it starts the message.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
