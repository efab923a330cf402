"""``python -m stet``: the same as the ``stet`` command."""

import sys

from stet._cli import main

sys.exit(main())
