"""The optional libraries of distributed prediction (the ``cluster`` extra): a clear error when
one is missing, instead of an ImportError deep inside a worker."""

from __future__ import annotations

from importlib import import_module

__all__ = ["INSTALL_HINT", "require"]

#: how to install the extra
INSTALL_HINT = 'pip install "tem_keras[cluster]"  (dask[distributed], zarr, pyarrow)'

#: import name -> the distribution that provides it
_PROVIDERS = {"dask": "dask", "distributed": "dask[distributed]", "zarr": "zarr",
              "pyarrow": "pyarrow", "dask.array": "dask"}


def require(*modules: str):
    """Import ``modules`` (returning the last one) or raise an ImportError naming the extra.

    Raises
    ------
    ImportError
        ``"<what> needs <package>, which is not installed: pip install "tem_keras[cluster]""``.
    """
    module = None
    for name in modules:
        try:
            module = import_module(name)
        except ImportError as error:
            raise ImportError(f"prediction into a Zarr store and on a Dask cluster needs "
                              f"{_PROVIDERS.get(name, name)}, which is not installed ({error}); "
                              f"install the cluster extra: {INSTALL_HINT}") from None
    return module
