"""The ``metaopt`` commands: each a typed config (inheriting ``envs.tooling.config.RunOptions``) and a ``run_*``.

``train`` (meta-training, :mod:`~metaopt.commands.train`), ``targets`` (a geodesic-target dataset,
:mod:`~metaopt.commands.targets`), ``compare`` (the comparison harness, :mod:`~metaopt.commands.compare`) and
``quickstart`` (the three in one run directory, :mod:`~metaopt.commands.quickstart`). ``metaopt.cli`` puts them on the
command line; the engine (``rules``, ``shells``, ``inner``, ``outer``, ``training``, ``targets``, ``compare``) never
imports them.
"""

from metaopt.commands.compare import run_compare
from metaopt.commands.quickstart import QuickstartConfig, run_quickstart
from metaopt.commands.targets import TargetsConfig, run_targets
from metaopt.commands.train import run_train

__all__ = ["QuickstartConfig", "TargetsConfig", "run_compare", "run_quickstart", "run_targets", "run_train"]
