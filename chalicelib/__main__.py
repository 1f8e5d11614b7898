"""Entry point of `python -m chalicelib`: hands over to the offline command line (not part of the Lambda package)."""

import sys

# Guarded: worker processes started with "spawn" import this module without running the CLI.
if __name__ == "__main__":
    from churnguard_offline.cli import main

    sys.exit(main())
