"""``python -m kanthorq``: the command line."""

import sys

from kanthorq.cli import main

sys.exit(main())
