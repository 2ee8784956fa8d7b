"""Compare two run directories bit for bit (wall-clock figures aside): ``envs.tooling.rundiff`` as a script.

python scripts/compare_runs.py RUN_A RUN_B [--ignore-key KEY ...]
"""

import sys

from envs.tooling.rundiff import main

if __name__ == "__main__":
    sys.exit(main())
