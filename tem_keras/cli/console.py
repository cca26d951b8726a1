"""Console helpers of the ``tem-keras`` command: one-line input errors, notes on stderr."""

from __future__ import annotations

import re
import sys
import warnings

from ..errors import TEMInputError


def as_input_errors(handler):
    """Report ValueErrors of a handler (bad option values) as one-line input errors."""
    import functools

    @functools.wraps(handler)
    def wrapped(args):
        try:
            return handler(args)
        except TEMInputError:
            raise
        except ValueError as error:
            raise TEMInputError(str(error)) from error

    return wrapped


def note(message) -> None:
    """One plain line on stderr: ``tem-keras: note: MESSAGE`` (white space runs collapsed)."""
    print(f"tem-keras: note: {' '.join(str(message).split())}", file=sys.stderr)


#: the warnings already shown as notes in this process
_SAID: set[str] = set()


def warnings_as_notes() -> None:
    """Show each warning as one :func:`note` (no category, source file or code line), once per
    process: a message said before is not said again. Call inside ``warnings.catch_warnings()``,
    which restores Python's own display afterwards. The filters stay Python's (deprecations in
    libraries are not shown)."""

    def show(message, *args, **kwargs) -> None:
        text = " ".join(str(message).split())
        if text not in _SAID:
            _SAID.add(text)
            note(text)

    warnings.showwarning = show


def note_pixel_size(name) -> bool:
    """Say once, on stderr, that sizes in nm need a pixel size and how to give it."""
    from ..analysis.particles import PIXEL_SIZE_HELP

    note(f"{name}: {PIXEL_SIZE_HELP}")
    return True


#: the Python API's ``overwrite=True``, alone or beside ``--overwrite``, in a message
_OVERWRITE = re.compile(r"--overwrite \(overwrite=True\)|overwrite=True \(--overwrite\)|overwrite=True")


#: the Python API's ``pairing='sorted'``: an option with a word value
_KEYWORD_VALUE = re.compile(r"\b([a-z][a-z_]*)='([\w.-]*)'")


def command_line_spelling(message: str) -> str:
    """A library message as the command line says it: ``--overwrite``, not ``overwrite=True``;
    ``--pairing sorted``, not ``pairing='sorted'``.

    >>> command_line_spelling("names differ? try pairing='sorted', or overwrite=True")
    'names differ? try --pairing sorted, or --overwrite'
    """
    message = _OVERWRITE.sub("--overwrite", message)
    return _KEYWORD_VALUE.sub(lambda m: f"--{m[1].replace('_', '-')} {m[2]}", message)


def raised_by_tem_keras(error: BaseException) -> bool:
    """Whether an exception was raised by tem_keras's own code (its last frame is ours)."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and "tem_keras" in last.tb_frame.f_code.co_filename
