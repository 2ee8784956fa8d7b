"""The run tooling every command shares, apart from the tasks themselves.

* :mod:`envs.tooling.config`: typed schemas, YAML + ``key=value`` loading, ``--help`` text, and :class:`RunOptions`,
  the ``device`` / ``dtype`` / ``name`` / ``out`` tail every command's schema inherits;
* :mod:`envs.tooling.runs`: run directories (config, records, TensorBoard, atomic writes);
* :mod:`envs.tooling.cli`: the ``PROG COMMAND [CONFIG] [key=value ...]`` shell with its exit codes;
* :mod:`envs.tooling.plots`: figures on the Agg backend in one style, written atomically.
"""
