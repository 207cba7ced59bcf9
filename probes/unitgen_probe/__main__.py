"""``python -m unitgen_probe``: the same as the ``unitgen-probe`` command."""

import sys

from .cli import main

sys.exit(main())
