"""Pretrained-weight files: download through Keras's cache, with a clear error when offline.

Downloads go through ``keras.utils.get_file`` (the cache of ``keras.applications``:
``$KERAS_HOME/models`` or ``~/.keras/models``), so a file already fetched by Keras is reused and
nothing is downloaded twice. Network calls get a socket timeout so that a machine without network
fails within seconds instead of hanging.
"""

from __future__ import annotations

import contextlib
import socket

import keras

__all__ = ["PretrainedWeightsUnavailable", "network_timeout", "download_weights"]

#: seconds a single network operation may block before the download is given up
NETWORK_TIMEOUT_S = 20.0


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for, are not in the Keras cache, and cannot be downloaded."""


@contextlib.contextmanager
def network_timeout(seconds: float = NETWORK_TIMEOUT_S):
    """Temporarily set the default socket timeout (so downloads cannot hang forever).

    Parameters
    ----------
    seconds : float
        Timeout of each blocking socket operation.
    """
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download_weights(
    fname: str,
    origin: str,
    file_hash: str | None,
    what: str,
    alternatives: str,
    cache_dir: str | None = None,
) -> str:
    """Path of a weights file from the Keras cache, downloading it on first use.

    Parameters
    ----------
    fname : str
        File name in the cache (``<cache_dir>/models/<fname>``).
    origin : str
        URL.
    file_hash : str, optional
        MD5 or SHA-256 of the file, as in ``keras.applications``.
    what : str
        Words for the error message, e.g. ``"ImageNet VGG16 weights"``.
    alternatives : str
        Sentence listing what the user can do instead, appended to the error message.
    cache_dir : str, optional
        Cache root (default: Keras's, ``$KERAS_HOME`` or ``~/.keras``).

    Returns
    -------
    str
        Local path of the file.

    Raises
    ------
    PretrainedWeightsUnavailable
        When the file is not cached and the download fails (e.g. no network).
    """
    try:
        with network_timeout():
            return keras.utils.get_file(fname, origin, cache_subdir="models", file_hash=file_hash,
                                        cache_dir=cache_dir)
    except Exception as err:  # get_file raises plain Exception on URL errors
        raise PretrainedWeightsUnavailable(
            f"The {what} are not in the Keras cache and could not be downloaded from {origin} "
            f"({type(err).__name__}: {err}). {alternatives}"
        ) from err
