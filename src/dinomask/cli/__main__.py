"""``python -m dinomask.cli``: the same as the ``dinomask`` command."""

import sys

from dinomask.cli import main

sys.exit(main())
