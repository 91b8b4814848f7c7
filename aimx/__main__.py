"""``python -m aimx`` runs the command-line interface."""

import sys

from aimx.cli import main

sys.exit(main())
