"""``python -m metalab ...`` is the ``metalab`` command."""

import sys

from metalab.cli import main

sys.exit(main())
