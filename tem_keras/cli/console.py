"""Console helpers of the ``tem-keras`` command: one-line input errors, notes on stderr."""

from __future__ import annotations

import sys

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


def note_pixel_size(name) -> bool:
    """Say once, on stderr, that sizes in nm need a pixel size and how to give it."""
    from ..particles import PIXEL_SIZE_HELP

    print(f"tem-keras: note: {name}: {PIXEL_SIZE_HELP}", file=sys.stderr)
    return True


def raised_by_tem_keras(error: BaseException) -> bool:
    """Whether an exception was raised by tem_keras's own code (its last frame is ours)."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and "tem_keras" in last.tb_frame.f_code.co_filename
