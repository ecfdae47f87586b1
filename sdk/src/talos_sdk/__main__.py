"""``python -m talos_sdk`` runs the ``talos`` command line."""

import sys

from talos_sdk.cli import main

sys.exit(main())
