"""Entry point of `python -m chalicelib`."""

import sys

from chalicelib.cli import main

# Guarded: worker processes started with "spawn" import this module without running the CLI.
if __name__ == "__main__":
    sys.exit(main())
