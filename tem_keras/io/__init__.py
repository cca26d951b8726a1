"""Reading and writing micrographs, masks and probability maps, with their pixel size in nm.

Readers return a :class:`Micrograph` (float32 ``[H, W]`` data, pixel size in nm, metadata) or a
lazy :class:`MicrographStack`. Supported files: DigitalMicrograph ``.dm3``/``.dm4``, FEI TIA
``.ser``/``.emi``, Velox and NCEM ``.emd`` (all through RosettaSciIO), ``.mrc``, ``.tif``/``.tiff``,
``.png``/``.jpg``/``.jpeg``/``.bmp``, ``.npy`` and ``.h5``/``.hdf5``. Intensities are never
rescaled. Libraries are imported when a file needs them, so importing this package does not start
TensorFlow.

Modules: :mod:`.core` (the types), :mod:`.rosetta` (DigitalMicrograph, TIA, EMD), :mod:`.tiff`,
:mod:`.plain` (MRC, NumPy, HDF5, bitmaps), :mod:`.readers` (``read_image``, ``read_stack``),
:mod:`.writers`.
"""

from .core import Micrograph, MicrographStack
from .readers import (SUPPORTED_EXTENSIONS, image_files, natural_key, read_image, read_stack)
from .writers import check_target, write_image, write_mask, write_probabilities

# former private names, still imported by other modules
_image_files = image_files
_natural_key = natural_key
_check_target = check_target

__all__ = ["Micrograph", "MicrographStack", "SUPPORTED_EXTENSIONS", "check_target", "image_files",
           "natural_key", "read_image", "read_stack", "write_image", "write_mask",
           "write_probabilities"]
