"""``python -m tem_keras.cli``: the ``tem-keras`` command."""

import sys

from . import main

sys.exit(main())
