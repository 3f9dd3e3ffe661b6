"""``python -m bbjax``: the ``bbjax`` command."""

import sys

from bbjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
