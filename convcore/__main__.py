"""``python -m convcore ...`` runs the command-line interface (same as the ``convcore`` script)."""
import sys

from .cli import main

sys.exit(main())
