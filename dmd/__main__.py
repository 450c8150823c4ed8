"""``python -m dmd`` runs the command line."""

import sys

from dmd.cli import main

sys.exit(main())
