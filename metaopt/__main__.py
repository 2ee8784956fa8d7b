"""``python -m metaopt COMMAND [CONFIG] [key=value ...]``: the ``metaopt`` command line."""

import sys

from metaopt.cli import main

sys.exit(main())
