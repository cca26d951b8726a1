"""Environment defaults that must be in place before third-party imports.

albumentations checks PyPI for updates at import time and segmentation_models picks its Keras
flavour from ``SM_FRAMEWORK``; TensorFlow's C++ start-up chatter is lowered unless the user set it.
Values the user has set are left alone.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

#: whether the user chose TensorFlow's C++ log level (then it is never changed here)
_USER_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "2"


def quiet_console(verbose: bool = False) -> None:
    """Before TensorFlow is imported: no absl/CUDA start-up lines unless ``verbose``.

    On a CPU-only machine TensorFlow logs ``E0000 ... failed call to cuInit`` and a few ``I0000``
    lines written before absl is initialised, which read as failures. Quiet (the command line's
    default): ``TF_CPP_MIN_LOG_LEVEL=3`` and absl verbosity ERROR; the lines printed before absl
    reads its settings are dropped by :func:`import_tensorflow_quietly`. Verbose: level 0.
    A level the user set in the environment is kept.
    """
    if not _USER_LOG_LEVEL:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    if not verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("GLOG_minloglevel", "3")


def import_tensorflow_quietly(verbose: bool = False) -> None:
    """Import TensorFlow with the process's stderr (file descriptor 2) pointed at /dev/null, so
    that the C++ lines written before absl is initialised do not reach the console. Does
    nothing when ``verbose`` or TensorFlow is already imported; a failed import is re-raised with
    stderr restored."""
    import sys

    if verbose or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (embedded interpreters)
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
                import absl.logging

                absl.logging.set_verbosity(absl.logging.ERROR)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def keras_verbosity(verbose) -> int:
    """Keras ``verbose`` for ``fit``/``predict``: 0 stays 0; otherwise 1 (a progress bar per step)
    on a terminal and 2 (one line per epoch) when stdout is a log file or a pipe, where the bar
    would write one line of ANSI codes per step."""
    import sys

    if not verbose:
        return 0
    try:
        interactive = sys.stdout.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return 1 if interactive and verbose == 1 else 2
