"""Optimizers and the one training loop: what trains a task's model, apart from the tasks themselves.

* :mod:`envs.training.optim`: optimizers by name (the registry behind task recipes, the comparison harness, the
  Gymnasium adapter and bead training);
* :mod:`envs.training.functional`: batched (functional) twins of those optimizers, row by row equal to ``torch.optim``;
* :mod:`envs.training.schedules`: ``adamw_cosine``, AdamW with a cosine schedule over a run's horizon;
* :mod:`envs.training.fit`: ``fit``, the one training loop.

Importing this package imports none of them (and not torch).
"""
