"""``python -m bbjax``: the ``bbjax`` command."""

import sys

from bbjax.cli import main

sys.exit(main())
