"""``python -m dmd.cli`` runs the command line (same as ``python -m dmd`` and ``dmd``)."""

import sys

from dmd.cli import main

sys.exit(main())
