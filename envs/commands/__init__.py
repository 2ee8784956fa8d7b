"""The foundation's own command: ``metaopt fit`` (:mod:`envs.commands.fit`), one task trained with one optimizer.

A command is a typed schema and a ``run_*(cfg)`` function; the engine modules of ``envs`` never import this folder.
"""
