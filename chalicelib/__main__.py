"""Entry point of `python -m chalicelib`."""

import sys

from chalicelib.cli import main

sys.exit(main())
