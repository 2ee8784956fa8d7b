"""Learned rules that ship with the package, loaded by name: ``LearnedOptimizer(params, checkpoint="family-mlp-v0")``.

A shipped rule is an ordinary ``metaopt train`` checkpoint stored as package data (a few KB; nothing is downloaded).
:func:`list_pretrained` names them (``describe=True``: one line each on how it was trained); any function that
takes a checkpoint path (:class:`~metaopt.LearnedOptimizer`, ``metaopt compare``'s
``optimizer_options.learned.checkpoint``, :func:`~metaopt.load_net`) also takes a name. A file that exists at the
given path wins over a name.

``family-mlp-v0``: the ``mlp`` rule (2 x 32 ReLU units) meta-trained with ``configs/metaopt/family.yaml`` (a family of
digits MLPs and convnets and quadratics, ``eval_loss`` objective, meta_lr 0.01, 300 episodes = 1,500 meta-steps, seed 0,
about 25 minutes on one CPU thread; the checkpoint with the best validation, episode 200). Measured against tuned Adam
on 10 paired seeds (docs/results.md, "Task-family meta-training"): better final training loss on the 20-unit sigmoid
digits MLP, the 8-channel convnet, ``charlm`` and at a 1,000-step horizon; worse on a 64 x 3 ReLU MLP, and its
evaluation loss at 1,000 steps is above Adam's (it overfits). A first point, not a converged rule.

``family-v1``: the ``tiny`` rule (2 x 8 units, per-tensor normalised, muP factor capped at 1, with the learned global
scheduler) on every tensor, meta-trained with ``configs/metaopt/family_v3.yaml`` (digits MLPs and convnets and a
teacher-student regression, horizons of 100-1,000 steps in truncations of 50, ``eval_loss``, meta_lr 0.001, seed 4 of
five, about 8 CPU-minutes; the checkpoint with the best in-distribution validation, episode 20 of 80). On the nine
tasks of the held-out suite (docs/results.md, "Recipe v3"): evaluation loss below ``family-mlp-v0``'s on 8 of 9 and at
or below tuned Adam's on 5 of 9, but lower training loss than tuned Adam (8 of 10 paired seeds) on only 2 of 9; never
diverged.

``family-v2``: recipe v4, ``configs/metaopt/family_v4.yaml``: ``family-v1``'s recipe with the tiny rule's
``orthogonalize`` option (each weight matrix's learned direction goes through five Newton-Schulz iterations before the
normalisation, as Muon's momentum does), seed 2 of five, about 13 CPU-minutes; the checkpoint with the best
in-distribution validation, episode 40 of 80. On the nine held-out tasks (docs/results.md, "Orthogonalized
directions"): lower training loss than tuned Adam (8 of 10 paired seeds) on 5 of 9, evaluation loss at or below tuned
Adam's on 5 of 9; never diverged. Its drop-in step costs a few matrix products per weight matrix: about 7x Adam's
step at 10k parameters, 34x at 100k and 160x at 1M on one CPU thread (``family-v1``: 3-10x); with the option
``ns_block`` 64 (matrices wider than 64 orthogonalized in groups of 64 rows) 18x at 100k and 1M (docs/results.md,
"Orthogonalization at width").

``family-v3``: ``family-v2``'s weights with two options of the tiny rule: ``adapt_rate`` 0.03 (each tensor's step size
adapted online by the cosine between its gradient and its last update) and ``weight_decay`` 0.3 (decoupled weight
decay at each tensor's step size). The options were chosen on tasks of the family's own distribution at longer
horizons, not on the held-out suite. On the nine held-out tasks, full suite (docs/results.md, "Step size that
transfers"): evaluation loss at or below tuned Adam's on 8 of 9 (``family-v2`` 5), lower training loss than tuned Adam
(8 of 10 paired seeds) on 5 of 9 (6 of 9 on a later machine, one task at the threshold); never diverged. Its recipe's
other four seeds with the same options: 4-5 of 9 in training, 7-8 held out (docs/results.md, "Every meta-training
seed on the full held-out suite"). Its step costs about what ``family-v2``'s does (2-20% more). A third
option, ``ns_block`` 256, caps the cost of orthogonalization on wide matrices: a matrix with both sides longer than
256 is orthogonalized in groups of 256 rows (nothing changes on the held-out suite, whose matrices all have a side of
at most 64); checked on two-layer digits nets of width 512 before it was set (docs/results.md, "Orthogonalization in
bfloat16, and blocks of 256 in the shipped rule").
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DESCRIPTIONS", "PRETRAINED", "list_pretrained", "pretrained_path"]

PRETRAINED: dict[str, str] = {
    "family-mlp-v0": "family-mlp-v0.pt",
    "family-v1": "family-v1.pt",
    "family-v2": "family-v2.pt",
    "family-v3": "family-v3.pt",
}
"""Shipped rule name -> its file in this package."""

DESCRIPTIONS: dict[str, str] = {
    "family-mlp-v0": "mlp rule (2 x 32), configs/metaopt/family.yaml: digits MLPs/convnets and quadratics, eval_loss, "
    "1,500 meta-steps, seed 0",
    "family-v1": "tiny rule (2 x 8, normalised, muP capped, learned scheduler), configs/metaopt/family_v3.yaml: digits "
    "MLPs/convnets and a teacher-student regression, horizons 100-1,000, eval_loss, 202 meta-steps, seed 4 of 5",
    "family-v2": "tiny rule as family-v1 with Newton-Schulz orthogonalized matrix directions, "
    "configs/metaopt/family_v4.yaml: the same family, 380 meta-steps, seed 2 of 5",
    "family-v3": "family-v2's weights with online step-size adaptation (adapt_rate 0.03) and weight decay 0.3 at each "
    "tensor's step, options chosen on in-family dev tasks; Newton-Schulz in groups of 256 rows on wider matrices",
}
"""Shipped rule name -> one line on how it was trained."""


def list_pretrained(describe: bool = False) -> list[str]:
    """Names of the learned rules that ship with the package (``describe``: ``"name: how it was trained"`` lines)."""
    if describe:
        return [f"{name}: {DESCRIPTIONS[name]}" for name in sorted(PRETRAINED)]
    return sorted(PRETRAINED)


def pretrained_path(name: str) -> Path | None:
    """The file of the shipped rule ``name``, or None when no shipped rule has that name."""
    file = PRETRAINED.get(name)
    return Path(__file__).with_name(file) if file is not None else None
