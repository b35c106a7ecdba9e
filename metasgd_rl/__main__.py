"""``python -m metasgd_rl``: the ``metasgd-rl`` command."""

import sys

from metasgd_rl.cli import main

sys.exit(main())
