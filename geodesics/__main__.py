"""``python -m geodesics COMMAND [CONFIG] [key=value ...]``: the ``geodesics`` command line."""

import sys

from geodesics.cli import main

sys.exit(main())
