"""``python -m dinomask``: the command line, as ``dinomask`` runs it."""

import sys

from dinomask.cli import main

if __name__ == "__main__":
    sys.exit(main())
