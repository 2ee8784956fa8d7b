"""A mutation pass: realistic single edits to the code, the related tests run against each, the score printed.

Each mutant is one edit a developer could make by mistake (a sign, an index, a forgotten argument). The pass runs
in a throw-away ``git worktree`` of a commit (``HEAD`` by default), so the working tree is never touched: for each
mutant it applies the edit, runs the mutant's tests, records whether they failed (the mutant is *killed*) or passed
(it *survived*), and restores the file. A mutant whose text is not found is reported as stale, not counted.

    python scripts/mutation_pass.py [--commit HEAD | --source working] [--only SUBSTRING] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One edit: replace ``old`` (which must occur exactly once) by ``new`` in ``path``, then run ``tests``."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


GYM = ("tests/envs/test_gym.py",)
SPACE = ("tests/geodesics/test_space.py", "tests/geodesics/test_dss.py")
CURVE = ("tests/geodesics/test_curve.py", "tests/geodesics/test_dss.py")
DSS = ("tests/geodesics/test_dss.py", "tests/geodesics/test_finders.py")
INVARIANTS = ("tests/geodesics/test_invariants.py",)
M = Mutant

MUTANTS: list[Mutant] = [
    # -- envs/gym ------------------------------------------------------------------------------------------------
    Mutant("reward with the wrong sign", "envs/gym/optimizee_env.py", "else -loss", "else loss", GYM),
    Mutant(
        "action scale ignored", "envs/gym/optimizee_env.py", "return update * self.action_scale", "return update", GYM
    ),
    Mutant(
        "observations in float64",
        "envs/gym/optimizee_env.py",
        "self._np_dtype = np.float64 if self.task.dtype == torch.float64 else np.float32",
        "self._np_dtype = np.float64",
        GYM,
    ),
    Mutant(
        "out-of-box actions accepted",
        "envs/gym/optimizee_env.py",
        "outside = int((np.abs(update) > 1).sum())",
        "outside = 0",
        GYM,
    ),
    Mutant(
        "lr mapping off by a factor",
        "envs/gym/lr_env.py",
        "return 10.0 ** (lo + (a + 1.0) / 2.0 * (hi - lo))",
        "return 10.0 ** (lo + (a + 1.0) * (hi - lo))",
        GYM,
    ),
    Mutant("lr env ignores the action", "envs/gym/lr_env.py", 'group["lr"] = lr', "pass", GYM),
    Mutant(
        "lr env reward sign",
        "envs/gym/lr_env.py",
        "reward = -LOSS_CAP if diverged else -mean",
        "reward = -LOSS_CAP if diverged else mean",
        GYM,
    ),
    Mutant(
        "run seed not drawn from the env's generator",
        "envs/gym/optimizee_env.py",
        "run_seed = int(self.np_random.integers(0, 2**31 - 1))",
        "run_seed = 0",
        GYM,
    ),
    # -- geodesics: evaluation -------------------------------------------------------------------------------------
    Mutant(
        "loop evaluates every row with the first vector",
        "geodesics/space.py",
        "        for theta in chunk:\n            self.load_into(self.model, theta)\n            out.append(",
        "        for theta in chunk:\n            self.load_into(self.model, chunk[0])\n            out.append(",
        SPACE,
    ),
    M(
        "vmap by default on CPU",
        "geodesics/space.py",
        'return "vmap" if torch.device(device).type == "cuda" else "loop"',
        'return "vmap"',
        SPACE,
    ),
    M(
        "evaluation chunks not weighted by size",
        "geodesics/space.py",
        "total += self._batch_losses(thetas, batch).to(torch.float64) * weight",
        "total += self._batch_losses(thetas, batch).to(torch.float64) * count",
        SPACE,
    ),
    # -- geodesics: segment checks and DSS ---------------------------------------------------------------------------
    M(
        "grid never evaluates t = 1",
        "geodesics/curve.py",
        "grid = torch.linspace(0.0, 1.0, config.num_points, device=space.device, dtype=torch.float64)",
        "grid = torch.linspace(0.0, 1.0, config.num_points + 1, device=space.device, dtype=torch.float64)[:-1]",
        CURVE + INVARIANTS,
    ),
    M(
        "segment ends never count as peaks",
        "geodesics/curve.py",
        "padded = torch.nn.functional.pad(values, (1, 1), value=-torch.inf)",
        "padded = torch.nn.functional.pad(values, (1, 1), value=torch.inf)",
        CURVE + INVARIANTS,
    ),
    M(
        "certified bound without its tolerance",
        "geodesics/curve.py",
        "return self.value + self.tolerance",
        "return self.value",
        CURVE + INVARIANTS,
    ),
    M(
        "beads trained to L0 instead of alpha * L0",
        "geodesics/finders/greedy.py",
        "targets = torch.tensor([config.alpha * s.threshold",
        "targets = torch.tensor([s.threshold",
        DSS + INVARIANTS,
    ),
    M(
        "t* always the midpoint",
        "geodesics/finders/common.py",
        't = 0.5 if config.t_star == "midpoint" else min(max(check.t, 0.01), 0.99)',
        "t = 0.5",
        DSS + INVARIANTS,
    ),
    M(
        "connected ignores the reason",
        "geodesics/finders/common.py",
        "connected = not reason and all(c.upper <= threshold for c in checks)",
        "connected = all(c.upper <= threshold for c in checks)",
        DSS + INVARIANTS,
    ),
    M(
        "endpoint above L0 accepted",
        "geodesics/finders/common.py",
        "if loss > threshold:",
        "if loss > 2 * threshold:",
        DSS + INVARIANTS,
    ),
    M(
        "normalized length divided by the squared chord",
        "geodesics/path.py",
        "        return self.length / distance\n",
        "        return self.length / distance**2\n",
        DSS,
    ),
    M(
        "sweep standard error without the sqrt(n)",
        "geodesics/commands/sweep.py",
        "return mean, math.sqrt(var / len(values))",
        "return mean, math.sqrt(var)",
        ("tests/geodesics/test_sweep.py",),
    ),
    # -- metaopt ---------------------------------------------------------------------------------------------------
    M(
        "learned optimizer ignores output_scale",
        "metaopt/rules/lstm.py",
        "update = self.readout(x).squeeze(-1) * self.config.output_scale",
        "update = self.readout(x).squeeze(-1)",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/test_shells.py"),
    ),
    M(
        "learned optimizer updates only the first parameter group",
        "metaopt/shells.py",
        'params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]',
        'params = [p for p in self.param_groups[0]["params"] if p.grad is not None]',
        ("tests/metaopt/test_invariants.py", "tests/metaopt/test_shells.py"),
    ),
    M(
        "differentiable twin updates only the first parameter group",
        "metaopt/shells.py",
        "for group_idx, (group, grads) in enumerate(zip(self.param_groups, grouped_grads))",
        "for group_idx, (group, grads) in enumerate(zip(self.param_groups[:1], grouped_grads))",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/test_shells.py"),
    ),
    M(
        "second_order never reaches the unroll",
        "metaopt/outer/truncated_backprop.py",
        "first_order=not setup.second_order",
        "first_order=True",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/inner/test_unroll.py"),
    ),
    M(
        "the loop drops second_order",
        "metaopt/training/loop.py",
        "make_objective(cfg.objective), cfg.second_order, cfg.seed)",
        "make_objective(cfg.objective), False, cfg.seed)",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/training/test_train.py"),
    ),
    M(
        "checkpoint weights loaded leniently",
        "metaopt/checkpoint.py",
        "    if problems:\n        raise CheckpointError("
        "f\"{source}: the weights do not match the rule ({'; '.join(problems)}); {_MISMATCH}\")\n"
        "    rule.load_state_dict(state_dict)\n",
        "    rule.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)\n",
        ("tests/metaopt/test_checkpoint.py", "tests/metaopt/training/test_train.py"),
    ),
    M(
        "text files reach torch.load",
        "metaopt/checkpoint.py",
        "if not head.startswith(_TORCH_MAGIC):",
        "if not head:",
        ("tests/metaopt/test_checkpoint.py",),
    ),
    M(
        "optimizer state of other shapes accepted",
        "metaopt/shells.py",
        "            if found != expected:\n",
        "            if not found:\n",
        ("tests/metaopt/test_checkpoint.py", "tests/metaopt/test_shells.py"),
    ),
    M(
        "compare evaluates on the tuning seeds",
        "metaopt/compare/harness.py",
        'units = [Unit("eval", label, contender.name, lr, seed) for seed in cfg.eval_seed_list]',
        'units = [Unit("eval", label, contender.name, lr, seed) for seed in cfg.tuning_seed_list]',
        ("tests/metaopt/test_invariants.py", "tests/metaopt/compare/test_compare_harness.py"),
    ),
    M(
        "meta-training tunes Adam on the validation seeds",
        "metaopt/training/validation.py",
        "tune_seeds = [TUNE_SEED_BASE + k for k in range(cfg.tune_seeds)]",
        "tune_seeds = [VAL_SEED_BASE + k for k in range(cfg.tune_seeds)]",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/training/test_train.py"),
    ),
    M(
        "learned checkpoints in compare checked only when they run",
        "metaopt/compare/harness.py",
        "        _check_builds(name, registered, options, cfg.lr_grid[0] if spec.tunable_lr else None)\n",
        "",
        ("tests/metaopt/test_compare_learned.py",),
    ),
    M(
        "meta-gradient with the wrong sign",
        "metaopt/outer/truncated_backprop.py",
        "meta_loss = setup.objective(trajectory) / len(inners)",
        "meta_loss = -setup.objective(trajectory) / len(inners)",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "meta-gradient clipping skipped",
        "metaopt/training/loop.py",
        "max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf",
        "max_norm = math.inf",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/training/test_train.py"),
    ),
    M(
        "NaN guard off",
        "metaopt/training/loop.py",
        "if not math.isfinite(grad_norm):",
        "if math.isnan(grad_norm) and False:",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "rule state carried between truncations without detaching",
        "metaopt/shells.py",
        "optimizer.state[p].update(detach_state(piece))",
        "optimizer.state[p].update(piece)",
        ("tests/metaopt/test_invariants.py", "tests/metaopt/inner/test_unroll.py"),
    ),
    M(
        "log_sign small-gradient branch scaled the wrong way",
        "metaopt/rules/features.py",
        "grads * math.exp(p))",
        "grads * math.exp(-p))",
        ("tests/metaopt/rules/test_lstm.py",),
    ),
    M(
        "Adam-mimic rule without the first moment's bias correction",
        "metaopt/rules/mlp.py",
        "adam = (momenta[:, cfg.adam_momentum] / correction1) / (v_hat.sqrt() + cfg.eps)",
        "adam = momenta[:, cfg.adam_momentum] / (v_hat.sqrt() + cfg.eps)",
        ("tests/metaopt/rules/test_mlp.py",),
    ),
    M(
        "resume= applies every override",
        "metaopt/commands/train.py",
        "refused = [key for key in changed if key not in RESUMABLE_KEYS]",
        "refused: list[str] = []",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "far worse than Adam means more than 3x",
        "metaopt/training/validation.py",
        "learned - adam > (FAR_WORSE_RATIO - 1) * abs(adam)",
        "learned - adam > FAR_WORSE_RATIO * abs(adam)",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "divergence warning not printed",
        "metaopt/commands/train.py",
        "    if warning:\n        print(warning)\n",
        "",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "quickstart does not follow its moved run directory",
        "metaopt/commands/quickstart.py",
        "        _follow_move(root / name, root)\n",
        "        pass\n",
        ("tests/metaopt/commands/test_quickstart.py",),
    ),
    # -- geodesics: the other finders, alignment, projection ----------------------------------------------------------
    M(
        "NEB climbing image does not invert its tangent force",
        "geodesics/finders/neb.py",
        "out[climber] = grads[climber] - 2 * along[climber] * tau[climber]",
        "out[climber] = grads[climber] - along[climber] * tau[climber]",
        ("tests/geodesics/test_path_finders.py",),
    ),
    M(
        "alignment permutes the inputs of a layer with the wrong permutation",
        "geodesics/alignment.py",
        "\n    return weight[:, perm]\n",
        "\n    return weight[:, perm.flip(0)]\n",
        ("tests/geodesics/test_alignment.py",),
    ),
    M(
        "projection linearises towards the current point instead of theta",
        "geodesics/projection.py",
        "y = theta.double() - ((value + float(g @ offset) - target) / norm2) * g",
        "y = x.double() - ((value - target) / norm2) * g",
        ("tests/metaopt/targets/test_level_rules.py",),
    ),
    # -- metaopt: evolution strategies ------------------------------------------------------------------------------
    M(
        "PES uses the current perturbation instead of the accumulated one",
        "metaopt/outer/es.py",
        "direction = particles.xi if particles is not None else eps",
        "direction = eps",
        ("tests/metaopt/test_es.py",),
    ),
    M(
        "ES forgets the antithetic half",
        "metaopt/outer/es.py",
        "differences[pair] = _finite_difference(signed[0], signed[1])",
        "differences[pair] = _finite_difference(signed[0], 0.0)",
        ("tests/metaopt/test_es.py",),
    ),
    # -- the drop-in step's blocked paths and the optimizer contract (compile, copies, dtypes, divergence watch) ----
    M(
        "blocked LSTM step orders the folded gates as nn.LSTMCell does (i, f, g, o) while reading i, f, o, g",
        "metaopt/rules/lstm.py",
        "weights.append(torch.cat([i_f, out_gate, cell_gate]).to(dtype))",
        "weights.append(torch.cat([i_f, cell_gate, out_gate]).to(dtype))",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "blocked LSTM step drops the hidden-to-hidden bias",
        "metaopt/rules/lstm.py",
        "(cell.bias_ih + cell.bias_hh)[:, None]",
        "cell.bias_ih[:, None]",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "blocked MLP step misses the progress features",
        "metaopt/rules/mlp.py",
        "torch.index_select(progress, 1, ids, out=buffers[0][num_raw:num_features])",
        "buffers[0][num_raw:num_features].zero_()",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "blocked MLP step without the magnitude's scale",
        "metaopt/rules/mlp.py",
        "magnitude.mul_(scalars.exp_mult).exp_()",
        "magnitude.exp_()",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "float64 copy of the rule never refreshed",
        "metaopt/shells.py",
        "            self._rule_in(rule, joined.dtype)  # the copy takes the rule's current weights\n",
        "            pass\n",
        ("tests/metaopt/test_shell_contract.py",),
    ),
    M(
        "the step is traced by torch.compile",
        "metaopt/shells.py",
        "    @torch.compiler.disable(recursive=True)\n",
        "",
        ("tests/metaopt/test_shell_contract.py",),
    ),
    M(
        "copies lose the skipped-step counter",
        "metaopt/shells.py",
        'for key in ("rule", "skipped_steps", "divergence_ratio", "first_loss", "diverged"):',
        'for key in ("rule", "divergence_ratio", "first_loss", "diverged"):',
        ("tests/metaopt/test_shell_contract.py",),
    ),
    M(
        "float64 parameters stepped in float32",
        "metaopt/shells.py",
        "                dtype = torch.float64\n",
        "                dtype = rule.dtype\n",
        ("tests/metaopt/test_shell_contract.py",),
    ),
    M(
        "divergence watch compares with the ratio ignored",
        "metaopt/shells.py",
        "value > self.divergence_ratio * max(abs(self.first_loss), 1e-12)",
        "value > max(abs(self.first_loss), 1e-12)",
        ("tests/metaopt/test_shell_contract.py",),
    ),
]


def run_pass(commit: str, only: str | None, source: str = "commit") -> list[dict[str, object]]:
    """Apply each chosen mutant in a copy of the code, run its tests, and return the outcomes.

    ``source="commit"``: a ``git worktree`` of ``commit``; ``"working"``: a copy of the working tree as it is now
    (uncommitted edits included; ``.git``, ``.venv``, ``runs`` and caches left out).
    """
    chosen = [m for m in MUTANTS if only is None or only in m.name or only in m.path]
    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp) / "tree"
        if source == "working":
            ignore = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache")
            shutil.copytree(ROOT, tree, ignore=ignore)
        else:
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
        try:
            env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
            for mutant in chosen:
                target = tree / mutant.path
                original = target.read_text()
                if original.count(mutant.old) != 1:
                    results.append({"mutant": mutant.name, "path": mutant.path, "outcome": "stale"})
                    continue
                target.write_text(original.replace(mutant.old, mutant.new))
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                       *mutant.tests], cwd=tree, env=env, capture_output=True, text=True)  # fmt: skip
                target.write_text(original)
                outcome = "killed" if proc.returncode != 0 else "survived"
                results.append({"mutant": mutant.name, "path": mutant.path, "outcome": outcome,
                                "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
                print(f"{outcome:8} {mutant.path}: {mutant.name}", flush=True)
        finally:
            if source != "working":
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    return results


def main() -> None:
    """Run the pass and print the score."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--source", choices=["commit", "working"], default="commit",
                        help="mutate a worktree of --commit, or a copy of the working tree as it is")  # fmt: skip
    parser.add_argument("--only", default=None, help="run the mutants whose name or path contains this")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = run_pass(args.commit, args.only, args.source)
    counted = [r for r in results if r["outcome"] != "stale"]
    killed = sum(r["outcome"] == "killed" for r in counted)
    stale = len(results) - len(counted)
    print(f"mutation score: {killed}/{len(counted)} killed" + (f" ({stale} stale mutants skipped)" if stale else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
