"""A mutation pass: realistic single edits to the code, the related tests run against each, the score printed.

Each mutant is one edit a developer could make by mistake (a sign, an index, a forgotten argument). The pass runs
in a throw-away ``git worktree`` of a commit (``HEAD`` by default), so the working tree is never touched: for each
mutant it applies the edit, runs the mutant's tests, records whether they failed (the mutant is *killed*) or passed
(it *survived*), and restores the file. A mutant whose text is not found is reported as stale, not counted.

    python scripts/mutation_pass.py [--commit HEAD | --source working] [--only SUBSTRING] [--recent] [--jobs N]
        [--baseline] [--json out.json]

The score is printed by module and in all.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

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
EAGER_THRESHOLD = (
    "tests/metaopt/rules/test_tiny_inplace.py::test_the_eager_path_is_taken_from_about_six_thousand_coordinates_per_tensor",
)
TINY_INPLACE = (
    "tests/metaopt/rules/test_tiny_inplace.py::test_the_eager_in_place_step_equals_the_functional_step",
    "tests/metaopt/rules/test_tiny_inplace.py::test_other_options_follow_the_functional_step_too",
    "tests/metaopt/rules/test_tiny_inplace.py::test_a_non_finite_step_changes_nothing[False]",
)
# the drop-in step runs in place: the functional step is checked against it
TINY = ("tests/metaopt/rules/test_tiny.py", *TINY_INPLACE)
FAMILY_V1 = ("tests/metaopt/training/test_family_v1.py",)
FINDER_OPTIONS = ("tests/geodesics/test_finder_options.py",)
STACKED = ("tests/metaopt/inner/test_stacked.py",)
ADVANCE_MANY = ("tests/metaopt/inner/test_advance_many.py",)
SHARDED = ("tests/metaopt/test_shell_ddp.py",)
DROPIN_SUMMARY = ("tests/test_benchmarks_cli.py::test_dropin_sweep_summary_puts_each_rule_and_size_in_its_cell",)
WALL_CLOCK = (
    "tests/metaopt/compare/test_compare_stats.py::test_the_wall_clock_speed_up_pays_for_the_dearer_step",
    "tests/metaopt/compare/test_compare_harness.py::test_the_wall_clock_speed_up_comes_from_the_timings_of_the_record",
)
MLP_BY_TENSOR = ("tests/metaopt/rules/test_blocked_step.py", "tests/metaopt/rules/test_mlp.py")
ES_TOGETHER = ("tests/metaopt/test_es_population.py",)
SLOTS = ("tests/metaopt/training/test_family.py::test_a_share_of_the_slots_is_built_as_the_whole_meta_batch_builds_it",
         "tests/metaopt/training/test_family.py::test_the_offsets_go_to_the_advance_given")  # fmt: skip
FAMILY_V3 = ("tests/metaopt/training/test_family_v3.py",)
LEARNED_LR_GRID = ("tests/metaopt/compare/test_learned_lr_grid.py",)
TUNE_ON = ("tests/metaopt/compare/test_tune_on.py",)
OPERATING_POINTS = ("tests/metaopt/compare/test_operating_points.py",)
FUNCTIONAL_TRUNCATION = ("tests/metaopt/inner/test_functional_truncation.py",)
COMPILED_UNROLL = ("tests/metaopt/inner/test_compiled_unroll.py",)
MUON = ("tests/envs/test_muon.py",)
LSTM_INPLACE = (
    "tests/metaopt/rules/test_lstm_inplace.py",
    "tests/metaopt/rules/test_blocked_step.py",
    "tests/metaopt/rules/test_rule_reference_updates.py",
)
NS_BF16 = (
    "tests/metaopt/rules/test_tiny_inplace.py::test_bfloat16_iterations_run_in_place_as_in_the_functional_step",
    "tests/metaopt/rules/test_tiny_inplace.py::"
    "test_compiled_bfloat16_iterations_round_differently_but_to_bfloat16s_size",
)
NS_METHOD = (
    "tests/metaopt/rules/test_tiny_inplace.py::test_ns_method_reaches_both_steps_and_the_gram_form_gives_their_step",
    "tests/metaopt/rules/test_tiny.py::test_bad_options_name_the_key",
)
LOG_OBJECTIVE = ("tests/metaopt/training/test_log_objective.py",)
BOOL_OPTIONS = ("tests/metaopt/test_bad_values.py", "tests/metaopt/training/test_log_objective.py")
LSTM_COMPILED = (
    "tests/metaopt/rules/test_lstm_inplace.py::test_the_compiled_step_follows_the_functional_step",
    "tests/metaopt/rules/test_lstm_inplace.py::test_where_compilation_fails_the_eager_step_runs_after_one_warning",
)
META_AVERAGE = ("tests/metaopt/training/test_meta_average.py",)
NS_MATRICES = (
    "tests/metaopt/rules/test_tiny.py::test_ns_matrices_hidden_leaves_the_first_and_last_matrix_to_the_plain_direction",
    "tests/metaopt/rules/test_tiny.py::test_bad_options_name_the_key",
    "tests/metaopt/rules/test_tiny_inplace.py::test_other_options_follow_the_functional_step_too",
)
ORTHO = (
    "tests/envs/test_muon.py",
    "tests/metaopt/rules/test_tiny_inplace.py::test_other_options_follow_the_functional_step_too",
    "tests/metaopt/rules/test_tiny_inplace.py::"
    "test_tall_wide_and_convolution_matrices_are_orthogonalized_in_blocks_as_the_functional_step",
)

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
        "self.targets = [config.alpha * self.threshold] * len(inits)",
        "self.targets = [self.threshold] * len(inits)",
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
        "connected = not reason and all(c.upper <= accept for c in checks)",
        "connected = all(c.upper <= accept for c in checks)",
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
        '        for group in self.param_groups:\n            lr, weight_decay = group["lr"]',
        '        for group in self.param_groups[:1]:\n            lr, weight_decay = group["lr"]',
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
        "run(inner, setup.truncation, first_order=not setup.second_order)",
        "run(inner, setup.truncation, first_order=True)",
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
        "        _check_builds(name, registered, options, grid[0] if tunable else None, horizon)\n",
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
        "            _times(momenta[cfg.adam_momentum], 0, per_tensor, spread, layout),",
        "            momenta[cfg.adam_momentum],",
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
        "_finite_difference(float(a), float(b)) for a, b in zip(*signed)",
        "_finite_difference(float(a), 0.0) for a, b in zip(*signed)",
        ("tests/metaopt/test_es.py",),
    ),
    # -- checks before anything is written (preflight, command preamble, LR env, shipped configs) -------------------
    M(
        "an imitation objective accepted without targets",
        "metaopt/training/preflight.py",
        "if needs_targets(cfg.objective) and not cfg.targets:",
        "if needs_targets(cfg.objective) and cfg.targets:",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "the population's noise counted in float32",
        "metaopt/training/preflight.py",
        "noise = 8 * pairs * rule_params",
        "noise = 4 * pairs * rule_params",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "stacked optimizees counted for the loop population",
        "metaopt/training/preflight.py",
        "stacked = 4 * 4 * 2 * pairs * optimizee_params if vmap else 0",
        "stacked = 4 * 4 * 2 * pairs * optimizee_params if not vmap else 0",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "the fixed options of a family member not checked",
        "metaopt/training/preflight.py",
        "validate_options(get_task_class(member.name), dict(member.options))",
        "validate_options(get_task_class(member.name), {})",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "the LR env's horizon allowed below one action",
        "envs/gym/lr_env.py",
        "int(horizon) != horizon or horizon < steps_per_action)",
        "int(horizon) != horizon or horizon < 1)",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "path length measured end to end",
        "metaopt/targets/census.py",
        "return float((points[1:].double() - points[:-1].double()).norm(dim=1).sum())",
        "return float((points[-1].double() - points[0].double()).norm())",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "path efficiency inverted",
        "metaopt/targets/census.py",
        "return geodesic_length / travelled if travelled > 0 else 1.0",
        "return travelled / geodesic_length if geodesic_length > 0 else 1.0",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "a run that never moved counted as infinitely efficient",
        "metaopt/targets/census.py",
        "return geodesic_length / travelled if travelled > 0 else 1.0",
        "return geodesic_length / travelled if travelled > 0 else float('inf')",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "the census's progress not normalised",
        "metaopt/targets/census.py",
        "    out = travelled / total\n",
        "    out = travelled.clone()\n",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "a blocked chord taken as the geodesic",
        "metaopt/targets/census.py",
        "    if not check.blocked:\n        return 1.0, None",
        "    if True:\n        return 1.0, None",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "the window loss counts the window's first point",
        "metaopt/targets/census.py",
        "space.batched_eval_loss(points[1:])",
        "space.batched_eval_loss(points)",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "the independent partner read from the own run",
        "metaopt/commands/census.py",
        "            a, b = iterates[t], others[end]\n",
        "            a, b = iterates[t], iterates[min(end, len(iterates) - 1)]\n",
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "the oracle's re-timed chord runs at constant speed",
        "metaopt/commands/census.py",
        '"chord_retimed": window_loss(space, retime(chord, clock)),',
        '"chord_retimed": window_loss(space, retime(chord, constant)),',
        ("tests/metaopt/targets/test_census.py",),
    ),
    M(
        "the baseline cache ignores the horizon",
        "metaopt/training/validation.py",
        '"val": val_seeds, "steps": cfg.steps, "grid": list(cfg.lr_grid),',
        '"val": val_seeds, "grid": list(cfg.lr_grid),',
        ("tests/metaopt/training/test_baseline_cache.py",),
    ),
    M(
        "the baseline cache never read",
        "metaopt/training/validation.py",
        "        if key in table:\n",
        "        if False:\n",
        ("tests/metaopt/training/test_baseline_cache.py",),
    ),
    M(
        "the baseline cache cannot be switched off",
        "metaopt/training/validation.py",
        'return None if root in ("off", "") else Path(root) / "adam_baselines.json"',
        'return Path(root) / "adam_baselines.json"',
        ("tests/metaopt/training/test_baseline_cache.py",),
    ),
    M(
        "the registry replaces a taken name",
        "envs/tooling/registry.py",
        "if taken is not None and taken.target is not target and taken.target != target:",
        "if taken is not None and (taken.target is target or taken.target == target):",
        ("tests/envs/test_registry.py", "tests/geodesics/test_finders.py"),
    ),
    M(
        "the registry accepts unknown options",
        "envs/tooling/registry.py",
        '        if unknown:\n            raise ValueError(\n                f"{self.kind} {name!r} has no option',
        '        if False:\n            raise ValueError(\n                f"{self.kind} {name!r} has no option',
        ("tests/envs/test_registry.py",),
    ),
    M(
        "a flag read from the wrong entry",
        "envs/tooling/registry.py",
        "return default if entry is None else entry.flags.get(key, default)",
        "return default if entry is None else bool(entry.flags)",
        ("tests/envs/test_registry.py",),
    ),
    M(
        "the command preamble skips the alignment check",
        "geodesics/commands/preamble.py",
        'check_alignable(space, getattr(cfg, "align", "none"))',
        'check_alignable(space, "none")',
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "connect's progress lines not shown",
        "geodesics/commands/preamble.py",
        "    PROGRESS.setLevel(logging.INFO)\n",
        "    PROGRESS.setLevel(logging.WARNING)\n",
        ("tests/geodesics/test_connect_cli.py",),
    ),
    M(
        "the contract accepts eval data without a batch dimension",
        "envs/task/contract.py",
        "if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:",
        "if inputs.dim() == 0 and targets.dim() == 0:",
        ("tests/envs/test_contract.py",),
    ),
    M(
        "the contract compares the loss with itself",
        "envs/task/contract.py",
        "composed = task.criterion(model(inputs), targets)",
        "composed = task.loss(model, first[0])",
        ("tests/envs/test_contract.py",),
    ),
    M(
        "the contract reads one batch stream for both determinism checks",
        "envs/task/contract.py",
        'if not all(_same(a, b) for a, b in zip(first, _take(task.batches(0), steps, name, "batches(0)"))):',
        "if not all(_same(a, b) for a, b in zip(first, first)):",
        ("tests/envs/test_contract.py",),
    ),
    M(
        "register_task skips the class check",
        "envs/task/registry.py",
        "    check_task_class(cls)\n",
        "",
        ("tests/envs/test_contract.py",),
    ),
    M(
        "a renamed task keeps the file's options",
        "envs/tooling/config.py",
        "                node.options = {}\n",
        "                pass\n",
        ("tests/envs/test_config.py",),
    ),
    M(
        "a run of exactly the short-run threshold called short",
        "metaopt/commands/train.py",
        "if meta_steps < SHORT_RUN_META_STEPS:",
        "if meta_steps <= SHORT_RUN_META_STEPS:",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "the shipped configs looked for one folder too high",
        "envs/tooling/config.py",
        'PACKAGED_CONFIGS = Path(__file__).resolve().parents[2] / "configs"',
        'PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"',
        ("tests/envs/test_shadowing.py",),
    ),
    M(
        "a shadowing envs package accepted",
        "metaopt/__init__.py",
        "!= _Path(__file__).resolve().parents[1]:",
        "!= _Path(_envs.__file__).resolve().parents[1]:",
        ("tests/envs/test_shadowing.py",),
    ),
]

RECENT: list[Mutant] = [
    # -- modules added or rewritten since the last audit: ES population, imitation, targets, levels, curves, beads,
    # -- the bmm strategy, the distributed helpers, and everything after them -----------------------------------------
    M(
        "the imitation loss normalised by the far end alone",
        "metaopt/objectives/imitation.py",
        "scale = (targets[-1] - targets[0]).pow(2).sum()",
        "scale = targets[-1].pow(2).sum()",
        ("tests/metaopt/test_imitation.py",),
    ),
    M(
        "the imitation loss counts the window's start",
        "metaopt/objectives/imitation.py",
        "return (iterates[1:] - targets[1:]).pow(2).sum(dim=1).mean() / scale",
        "return (iterates - targets).pow(2).sum(dim=1).mean() / scale",
        ("tests/metaopt/test_imitation.py",),
    ),
    M(
        "the imitation loss summed over the window instead of averaged",
        "metaopt/objectives/imitation.py",
        ".pow(2).sum(dim=1).mean() / scale",
        ".pow(2).sum(dim=1).sum() / scale",
        ("tests/metaopt/test_imitation.py",),
    ),
    M(
        "a linear profile's reference is its start",
        "geodesics/levels.py",
        "return max(self.start, self.end)",
        "return self.start",
        ("tests/geodesics/test_level_profile.py",),
    ),
    M(
        "a linear profile runs backwards",
        "geodesics/levels.py",
        "return self.start + s * (self.end - self.start)",
        "return self.end + s * (self.start - self.end)",
        ("tests/geodesics/test_level_profile.py",),
    ),
    M(
        "a scaled constant profile keeps its level",
        "geodesics/levels.py",
        "return Constant(self.level * factor)",
        "return Constant(self.level)",
        ("tests/geodesics/test_level_profile.py", "tests/geodesics/test_dss.py"),
    ),
    M(
        "bead restarts forget the best loss reached before",
        "geodesics/beads.py",
        "run.best_losses[stalled] = torch.minimum(run.best_losses[stalled], again.best_losses)",
        "run.best_losses[stalled] = again.best_losses",
        ("tests/geodesics/test_low_levels.py",),
    ),
    M(
        "bead restarts count only the last run's steps",
        "geodesics/beads.py",
        "steps[stalled] += again.steps",
        "steps[stalled] = again.steps",
        ("tests/geodesics/test_low_levels.py",),
    ),
    M(
        "stalled beads never restart",
        "geodesics/beads.py",
        "if schedule.restarts > 0 and not bool(run.reached.all()):",
        "if schedule.restarts > 1 and not bool(run.reached.all()):",
        ("tests/geodesics/test_low_levels.py",),
    ),
    M(
        "curve training samples t without its stratum offset",
        "geodesics/finders/curves.py",
        "ts = ((torch.arange(self.samples, dtype=torch.float64) + u) / self.samples).to(self.a.device)",
        "ts = (torch.arange(self.samples, dtype=torch.float64) / self.samples).to(self.a.device)",
        ("tests/geodesics/test_path_finders.py",),
    ),
    M(
        "a curve certified early stops before its segments are under L0",
        "geodesics/finders/curves.py",
        "                    if all(c.upper <= threshold for c in checks):\n                        break",
        "                    if True:\n                        break",
        ("tests/geodesics/test_path_finders.py",),
    ),
    M(
        "curve gradients not averaged over the samples",
        "geodesics/finders/curves.py",
        "weights[:, 1:-1].T @ grads / self.samples",
        "weights[:, 1:-1].T @ grads",
        ("tests/geodesics/test_path_finders.py",),
    ),
    M(
        "cross-fitting scores the windows it was fitted on",
        "metaopt/targets/predict.py",
        "            if s.seed in held_out:",
        "            if s.seed in train:",
        ("tests/metaopt/targets/test_predictability.py",),
    ),
    M(
        "cross-fitting fits on every seed",
        "metaopt/targets/predict.py",
        "fit_on = [s for s in samples if s.seed in train]",
        "fit_on = list(samples)",
        ("tests/metaopt/targets/test_predictability.py",),
    ),
    M(
        "cross-fitting uses one fold only",
        "metaopt/targets/predict.py",
        "for held_out, train in (halves, halves[::-1]):",
        "for held_out, train in (halves,):",
        ("tests/metaopt/targets/test_predictability.py",),
    ),
    M(
        "the last window start left out",
        "metaopt/targets/build.py",
        "return list(range(0, steps - window + 1, stride))",
        "return list(range(0, steps - window, stride))",
        ("tests/metaopt/targets/test_targets.py",),
    ),
    M(
        "between levels measured from the wrong end",
        "metaopt/targets/build.py",
        "levels.append(end + (q + slack) * drop)",
        "levels.append(start - (q + slack) * drop)",
        ("tests/metaopt/targets/test_level_rules.py",),
    ),
    M(
        "the descent profile without its slack",
        "metaopt/targets/build.py",
        "levels.append(Linear(start + slack * drop, end + slack * drop))",
        "levels.append(Linear(start, end))",
        ("tests/metaopt/targets/test_level_rules.py",),
    ),
    M(
        "the population keeps moving particles whose loss diverged",
        "metaopt/outer/population.py",
        "alive = alive & torch.isfinite(loss)",
        "alive = alive",
        ("tests/metaopt/test_es_population.py",),
    ),
    M(
        "the population ignores the NaN guard of the update",
        "metaopt/outer/population.py",
        "moves = alive & update_finite",
        "moves = alive",
        ("tests/metaopt/test_es_population.py",),
    ),
    M(
        "the population scores the final iterate on the first batch",
        "metaopt/outer/population.py",
        "final = score(particles.params, *batches[-1]).to(torch.float64)",
        "final = score(particles.params, *batches[0]).to(torch.float64)",
        ("tests/metaopt/test_es_population.py",),
    ),
    M(
        "the bmm strategy drops a hidden layer's bias",
        "geodesics/batched_mlp.py",
        "hidden = torch.bmm(weight, hidden) if bias is None else torch.baddbmm(bias, weight, hidden)",
        "hidden = torch.bmm(weight, hidden)",
        ("tests/geodesics/test_space_bmm.py",),
    ),
    M(
        "the bmm strategy's shared first layer without its bias",
        "geodesics/batched_mlp.py",
        "out = torch.addmm(bias.reshape(count * op.n_out, 1), flat_weight, shared)",
        "out = torch.mm(flat_weight, shared)",
        ("tests/geodesics/test_space_bmm.py",),
    ),
    M(
        "the bmm strategy's cross-entropy path skipped",
        "geodesics/batched_mlp.py",
        "        if self.cross_entropy and _class_indices(inputs, targets):\n"
        "            return _cross_entropy(outputs, targets, grad=False)[0]",
        "        if False:\n            return _cross_entropy(outputs, targets, grad=False)[0]",
        ("tests/geodesics/test_space_bmm.py",),
    ),
    M(
        "ranks share units in blocks instead of round-robin",
        "envs/tooling/distributed.py",
        "return list(units[rank::world])",
        "return list(units[rank * len(units) // world : (rank + 1) * len(units) // world])",
        ("tests/envs/test_sharding.py",),
    ),
    M(
        "a rank outside the world accepted",
        "envs/tooling/distributed.py",
        "if not 0 <= rank < world:",
        "if not 0 <= rank <= world:",
        ("tests/envs/test_sharding.py",),
    ),
    M(
        "every rank takes every unit",
        "envs/tooling/distributed.py",
        "return list(units[rank::world])",
        "return list(units)",
        ("tests/envs/test_sharding.py",),
    ),
    # -- the tiny normalised rule, its scheduler and the family augmentation ------------------------------------------
    M(
        "tiny: an absolute epsilon (inputs no longer scale-free)",
        "metaopt/rules/tiny.py",
        "denominator = torch.rsqrt(v_hat + part.spread((mean_v * cfg.eps + _TINY)[None])[0])",
        "denominator = torch.rsqrt(v_hat + 1e-8)",
        TINY,
    ),
    M(
        "tiny: the update is not normalised per tensor",
        "metaopt/rules/tiny.py",
        "update = direction * part.spread((torch.rsqrt(rms + _TINY) * size)[None])[0]",
        "update = direction * part.spread(((rms * 0 + 1) * size)[None])[0]",
        TINY,
    ),
    M(
        "tiny: no muP factor",
        "metaopt/rules/tiny.py",
        "[mup_factor(cfg.base_fan_in, f, cfg.mup_cap) for f in fan_ins]",
        "[1.0 for f in fan_ins]",
        TINY,
    ),
    M(
        "tiny: a frozen tensor is not gated",
        "metaopt/rules/tiny.py",
        "size = (mean_v > 0).to(rms.dtype) * part.mup",
        "size = part.mup",
        TINY,
    ),
    M(
        "tiny: the hybrid gives the last matrix to the rule",
        "metaopt/rules/tiny.py",
        'return matrix_mask(shapes, "hidden")',
        'return matrix_mask(shapes, "all")',
        TINY,
    ),
    M(
        "tiny: AdamW without beta2's bias correction",
        "metaopt/rules/tiny.py",
        "torch.stack([lr * c1, c2.sqrt()])",
        "torch.stack([lr * c1, torch.ones_like(c2)])",
        TINY,
    ),
    M(
        "tiny: the scheduler forgets the first step's gradient",
        "metaopt/rules/tiny.py",
        'first = torch.where(steps == 1, mean_square, state["first_square"])',
        "first = mean_square",
        TINY,
    ),
    M(
        "scheduler: an untrained scheduler does not multiply by 1",
        "metaopt/rules/scheduler.py",
        "return 2.0 * torch.sigmoid(torch.addmv(",
        "return 2.5 * torch.sigmoid(torch.addmv(",
        TINY,
    ),
    M(
        "scheduler: the per-model factors not in (0, 2)",
        "metaopt/rules/scheduler.py",
        "return 2.0 * torch.sigmoid(torch.addmm(",
        "return 2.5 * torch.sigmoid(torch.addmm(",
        STACKED,
    ),
    M(
        "scheduler: the loss proxy is not a ratio (not scale-free)",
        "metaopt/rules/scheduler.py",
        "ratio = 0.5 * torch.log((mean_square + _TINY) / (first_square + _TINY)).mean()",
        "ratio = 0.5 * torch.log(mean_square + _TINY).mean()",
        TINY,
    ),
    M(
        "scheduler: progress read on the wrong axis",
        "metaopt/rules/scheduler.py",
        "progress = torch.tanh(steps * inv_scales).mean(dim=1)",
        "progress = torch.tanh(steps * inv_scales).sum(dim=1)",
        TINY,
    ),
    # -- the tiny rule's in-place drop-in step (eager and compiled) ------------------------------------------------
    M(
        "tiny in place: a step with one non-finite tensor passes the guard",
        "metaopt/rules/tiny_inplace.py",
        "torch.isfinite(bounds).all()",
        "torch.isfinite(bounds).any()",
        TINY_INPLACE,
    ),
    M(
        "tiny in place: the group's weight decay is not applied",
        "metaopt/rules/tiny_inplace.py",
        "flat.mul_(keep)",
        "flat.mul_(1.0)",
        TINY_INPLACE,
    ),
    M(
        "tiny in place: muP's fan-in is the second dimension only",
        "metaopt/rules/tiny_inplace.py",
        "mup_factor(cfg.base_fan_in, math.prod(shape[1:]), cfg.mup_cap)",
        "mup_factor(cfg.base_fan_in, shape[1], cfg.mup_cap)",
        TINY_INPLACE,
    ),
    M(
        "tiny in place: the second moment follows the gradient, not its square",
        "metaopt/rules/tiny_inplace.py",
        "torch.lerp(second[:, start:stop], (g * g)[None], second_complements)",
        "torch.lerp(second[:, start:stop], g[None], second_complements)",
        TINY_INPLACE,
    ),
    M(
        "tiny in place: the eager MLP drops the first layer's bias",
        "metaopt/rules/tiny_inplace.py",
        "folded = [torch.cat([w_in, bias[:, None]], dim=1)]",
        "folded = [torch.cat([w_in, 0 * bias[:, None]], dim=1)]",
        TINY_INPLACE,
    ),
    M(
        "tiny in place (compiled): a hidden unit reads the wrong weight",
        "metaopt/rules/tiny_inplace.py",
        "total = total + inputs[i] * weight[i]",
        "total = total + inputs[i] * weight[i - 1]",
        ("tests/metaopt/rules/test_tiny_inplace.py::test_the_compiled_in_place_step_equals_the_functional_step",),
    ),
    M(
        "augment: the gradient is not rescaled",
        "metaopt/training/augment.py",
        "return grad * ctx.scale, None",
        "return grad, None",
        FAMILY_V1,
    ),
    M(
        "augment: the model is not wrapped",
        "metaopt/training/augment.py",
        "return scale_gradient(out, self.scale)",
        "return out",
        FAMILY_V1,
    ),
    M(
        "augment: a running optimizee may be rescaled",
        "metaopt/training/augment.py",
        '    if inner.step:\n        raise ValueError("gradients',
        '    if False:\n        raise ValueError("gradients',
        FAMILY_V1,
    ),
    M(
        "schedule: the drawn horizon is ignored",
        "metaopt/training/schedule.py",
        "self._truncations = self.horizon_of(episode) // cfg.truncation",
        "self._truncations = cfg.steps // cfg.truncation",
        FAMILY_V1,
    ),
    M(
        "config: horizons that are no multiple of the truncation pass",
        "metaopt/training/config.py",
        "if any(h % self.truncation for h in self.horizons):",
        "if False:",
        FAMILY_V1,
    ),
    # -- the drop-in step's blocked paths and the optimizer contract (compile, copies, dtypes, divergence watch) ----
    M(
        "blocked LSTM step orders the folded gates as nn.LSTMCell does (i, f, g, o) while reading i, f, o, g",
        "metaopt/rules/lstm.py",
        "weights.append(torch.cat([i_f, out_gate, -2 * cell_gate])",
        "weights.append(torch.cat([i_f, -2 * cell_gate, out_gate])",
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
        "torch.index_select(progress, 1, ids, out=spread[num_raw:-1])",
        "spread[num_raw:-1].zero_()",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "blocked MLP step without the magnitude's scale",
        "metaopt/rules/mlp.py",
        "readout[1].mul_(self.config.exp_mult)",
        "readout[1].mul_(1.0)",
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
        'for key in ("rule", "skipped_steps", "divergence_ratio", "first_loss", "diverged", "compile"):',
        'for key in ("rule", "divergence_ratio", "first_loss", "diverged", "compile"):',
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
    # -- the held-out suite: tabular tasks, cosine AdamW and its twin, learned arms by name, speed-up statistics ------
    M(
        "tables standardized with the statistics of every row (test rows leak)",
        "envs/tasks/tabular.py",
        "mean, std = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0)",
        "mean, std = x.mean(axis=0), x.std(axis=0)",
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "held-out rows left among the training rows",
        "envs/tasks/tabular.py",
        "fit_rows = train[: len(train) - o.valid_size]",
        "fit_rows = train",
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "regression target left unstandardized",
        "envs/tasks/tabular.py",
        "y = (y - y[fit_rows].mean()) / y[fit_rows].std()",
        "y = y - y[fit_rows].mean()",
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "a learned entry's load-time options dropped",
        "metaopt/compare/config.py",
        'options["options"] = rule_options',
        'options["options"] = {}',
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "a learned entry's option values left as text",
        "metaopt/compare/config.py",
        "        return ast.literal_eval(text)",
        "        return text",
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "any colon read as the start of options (a path with a colon breaks)",
        "metaopt/compare/config.py",
        'if not sep or "=" not in tail:',
        "if not sep:",
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "synthetic tables drawn without a fixed seed (other rows at every load)",
        "envs/tasks/tabular.py",
        "data, target = getattr(sklearn.datasets, generator)(**arguments, random_state=0)",
        "data, target = getattr(sklearn.datasets, generator)(**arguments)",
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "synthetic classification table with the wrong number of classes",
        "envs/tasks/tabular.py",
        '"moons": 2, "classification": 3,',
        '"moons": 2, "classification": 2,',
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "class labels read as float targets",
        "envs/tasks/tabular.py",
        "y = np.asarray(target, dtype=np.int64 if DATASETS[dataset] else np.float64)",
        "y = np.asarray(target, dtype=np.float64)",
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "the test split is a different draw each time",
        "envs/tasks/tabular.py",
        "order = np.random.RandomState(split_seed).permutation(n)",
        "order = np.random.permutation(n)",
        ("tests/envs/test_tabular.py",),
    ),
    M(
        "cosine schedule stepped before the AdamW step",
        "envs/training/schedules.py",
        "        loss = super().step(closure)\n        self.schedule.step()",
        "        self.schedule.step()\n        loss = super().step(closure)",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "cosine factor over the wrong epoch",
        "envs/training/schedules.py",
        "(1 + math.cos(math.pi * epoch / total_steps)) / (1 + math.cos(math.pi * (epoch - 1) / total_steps))",
        "(1 + math.cos(math.pi * (epoch + 1) / total_steps)) / (1 + math.cos(math.pi * epoch / total_steps))",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "schedule position lost on load_state_dict",
        "envs/training/schedules.py",
        "            self.schedule.load_state_dict(schedule)",
        "            pass",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "functional cosine twin keeps the peak rate",
        "envs/training/functional.py",
        '        new_state["schedule"] = {"lr": scheduled}',
        '        new_state["schedule"] = {"lr": lr.to(torch.float64)}',
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "the harness does not hand a schedule its horizon",
        "envs/training/optim.py",
        "        return {self.horizon_option: steps, **options}",
        "        return {self.horizon_option: 1000, **options}",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "learned arm labelled by the first checkpoint only",
        "metaopt/compare/config.py",
        "            label = learned_label(entry)",
        "            label = learned_label(self.learned[0])",
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "speed-up counted from the reference's final loss when the optimizer ends higher",
        "metaopt/compare/stats.py",
        "    theirs = steps_to_reach(reference_curve, final)\n",
        "    theirs = steps_to_reach(reference_curve, reference_final)\n",
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "sharded parameters stepped shard by shard",
        "metaopt/shells.py",
        "            if _is_sharded(p):\n",
        "            if False:\n",
        SHARDED,
    ),
    M(
        "sharded parameters looked up in a module that is not the DTensor's",
        "metaopt/shells.py",
        '    module = sys.modules.get("torch.distributed.tensor")',
        '    module = sys.modules.get("torch.distributed.fsdp")',
        SHARDED,
    ),
    M(
        "the sharded-parameter check on the group's first parameter only",
        "metaopt/shells.py",
        "            if _is_sharded(p):\n",
        "            if index == 0 and _is_sharded(params[-1]):\n",
        SHARDED,
    ),
    M(
        "the size sweep's table with its sizes in the rows' order, not sorted",
        "benchmarks/learned_dropin_speed.py",
        '    sizes = sorted({row["params"] for row in rows})',
        '    sizes = list(dict.fromkeys(row["params"] for row in rows))',
        DROPIN_SUMMARY,
    ),
    M(
        "the size sweep's table with the training step's ratio in the step's place",
        "benchmarks/learned_dropin_speed.py",
        "row['step_ratio']:.2f}x ({row['train_step_ratio']:.2f}x)",
        "row['train_step_ratio']:.2f}x ({row['train_step_ratio']:.2f}x)",
        DROPIN_SUMMARY,
    ),
    M(
        "the size sweep's table with the load of the first row only",
        "benchmarks/learned_dropin_speed.py",
        '    loads = [row["load_average"][0] for row in rows]',
        '    loads = [rows[0]["load_average"][0]]',
        DROPIN_SUMMARY,
    ),
    M(
        "the eager in-place step's threshold back at 16,384 coordinates per tensor",
        "metaopt/rules/tiny_inplace.py",
        "EAGER_LEAST_PER_TENSOR = 6144\n",
        "EAGER_LEAST_PER_TENSOR = 2**14\n",
        EAGER_THRESHOLD,
    ),
    M(
        "the eager in-place step's threshold on the total coordinates, not the mean per tensor",
        "metaopt/rules/tiny_inplace.py",
        "    if not compile and sum(p.numel() for p in params) < EAGER_LEAST_PER_TENSOR * len(params):",
        "    if not compile and sum(p.numel() for p in params) < EAGER_LEAST_PER_TENSOR:",
        EAGER_THRESHOLD,
    ),
    M(
        "the eager in-place step's threshold on the largest tensor",
        "metaopt/rules/tiny_inplace.py",
        "    if not compile and sum(p.numel() for p in params) < EAGER_LEAST_PER_TENSOR * len(params):",
        "    if not compile and max(p.numel() for p in params) < EAGER_LEAST_PER_TENSOR:",
        EAGER_THRESHOLD,
    ),
    M(
        "a run without wall times refused when resumed with timing=true",
        "envs/tooling/runs.py",
        'RESULT_NEUTRAL_KEYS = frozenset({"out", "name", "timing"})',
        'RESULT_NEUTRAL_KEYS = frozenset({"out", "name"})',
        (
            "tests/metaopt/compare/test_compare_harness.py::test_wall_times_are_added_to_a_finished_run_by_resuming_it_with_timing",
        ),
    ),
    M(
        "the run comparison compares the speed-up in wall time",
        "envs/tooling/rundiff.py",
        'WALL_CLOCK = ("seconds", "wall_clock")',
        'WALL_CLOCK = ("seconds",)',
        ("tests/envs/test_rundiff.py::test_the_speed_up_in_wall_time_is_a_wall_clock_figure",),
    ),
    M(
        "the run comparison compares the report's wall-clock IQM column",
        "envs/tooling/rundiff.py",
        'r"second|time|wall|/step|run-step|per (minute|second)"',
        'r"second|time|/step|run-step|per (minute|second)"',
        ("tests/envs/test_rundiff.py::test_the_speed_up_in_wall_time_is_a_wall_clock_figure",),
    ),
    M(
        "wall-clock speed-up with the time ratio upside down",
        "metaopt/compare/stats.py",
        "    return speedup * reference_seconds_per_step / seconds_per_step",
        "    return speedup * seconds_per_step / reference_seconds_per_step",
        WALL_CLOCK,
    ),
    M(
        "wall-clock speed-up kept where a time per step is 0",
        "metaopt/compare/stats.py",
        "    if not (seconds_per_step > 0 and reference_seconds_per_step > 0 and math.isfinite(speedup)):",
        "    if not (reference_seconds_per_step > 0 and math.isfinite(speedup)):",
        WALL_CLOCK,
    ),
    M(
        "wall-clock speed-up against the optimizer's own time instead of the reference's",
        "metaopt/compare/results.py",
        "                wall_speedup=wall_clock_speedup(speedup, seconds, reference_seconds),",
        "                wall_speedup=wall_clock_speedup(speedup, seconds, seconds),",
        WALL_CLOCK,
    ),
    M(
        "the CSV's wall-clock speed-up is the speed-up in steps",
        "metaopt/compare/report.py",
        '                "wall_clock_speedup": row.wall_speedup,',
        '                "wall_clock_speedup": row.speedup,',
        WALL_CLOCK,
    ),
    M(
        "IQM cuts nothing",
        "metaopt/compare/stats.py",
        "    cut = array.size // 4",
        "    cut = 0",
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "paired eval-loss difference against the training losses",
        "metaopt/compare/results.py",
        "paired_difference(ev.eval_by_seed, reference.eval_by_seed)",
        "paired_difference(ev.finals, reference.finals)",
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    M(
        "config text back in a text-only root run",
        "metaopt/compare/figures.py",
        '    home = reference if reference in optimizers else optimizers[0] if optimizers else ""',
        '    home = ""\n    SummaryWriter(str(tb_dir)).add_text("config", config_text, 0)',
        ("tests/metaopt/compare/test_heldout_suite.py",),
    ),
    # -- results that do not depend on the machine's load; the quickstart's short terminal summary ------------------
    M(
        "a zero wall-clock budget taken as a limit",
        "geodesics/finders/common.py",
        "if self.max_seconds > 0 and self.elapsed > self.max_seconds:",
        "if self.elapsed > self.max_seconds:",
        ("tests/test_load_invariance.py",),
    ),
    M(
        "runs cut short by the wall clock not named in the report",
        "geodesics/commands/compare_paths.py",
        "    if timed_out:",
        "    if not timed_out:",
        ("tests/test_load_invariance.py",),
    ),
    M(
        "the quickstart prints the full tables",
        "metaopt/commands/quickstart.py",
        "run_compare(c, tables=False)",
        "run_compare(c, tables=True)",
        ("tests/metaopt/commands/test_quickstart.py",),
    ),
    M(
        "the time estimate counts the episodes left wrongly",
        "metaopt/training/loop.py",
        "cfg.episodes - self.progress.episode))  # fmt: skip",
        "cfg.episodes - done))  # fmt: skip",
        ("tests/metaopt/training/test_train.py",),
    ),
    # -- {name, options} choices: older shapes read as today's, options spelled out, --help of the chosen entry --
    M(
        "a choice given by its bare name in a file not read as its name",
        "envs/tooling/config.py",
        "if name in node and isinstance(node[name], str):",
        "if name in node and isinstance(node[name], dict):",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "a bare rename on the command line merged onto the old entry's options",
        "envs/tooling/config.py",
        'rest += ".name"',
        'rest += ""',
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "a rule's options not spelled out (a default given explicitly differs from one left out)",
        "metaopt/training/config.py",
        "self.rule.options = _spelled_out(self.rule_config())",
        "self.rule_config()",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "--help describes the default entries, not the ones the command line picks",
        "envs/tooling/cli.py",
        "cfg: Any = load_config(schema, config, overrides)",
        "cfg = schema()",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "an equal entry registered again (a module imported twice) refused",
        "envs/tooling/registry.py",
        "if taken is not None and taken.target is not target and taken.target != target:",
        "if taken is not None and taken.target is not target:",
        ("tests/envs/test_registry.py",),
    ),
    M(
        "the optimizer registry replaces a taken name silently",
        "envs/training/optim.py",
        "    OPTIMIZERS.register(name, OptimizerSpec(name, factory, dict(options), tunable_lr, horizon_option))",
        "    OPTIMIZERS.unregister(name)\n"
        "    OPTIMIZERS.register(name, OptimizerSpec(name, factory, dict(options), tunable_lr, horizon_option))",
        ("tests/envs/test_registry.py",),
    ),
    M(
        "an optimizer's factory string not imported on lookup",
        "envs/training/optim.py",
        "    if isinstance(spec.factory, str):",
        "    if False:",
        ("tests/envs/test_registry.py",),
    ),
    M(
        "ranks read what is done after the barrier (a fast rank's appends change a slow rank's share)",
        "envs/tooling/runs.py",
        "        records = self.records(kind)\n        distributed.barrier()\n        return records",
        "        distributed.barrier()\n        return self.records(kind)",
        ("tests/test_distributed.py::test_ranks_agree_on_what_is_done_before_any_appends_more",),
    ),
    M(
        "per-tensor means of a large model divided by the count twice",
        "metaopt/rules/tiny.py",
        "sums = torch.stack([piece.sum(1) for piece in values.split(self.sizes, dim=1)], dim=1)",
        "sums = torch.stack([piece.mean(1) for piece in values.split(self.sizes, dim=1)], dim=1)",
        ("tests/metaopt/rules/test_tiny.py::test_per_tensor_means_of_a_large_model_are_each_tensors_own_mean",),
    ),
    M(
        "a command announces its run without the TensorBoard line",
        "envs/tooling/runs.py",
        "    def announce(self, tensorboard: bool = True) -> None:",
        "    def announce(self, tensorboard: bool = False) -> None:",
        ("tests/test_cli.py",),
    ),
    # -- a reference task is one module: the package imports every module, the gym ids come from the source --------
    M(
        "a task's own env_name ignored when the gym ids are read from the source",
        "envs/gym/__init__.py",
        'names[task] = fields.get("env_name") or _derived_env_name(task)',
        "names[task] = _derived_env_name(task)",
        ("tests/test_cli_startup.py",),
    ),
    M(
        "the gym ids read from classes with another decorator",
        "envs/gym/__init__.py",
        'isinstance(d, ast.Name) and d.id == "register_task" for d in node.decorator_list',
        'isinstance(d, ast.Name) and d.id == "dataclass" for d in node.decorator_list',
        ("tests/test_cli_startup.py",),
    ),
    M(
        "the tasks package does not import its modules",
        "envs/tasks/__init__.py",
        '    importlib.import_module(f"{__name__}.{_module}")',
        "    pass",
        ("tests/test_cli_startup.py",),
    ),
    M(
        "--help of the chosen entries only for -h",
        "envs/tooling/cli.py",
        'if "-h" in argv or "--help" in argv:',
        'if "-h" in argv:',
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "--help gives an entry without options a heading",
        "envs/tooling/cli.py",
        "if value.name in registry and len(registry.describe(value.name).splitlines()) > 1:",
        "if value.name in registry:",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "the announced TensorBoard line points at the run, not its tb/ folder",
        "envs/tooling/runs.py",
        """print(f"tensorboard --logdir {self.path / 'tb'}")""",
        """print(f"tensorboard --logdir {self.path}")""",
        ("tests/test_cli.py",),
    ),
    M(
        "the gym ids read only from classes that set env_name",
        "envs/gym/__init__.py",
        'if "name" in fields:',
        'if "env_name" in fields:',
        ("tests/test_cli_startup.py",),
    ),
    M(
        "the tasks package imports only its private modules",
        "envs/tasks/__init__.py",
        'if not info.name.startswith("_")',
        'if info.name.startswith("_")',
        ("tests/test_cli_startup.py",),
    ),
    M(
        "an older config's estimator options read as the rule's",
        "metaopt/training/config.py",
        '"estimator_options": "estimator.options"',
        '"estimator_options": "rule.options"',
        ("tests/metaopt/training/test_train.py",),
    ),
    # -- the one training loop (envs/training/fit.py) and the old module names ------------------------------------
    M(
        "fit stops above the target (the comparison reversed)",
        "envs/training/fit.py",
        "if history and stop_below is not None and history[-1][1] <= stop_below:",
        "if history and stop_below is not None and history[-1][1] >= stop_below:",
        ("tests/geodesics/test_endpoints.py",),
    ),
    M(
        "fit goes on after a non-finite loss",
        "envs/training/fit.py",
        "        if not math.isfinite(value):",
        "        if False:",
        ("tests/envs/test_fit.py",),
    ),
    M(
        "fit with a target never evaluates",
        "envs/training/fit.py",
        "    if stop_below is not None and eval_every <= 0:",
        "    if stop_below is None and eval_every <= 0:",
        ("tests/envs/test_fit.py",),
    ),
    M(
        "an old module name is a copy, not the moved module",
        "envs/schedules.py",
        "sys.modules[__name__] = _module",
        "_module = _module",
        ("tests/test_layering.py",),
    ),
    # -- a path finder's own options: dss.finder {name, options} (geodesics/finders/base.py, settings.py) ----------
    M(
        "an older key read by another finder is kept, not dropped",
        "geodesics/finders/base.py",
        "        if name is not None and name not in readers:",
        "        if name is not None and name in readers:",
        FINDER_OPTIONS,
    ),
    M(
        "an older nested mapping (neb:) is moved whole instead of its options",
        "geodesics/finders/base.py",
        "            options.update({k: value[k] for k in value})",
        "            options[key] = value",
        FINDER_OPTIONS,
    ),
    M(
        "options are not spelled out in the saved settings",
        "geodesics/finders/base.py",
        "            self.finder.options = {f.name: getattr(own, f.name) for f in dataclasses.fields(own)}",
        "            pass",
        FINDER_OPTIONS,
    ),
    M(
        "with_options replaces the options instead of updating them",
        "geodesics/finders/base.py",
        "{**self.finder.options, **options}",
        "dict(options)",
        FINDER_OPTIONS,
    ),
    M(
        "using() sends shared settings to the finder",
        "geodesics/finders/base.py",
        "        own = {key: value for key, value in settings.items() if key not in shared}",
        "        own = dict(settings)",
        FINDER_OPTIONS,
    ),
    M(
        "greedy's finish is not handed to the bead trainer",
        "geodesics/finders/settings.py",
        "finish=self.finish, finish_steps=self.finish_steps, restarts=self.restarts",
        "finish_steps=self.finish_steps, restarts=self.restarts",
        ("tests/geodesics/test_low_levels.py",),
    ),
    M(
        "accept_factor below 1 let through",
        "geodesics/finders/settings.py",
        '        check_range(self, "accept_factor", low=1)',
        '        check_range(self, "accept_factor", low=0)',
        ("tests/geodesics/test_paper_preset.py",),
    ),
    M(
        "constrained stages of 0 let through",
        "geodesics/finders/settings.py",
        '        check_range(self, "stages", low=1, integer=True)',
        '        check_range(self, "stages", low=0, integer=True)',
        ("tests/geodesics/test_bad_values.py", "tests/geodesics/test_finder_options.py"),
    ),
    # -- compare-paths: each finder with its own options (geodesics/commands/compare_paths.py) --------------------
    M(
        "a finder's options in finders are dropped",
        "geodesics/commands/compare_paths.py",
        'FinderChoice(str(entry["name"]), dict(entry.get("options") or {}))',
        'FinderChoice(str(entry["name"]))',
        FINDER_OPTIONS,
    ),
    M(
        "an older shared finder option goes to every finder",
        "geodesics/commands/compare_paths.py",
        "                if name not in readers:\n                    continue",
        "                if name is None:\n                    continue",
        FINDER_OPTIONS,
    ),
    M(
        "compare-paths reads dss.finder silently",
        "geodesics/commands/compare_paths.py",
        "        if self.dss.finder != DSSConfig().finder:",
        "        if False:",
        FINDER_OPTIONS,
    ),
    # -- the config seams: saved runs read as today, help of nested choices (envs/tooling) -------------------------
    M(
        "a saved run is compared as written, not as read today",
        "envs/tooling/runs.py",
        "        saved = saved_as_today(type(config), existing)",
        "        saved = None",
        FINDER_OPTIONS,
    ),
    M(
        "the defaults keep the old entry's options on a rename",
        "envs/tooling/config.py",
        "_forget_options_of_renamed([base, *layers], overrides)",
        "_forget_options_of_renamed(layers, overrides)",
        ("tests/geodesics/test_paper_preset.py", "tests/geodesics/test_finder_options.py"),
    ),
    M(
        "a schema's own upgrade hook is skipped",
        "envs/tooling/config.py",
        "    if hook is not None:\n        hook(node, prefix, notes)",
        "    if hook is None:\n        hook(node, prefix, notes)",
        FINDER_OPTIONS,
    ),
    M(
        "help does not descend into nested settings",
        "envs/tooling/cli.py",
        '                visit(value, key + ".")',
        "                pass",
        FINDER_OPTIONS,
    ),
    # -- what a task is, as one sub-package (envs/task/) with its old module names ---------------------------------
    M(
        "the old registry name is a copy, not the moved module",
        "envs/registry.py",
        "sys.modules[__name__] = _module",
        "_module = _module",
        ("tests/test_layering.py",),
    ),
    M(
        "the old contract name is a copy, not the moved module",
        "envs/contract.py",
        "sys.modules[__name__] = _module",
        "_module = _module",
        ("tests/test_layering.py",),
    ),
    M(
        "the task package loads the interface eagerly (torch on every --help)",
        "envs/task/__init__.py",
        "if TYPE_CHECKING:\n    from envs.task.base import",
        "if True:\n    from envs.task.base import",
        ("tests/test_cli_startup.py",),
    ),
    # -- the objective as {name, options} (metaopt/objectives/registry.py) -----------------------------------------
    M(
        "an older loss_weight is kept for an objective that never read it",
        "metaopt/objectives/registry.py",
        'if name in OBJECTIVES and "loss_weight" not in _option_names(str(name)):',
        'if name in OBJECTIVES and "loss_weight" in _option_names(str(name)):',
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "options given to an objective without any are ignored",
        "metaopt/objectives/registry.py",
        "            if self.options:\n                message",
        "            if False:\n                message",
        ("tests/metaopt/training/test_train.py",),
    ),
    # -- AdamW with a warmup and a cosine (envs/training/schedules.py, its functional twin, the harness's check) ------
    M(
        "the warmup starts one update late (a first step at rate 0)",
        "envs/training/schedules.py",
        "        return base * update / warmup_steps",
        "        return base * (update - 1) / warmup_steps",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "the cosine after the warmup is not held at eta_min past the horizon",
        "envs/training/schedules.py",
        "    done = min(update - 1 - warmup_steps, total_steps - warmup_steps)",
        "    done = update - 1 - warmup_steps",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "the warmup's scheduler factor read one update behind",
        "envs/training/schedules.py",
        "lambda k: warmup_cosine_lr(1.0, k + 1, total_steps",
        "lambda k: warmup_cosine_lr(1.0, max(k, 1), total_steps",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "the functional twin skips the warmup",
        "envs/training/functional.py",
        "                scheduled = peak * (step / self.warmup_steps)",
        "                scheduled = peak",
        ("tests/envs/test_schedules.py",),
    ),
    M(
        "the harness builds a schedule with a horizon of one step",
        "metaopt/compare/harness.py",
        "        _check_builds(name, registered, options, grid[0] if tunable else None, horizon)",
        "        _check_builds(name, registered, options, grid[0] if tunable else None, 1)",
        ("tests/metaopt/test_compare_learned.py",),
    ),
    # -- the tasks' building blocks (envs/task/nn.py, moved with the task modules) --------------------------------
    M(
        "the unrolled LSTM's input and forget gates swapped",
        "envs/task/nn.py",
        "c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)",
        "c = torch.sigmoid(i) * c + torch.sigmoid(f) * torch.tanh(g)",
        ("tests/envs/test_task_nn.py",),
    ),
    M(
        "mlp puts an activation after its last layer",
        "envs/task/nn.py",
        "        if i < len(sizes) - 2:",
        "        if i < len(sizes) - 1:",
        ("tests/envs/test_task_nn.py",),
    ),
    M(
        "mlp ignores bias=False",
        "envs/task/nn.py",
        "layers.append(nn.Linear(n_in, n_out, bias=bias))",
        "layers.append(nn.Linear(n_in, n_out))",
        ("tests/envs/test_task_nn.py",),
    ),
    M(
        "the transformer's causal mask keeps the diagonal out (a position cannot see itself)",
        "envs/task/nn.py",
        "device=x.device).triu(1)",
        "device=x.device).triu(0)",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "the transformer's causal mask lets a position see the future",
        "envs/task/nn.py",
        "device=x.device).triu(1)",
        "device=x.device).tril(-1)",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "attention scores not scaled by the head width",
        "envs/task/nn.py",
        "scores = (q @ k.transpose(-2, -1)) * head**-0.5",
        "scores = (q @ k.transpose(-2, -1)) * width**-0.5",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "attention heads split across the wrong axis",
        "envs/task/nn.py",
        ".view(batch, steps, 3, self.heads, head).permute(2, 0, 3, 1, 4)",
        ".view(batch, steps, self.heads, 3, head).permute(3, 0, 2, 1, 4)",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "the transformer's positions read from the token rows of the table",
        "envs/task/nn.py",
        "self.embed.weight[self.vocab_size : self.vocab_size + steps]",
        "self.embed.weight[:steps]",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "the transformer block's MLP reads the stream before its norm",
        "envs/task/nn.py",
        "        return x + self.mlp(self.norm2(x))",
        "        return x + self.mlp(x)",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "the residual projections not scaled down at initialisation",
        "envs/task/nn.py",
        "std=0.02 / math.sqrt(2 * num_layers) if residual else 0.02",
        "std=0.02 if residual else 0.02",
        ("tests/envs/test_char_transformer.py",),
    ),
    M(
        "an objective's options are not spelled out",
        "metaopt/objectives/registry.py",
        "        self.options = {f.name: getattr(own, f.name) for f in dataclasses.fields(own)}  # spelled out",
        "        pass",
        ("tests/metaopt/training/test_train.py",),
    ),
    M(
        "the imitation objectives drop their L2L term",
        "metaopt/objectives/imitation.py",
        "        if weight:",
        "        if False:",
        ("tests/metaopt/test_imitation.py", "tests/metaopt/targets/test_targets.py"),
    ),
    M(
        "a choice's options read as another entry's",
        "envs/tooling/registry.py",
        "        if not isinstance(own, kind):",
        "        if False:",
        ("tests/geodesics/test_finder_options.py", "tests/metaopt/training/test_train.py"),
    ),
    # -- the stacked meta-batch (metaopt/inner/stacked.py, truncated_backprop optimizees=stack) --------------------
    M(
        "stacked step: the update subtracted",
        "metaopt/inner/stacked.py",
        "    return p + (delta if lr == 1 else lr * delta)",
        "    return p - (delta if lr == 1 else lr * delta)",
        STACKED,
    ),
    M(
        "stacked step: weight decay not scaled by lr",
        "metaopt/inner/stacked.py",
        "p = p * (1 - lr * weight_decay)",
        "p = p * (1 - weight_decay)",
        STACKED,
    ),
    M(
        "stacked step: the rule reads detached parameter values",
        "metaopt/inner/stacked.py",
        "per_tensor = [p for group, name in names for p in group.tensors(name)]",
        "per_tensor = [p.detach() for group, name in names for p in group.tensors(name)]",
        STACKED,
    ),
    M(
        "stacked unroll: second order dropped",
        "metaopt/inner/stacked.py",
        "create_graph=not first_order",
        "create_graph=False",
        STACKED,
    ),
    M(
        "stacked unroll: the rule state restarts every truncation",
        "metaopt/inner/stacked.py",
        "return inner.optimizer.state[param] or rule.init_state(param)",
        "return rule.init_state(param)",
        STACKED,
    ),
    M(
        "stacked unroll: every member carries the first member's parameters",
        "metaopt/inner/stacked.py",
        "p.copy_(group.tensors(name)[k])",
        "p.copy_(group.tensors(name)[0])",
        STACKED,
    ),
    M(
        "stack key: models that print differently (gradient factors) stacked together",
        "metaopt/inner/stacked.py",
        "return (id(inner.task), type(model), repr(model), params, options, inner.valid_batches is None)",
        "return (id(inner.task), type(model), params, options, inner.valid_batches is None)",
        STACKED,
    ),
    M(
        "stacked loss: the model's parameters not put back",
        "metaopt/inner/stacked.py",
        "                module._parameters[attr] = original",
        "                pass",
        STACKED,
    ),
    M(
        "stacked loss: tied parameters swapped one slot at a time",
        "metaopt/inner/stacked.py",
        "self.tied = len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.parameters()))",
        "self.tied = False",
        STACKED,
    ),
    M(
        "stacked unroll: no held-out losses",
        "metaopt/inner/stacked.py",
        "if inners[group.members[0]].valid_batches is not None:",
        "if inners[group.members[0]].valid_batches is None:",
        STACKED,
    ),
    M(
        "optimizees=stack taken for a rule that couples tensors",
        "metaopt/outer/truncated_backprop.py",
        'if self.config.optimizees == "stack" and rule.separable_by_model:\n            return self._stacked',
        'if self.config.optimizees == "stack":\n            return self._stacked',
        STACKED,
    ),
    M(
        "second_order never reaches the stacked unroll",
        "metaopt/outer/truncated_backprop.py",
        "unroll_many(inners, rule, setup.truncation, first_order=not setup.second_order)",
        "unroll_many(inners, rule, setup.truncation, first_order=True)",
        STACKED,
    ),
    M(
        "stacked estimate: the meta-loss not divided by the meta-batch",
        "metaopt/outer/truncated_backprop.py",
        "meta_losses = [setup.objective(trajectory) / len(inners) for trajectory in trajectories]",
        "meta_losses = [setup.objective(trajectory) for trajectory in trajectories]",
        STACKED,
    ),
    M(
        "stacked estimate: the first optimizee's updates shown",
        "metaopt/outer/truncated_backprop.py",
        "[float(t.losses[-1].detach()) for t in trajectories], trajectories[-1]",
        "[float(t.losses[-1].detach()) for t in trajectories], trajectories[0]",
        STACKED,
    ),
    M(
        "optimizees=stack by default (old runs no longer bit for bit)",
        "metaopt/outer/truncated_backprop.py",
        'optimizees: str = "loop"',
        'optimizees: str = "stack"',
        STACKED,
    ),
    M(
        "a rule that says nothing counts as separable",
        "metaopt/rules/base.py",
        """        return False

    @property
    def separable_by_model(self) -> bool:""",
        """        return True

    @property
    def separable_by_model(self) -> bool:""",
        STACKED,
    ),
    M(
        "the mlp rule not separable (the stacked path never taken)",
        "metaopt/rules/mlp.py",
        'factored moments are per coordinate or per tensor."""\n        return True',
        'factored moments are per coordinate or per tensor."""\n        return False',
        STACKED,
    ),
    M(
        "the lstm rule not separable",
        "metaopt/rules/lstm.py",
        '"""True: the LSTM and its preprocessing are coordinatewise."""\n        return True',
        '"""True: the LSTM and its preprocessing are coordinatewise."""\n        return False',
        STACKED,
    ),
    M(
        "the tiny rule's hybrid counted separable",
        "metaopt/rules/tiny.py",
        'return self.config.learned_tensors != "hidden" and self.schedule is None',
        "return self.schedule is None",
        STACKED,
    ),
    M(
        "the tiny rule's global scheduler counted separable",
        "metaopt/rules/tiny.py",
        'return self.config.learned_tensors != "hidden" and self.schedule is None',
        'return self.config.learned_tensors != "hidden"',
        STACKED,
    ),
    M(
        "the mlp rule's layouts unbounded (stacked families grow its memory)",
        "metaopt/rules/mlp.py",
        "            if len(self._layouts) >= MAX_LAYOUTS:",
        "            if False:",
        STACKED,
    ),
    M(
        "the tiny rule's layouts unbounded",
        "metaopt/rules/tiny.py",
        "            if len(self._layouts) >= MAX_LAYOUTS:",
        "            if False:",
        STACKED,
    ),
    M(
        "gradient-scaled models print alike (stacked with unscaled ones)",
        "metaopt/training/augment.py",
        'wrapped with different factors print (and stack) apart."""\n        return f"scale={self.scale!r}"',
        'wrapped with different factors print (and stack) apart."""\n        return "scale"',
        STACKED,
    ),
    # -- recipe v3: weight reparameterization, the teacher-student held-out sample ---------------------------------
    M(
        "a reparameterized layer divides its weight instead of multiplying it",
        "metaopt/training/augment.py",
        "            layer.weight.mul_(self.scale)",
        "            layer.weight.div_(self.scale)",
        FAMILY_V3,
    ),
    M(
        "a reparameterized layer multiplies its input instead of dividing it",
        "metaopt/training/augment.py",
        "return self.layer(inputs / self.scale)",
        "return self.layer(inputs * self.scale)",
        FAMILY_V3,
    ),
    M(
        "convolutions left out of weight reparameterization",
        "metaopt/training/augment.py",
        "REPARAMETERIZED = (nn.Linear, nn.Conv1d, nn.Conv2d)",
        "REPARAMETERIZED = (nn.Linear,)",
        FAMILY_V3,
    ),
    M(
        "a running optimizee may be reparameterized",
        "metaopt/training/augment.py",
        '    if inner.step:\n        raise ValueError("weights',
        '    if False:\n        raise ValueError("weights',
        FAMILY_V3,
    ),
    M(
        "weight factors drawn from the gradient factors' stream",
        "metaopt/training/schedule.py",
        'g = generator(self.cfg.seed, "param_scale", episode, slot)',
        'g = generator(self.cfg.seed, "grad_scale", episode, slot)',
        FAMILY_V3,
    ),
    M(
        "weight factors drawn but never applied",
        "metaopt/training/schedule.py",
        "            if self.cfg.param_scales:",
        "            if not self.cfg.param_scales:",
        FAMILY_V3,
    ),
    M(
        "a weight factor of zero accepted",
        "metaopt/training/config.py",
        'check_range(self, "param_scales", low=0, low_open=True)',
        'check_range(self, "param_scales", low=0)',
        FAMILY_V3,
    ),
    M(
        "the teacher-student held-out inputs drawn from the training stream",
        "envs/tasks/teacher_student.py",
        'g = generator(o.data_seed, self.name, "valid_inputs")',
        'g = generator(o.data_seed, self.name, "inputs")',
        FAMILY_V3,
    ),
    M(
        "the teacher-student held-out targets not scaled like the training targets",
        "envs/tasks/teacher_student.py",
        "            y = self._teacher_outputs(x) / self._scale",
        "            y = self._teacher_outputs(x)",
        FAMILY_V3,
    ),
    M(
        "the teacher-student held-out split offered without valid_points",
        "envs/tasks/teacher_student.py",
        "        if not self.options.valid_points:",
        "        if self.options.valid_points:",
        FAMILY_V3,
    ),
    M(
        "the muP cap raises small factors instead of capping large ones",
        "metaopt/rules/tiny_inplace.py",
        "return min(factor, 1.0) if cap else factor",
        "return max(factor, 1.0) if cap else factor",
        TINY,
    ),
    M(
        "the functional step ignores mup_cap",
        "metaopt/rules/tiny.py",
        "factors = [mup_factor(cfg.base_fan_in, f, cfg.mup_cap) for f in fan_ins]",
        "factors = [mup_factor(cfg.base_fan_in, f, False) for f in fan_ins]",
        TINY,
    ),
    M(
        "the in-place step ignores mup_cap",
        "metaopt/rules/tiny_inplace.py",
        "mup_factor(cfg.base_fan_in, math.prod(shape[1:]), cfg.mup_cap)",
        "mup_factor(cfg.base_fan_in, math.prod(shape[1:]), False)",
        ("tests/metaopt/rules/test_tiny_inplace.py",),
    ),
    M(
        "the tuned learned arm's multiplier tuned on the baselines' lr_grid",
        "metaopt/compare/config.py",
        "return self.learned_lr_grid if optimizer in self.tuned_learned else self.lr_grid",
        "return self.lr_grid",
        LEARNED_LR_GRID,
    ),
    M(
        "the tuned learned arm not tuned (its multiplier left at the rule's own)",
        "metaopt/compare/harness.py",
        "tunable = spec.tunable_lr or name in cfg.tuned_learned",
        "tunable = spec.tunable_lr",
        LEARNED_LR_GRID,
    ),
    M(
        "a multiplier of zero accepted",
        "metaopt/compare/config.py",
        'check_range(self, "learned_lr_grid", low=0, low_open=True)',
        'check_range(self, "learned_lr_grid", low=0)',
        LEARNED_LR_GRID,
    ),
    M(
        "a tuned learned arm added with an empty learned_lr_grid",
        "metaopt/compare/config.py",
        "for arm in [label, label + TUNED_SUFFIX] if self.learned_lr_grid else [label]:",
        "for arm in [label, label + TUNED_SUFFIX]:",
        LEARNED_LR_GRID,
    ),
    M(
        "tune_on ignored: every rate chosen by the training loss",
        "metaopt/compare/results.py",
        'finals[i, j] = eval_loss if cfg.tune_on == "eval" else final_loss(losses, cfg.final_window)',
        "finals[i, j] = final_loss(losses, cfg.final_window)",
        TUNE_ON,
    ),
    M(
        "an unknown tuning criterion accepted",
        "metaopt/compare/config.py",
        'TUNE_ON = ("train", "eval")',
        'TUNE_ON = ("train", "eval", "test")',
        TUNE_ON,
    ),
    M(
        "the report says the training loss was minimised whatever tune_on says",
        "metaopt/compare/report.py",
        'return "mean evaluation loss (of the final weights)" if cfg.tune_on == "eval" else "mean final training loss"',
        'return "mean final training loss"',
        TUNE_ON,
    ),
    M(
        "tuning.csv's score column named mean_final_loss under tune_on: eval",
        "metaopt/compare/outputs.py",
        "csv_text(tuning_rows(tasks, cfg.tune_on))",
        "csv_text(tuning_rows(tasks))",
        TUNE_ON,
    ),
    M(
        "operating points that count the tuning runs too",
        "scripts/operating_points.py",
        'if record.get("kind") != "unit" or record["phase"] != "eval" or record["diverged"]:',
        'if record.get("kind") != "unit" or record["diverged"]:',
        OPERATING_POINTS,
    ),
    M(
        "an operating point's training loss averaged over the whole curve",
        "scripts/operating_points.py",
        'finals[key] = (final_loss([float(v) for v in record["losses"]], window), float(record["eval_loss"]))',
        'finals[key] = (final_loss([float(v) for v in record["losses"]], 10**9), float(record["eval_loss"]))',
        OPERATING_POINTS,
    ),
    M(
        "dominance on either loss instead of both",
        "scripts/operating_points.py",
        "if train <= point[0] and evaluation <= point[1]]",
        "if train <= point[0] or evaluation <= point[1]]",
        OPERATING_POINTS,
    ),
    M(
        "the functional step moves against the rule's update",
        "metaopt/inner/compiled.py",
        "new = [moved(p, delta, lr, wd) for",
        "new = [moved(p, -delta, lr, wd) for",
        (*FUNCTIONAL_TRUNCATION, *COMPILED_UNROLL),
    ),
    M(
        "the functional truncation one batch late",
        "benchmarks/compiled_unroll.py",
        "for inputs, targets in batches[:steps]:",
        "for inputs, targets in batches[1 : steps + 1]:",
        FUNCTIONAL_TRUNCATION,
    ),
    M(
        "the functional step first-order (the gradient enters the rule detached)",
        "metaopt/inner/compiled.py",
        "        if first_order:\n            flat = flat.detach()",
        "        if True:\n            flat = flat.detach()",
        (*FUNCTIONAL_TRUNCATION, *COMPILED_UNROLL),
    ),
    M(
        "the chosen step multiplier shown as a learning rate",
        "metaopt/compare/report.py",
        "lr = _lr_text(row, row.optimizer in cfg.tuned_learned)",
        "lr = _lr_text(row)",
        LEARNED_LR_GRID,
    ),
    M(
        "the tuned learned arm's tuning read back on the baselines' grid",
        "metaopt/compare/results.py",
        "seeds, grid = cfg.tuning_seed_list, cfg.grid_of(optimizer)",
        "seeds, grid = cfg.tuning_seed_list, cfg.lr_grid",
        LEARNED_LR_GRID,
    ),
    M(
        "the training loop's checkpoint written before its TensorBoard events are flushed",
        "metaopt/training/loop.py",
        "self.run.flush()  # every event before the resume point",
        "pass  # every event before the resume point",
        ("tests/metaopt/training/test_family_v1.py",),
    ),
    M(
        "a run's flush that does not reach the writer",
        "envs/tooling/runs.py",
        "self._writer.flush()",
        "pass",
        ("tests/metaopt/training/test_family_v1.py",),
    ),
    M(
        "Newton-Schulz with the cubic term's coefficient where the linear one belongs",
        "envs/training/muon.py",
        "x = product(x, product(gram, gram, gram, beta=b, alpha=c), x, beta=a)",
        "x = product(x, product(gram, gram, gram, beta=b, alpha=c), x, beta=c)",
        MUON,
    ),
    M(
        "Muon's rate adjusted by the smaller side of the matrix",
        "envs/training/muon.py",
        "scale = 0.2 * math.sqrt(max(flat.shape))",
        "scale = 0.2 * math.sqrt(min(flat.shape))",
        MUON,
    ),
    M(
        "Muon's Nesterov look-ahead without the momentum factor",
        "envs/training/muon.py",
        'direction = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer',
        'direction = grad.add(buffer) if group["nesterov"] else buffer',
        MUON,
    ),
    M(
        "hidden matrices that include the last one",
        "envs/training/muon.py",
        'chosen = set(positions) if matrices == "all" else set(positions[1:-1]) if matrices == "hidden" else set()',
        'chosen = set(positions) if matrices == "all" else set(positions[1:]) if matrices == "hidden" else set()',
        MUON,
    ),
    M(
        "Muon's momentum as an average instead of a sum",
        "envs/training/muon.py",
        'buffer.mul_(group["momentum"]).add_(grad)',
        'buffer.lerp_(grad, 1 - group["momentum"])',
        MUON,
    ),
    M(
        "the tiny rule's matrices orthogonalized as columns by rows",
        "metaopt/rules/tiny.py",
        "self.learned.matrices = [(shapes[i][0], sizes[i] // shapes[i][0]) if ortho[i] and sizes[i]",
        "self.learned.matrices = [(sizes[i] // shapes[i][0], shapes[i][0]) if ortho[i] and sizes[i]",
        ("tests/metaopt/rules/test_tiny.py",),
    ),
    M(
        "the tiny rule's orthogonalization with one Newton-Schulz iteration",
        "metaopt/rules/tiny.py",
        "ns = functools.partial(orthogonalize, steps=cfg.ns_steps,",
        "ns = functools.partial(orthogonalize, steps=1,",
        ("tests/metaopt/rules/test_tiny.py",),
    ),
    M(
        "the tiny rule's vectors orthogonalized as one-row matrices",
        "metaopt/rules/tiny.py",
        "ortho = matrix_mask(shapes, cfg.ns_matrices)",
        "ortho = [True] * len(shapes)",
        ("tests/metaopt/rules/test_tiny.py",),
    ),
    M(
        "the mlp drop-in step's folded first layer without the progress features",
        "metaopt/rules/mlp.py",
        "biases = torch.addmm(bias, first[:, -num_progress - 1 : -1], progress)  # (H, T)",
        "biases = bias.expand(-1, progress.shape[1])  # (H, T)",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "the mlp drop-in step's folded first layer unnormalised",
        "metaopt/rules/mlp.py",
        "            weights = weight * scales.t()[:, None, :]",
        "            weights = weight.expand(progress.shape[1], *weight.shape)",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "an mlp block across tensors taken for a block of its first tensor",
        "metaopt/rules/mlp.py",
        "tensors = self._block_tensors[block] = torch.where(firsts == lasts, firsts, -1).tolist()",
        "tensors = self._block_tensors[block] = firsts.tolist()",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "the mlp's chunked sums of squares keep only each tensor's last chunk",
        "metaopt/rules/mlp.py",
        "total += torch.mul(piece, piece, out=scratch[:, : piece.shape[1]]).sum(1)",
        "total.copy_(torch.mul(piece, piece, out=scratch[:, : piece.shape[1]]).sum(1))",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "the mlp's factored row and column sums swapped (per-tensor reductions)",
        "metaopt/rules/mlp.py",
        "sums = torch.cat([m.sum(1) for m in matrices] + [m.sum(0) for m in matrices])",
        "sums = torch.cat([m.sum(0) for m in matrices] + [m.sum(1) for m in matrices])",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "the mlp's feature buffer kept in copies and pickles",
        "metaopt/rules/mlp.py",
        'return {**super().__getstate__(), "_features": None}',
        "return super().__getstate__()",
        ("tests/metaopt/rules/test_blocked_step.py",),
    ),
    M(
        "the functional Muon's momentum as an average",
        "envs/training/functional.py",
        'buffer = state["momentum_buffer"][name] * self.momentum + g',
        'buffer = state["momentum_buffer"][name] * self.momentum + (1 - self.momentum) * g',
        MUON,
    ),
    M(
        "the functional Muon's matrices chosen with the run dimension counted",
        "envs/training/functional.py",
        "mask = matrix_mask([tuple(p.shape[1:]) for p in params.values()], self.matrices)",
        "mask = matrix_mask([tuple(p.shape) for p in params.values()], self.matrices)",
        MUON,
    ),
    M(
        "the functional Muon's weight decay without the rate",
        "envs/training/functional.py",
        "p = p * per_run(1 - lr * self.weight_decay, p)\n            buffer",
        "p = p * per_run(1 - self.weight_decay + 0 * lr, p)\n            buffer",
        MUON,
    ),
    M(
        "the step-size adaptation climbs the hypergradient",
        "metaopt/rules/tiny.py",
        "log_adapt = (log_adapt - cfg.adapt_rate * cosine).clamp(-limit, limit)",
        "log_adapt = (log_adapt + cfg.adapt_rate * cosine).clamp(-limit, limit)",
        TINY,
    ),
    M(
        "the adaptation's cosine not divided by the gradient's size",
        "metaopt/rules/tiny.py",
        "cosine = sums[0] * torch.rsqrt(sums[1] * sums[2] + _TINY)",
        "cosine = sums[0] * torch.rsqrt(sums[2] + _TINY)",
        TINY,
    ),
    M(
        "the adaptation compares the gradient with the last gradient",
        "metaopt/rules/tiny.py",
        'new_state["last"] = update',
        'new_state["last"] = grads',
        TINY,
    ),
    M(
        "the adaptation without its lower limit",
        "metaopt/rules/tiny.py",
        "log_adapt = (log_adapt - cfg.adapt_rate * cosine).clamp(-limit, limit)",
        "log_adapt = (log_adapt - cfg.adapt_rate * cosine).clamp(max=limit)",
        TINY,
    ),
    M(
        "the adaptation's factor applied before it is updated",
        "metaopt/rules/tiny.py",
        "return update * part.spread(log_adapt.exp()[None])[0], new",
        'return update * part.spread(state["log_adapt"].index_select(0, part.tensors).exp()[None])[0], new',
        TINY,
    ),
    M(
        "the learned tensors' weight decay pushes the weights out",
        "metaopt/rules/tiny.py",
        "update = update - cfg.weight_decay * values * part.spread(decay_size[None])[0]",
        "update = update + cfg.weight_decay * values * part.spread(decay_size[None])[0]",
        TINY,
    ),
    M(
        "the learned tensors' weight decay at the base step size (no muP, scheduler or adaptation)",
        "metaopt/rules/tiny.py",
        "update = update - cfg.weight_decay * values * part.spread(decay_size[None])[0]",
        "update = update - cfg.weight_decay * values * cfg.step_size",
        TINY,
    ),
    M(
        "a checkpoint's recorded options win over the ones passed at load",
        "metaopt/checkpoint.py",
        'config = rule_config(str(payload.get("rule")), {**dataclasses.asdict(config), **options})',
        'config = rule_config(str(payload.get("rule")), {**options, **dataclasses.asdict(config)})',
        ("tests/metaopt/test_conventions.py",),
    ),
    M(
        "the optimizer drops the options passed with a checkpoint",
        "metaopt/shells.py",
        "rule = load_net(checkpoint, options).requires_grad_(False)",
        "rule = load_net(checkpoint).requires_grad_(False)",
        ("tests/metaopt/test_conventions.py",),
    ),
    M(
        "options beside a live rule are ignored",
        "metaopt/shells.py",
        "if options and checkpoint is None:",
        "if options and rule is None:",
        ("tests/metaopt/test_conventions.py",),
    ),
    M(
        "the in-place adaptation climbs the hypergradient",
        "metaopt/rules/tiny_inplace.py",
        "updated = (log_adapt[index] - cfg.adapt_rate * cosine).clamp(-limit, limit)",
        "updated = (log_adapt[index] + cfg.adapt_rate * cosine).clamp(-limit, limit)",
        TINY_INPLACE,
    ),
    M(
        "the in-place decay ignores the group's learning rate",
        "metaopt/rules/tiny_inplace.py",
        "keeps[t] -= lr * decay",
        "keeps[t] -= decay",
        TINY_INPLACE,
    ),
    M(
        "the in-place step leaves out the adapted factor",
        "metaopt/rules/tiny_inplace.py",
        "moves[t] *= factors[t]",
        "moves[t] *= 1.0",
        TINY_INPLACE,
    ),
    M(
        "the in-place last update records the decay with the wrong sign",
        "metaopt/rules/tiny_inplace.py",
        "last_t.add_(flat, alpha=-decay)",
        "last_t.add_(flat, alpha=decay)",
        TINY_INPLACE,
    ),
    M(
        "blocks of the wrong count",
        "envs/training/muon.py",
        "whole = rows // block * block",
        "whole = rows // block",
        ORTHO,
    ),
    M(
        "the rows past the last whole block dropped",
        "envs/training/muon.py",
        "x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)",
        "x = torch.cat(parts[:1], dim=-2)",
        ORTHO,
    ),
    M(
        "the in-place step orthogonalizes whole matrices whatever ns_block",
        "metaopt/rules/tiny_inplace.py",
        "ns_block=cfg.ns_block,",
        "ns_block=0,",
        ORTHO,
    ),
    M(
        "the in-place step skips the orthogonalization",
        "metaopt/rules/tiny_inplace.py",
        "matrices=matrices if cfg.orthogonalize else (),",
        "matrices=(),",
        ORTHO,
    ),
    M(
        "the in-place step sees a matrix transposed",
        "metaopt/rules/tiny_inplace.py",
        "(shape[0], size // shape[0]) if chosen and ortho_i and size else None",
        "(size // shape[0], shape[0]) if chosen and ortho_i and size else None",
        ORTHO,
    ),
    M(
        "the functional step orthogonalizes whole matrices whatever ns_block",
        "metaopt/rules/tiny.py",
        "block=cfg.ns_block, dtype=dtype,",
        "block=0, dtype=dtype,",
        ORTHO,
    ),
    M(
        "the decay follows the muP factor whatever weight_decay_mup",
        "metaopt/rules/tiny.py",
        "decay_size = size if cfg.weight_decay_mup else size / part.mup",
        "decay_size = size",
        TINY,
    ),
    M(
        "the decay without the muP factor multiplied by it once more",
        "metaopt/rules/tiny.py",
        "decay_size = size if cfg.weight_decay_mup else size / part.mup",
        "decay_size = size if cfg.weight_decay_mup else size * part.mup",
        TINY,
    ),
    M(
        "the scheduler's per-model features summed over a model's tensors, not averaged",
        "metaopt/rules/scheduler.py",
        "average = onehot / onehot.sum(dim=1, keepdim=True)",
        "average = onehot",
        STACKED,
    ),
    M(
        "every model stepped by the first model's scheduler factor",
        "metaopt/rules/tiny.py",
        "multiplier = self.schedule(features).index_select(0, models)",
        "multiplier = self.schedule(features).index_select(0, torch.zeros_like(models))",
        STACKED,
    ),
    M(
        "a per-tensor scheduler factor averaged into one",
        "metaopt/rules/tiny.py",
        "return multiplier.index_select(0, part.tensors)",
        "return multiplier.mean()",
        STACKED,
    ),
    M(
        "the stacked tensors' models numbered within their group, not across the meta-batch",
        "metaopt/inner/stacked.py",
        "belongs to, for a rule that couples one model's tensors\n"
        "    models = torch.tensor([groups[g].members[k] for g, _, k in slots], device=rule.device)",
        "belongs to, for a rule that couples one model's tensors\n"
        "    models = torch.tensor([k for g, _, k in slots], device=rule.device)",
        STACKED,
    ),
    M(
        "the scheduler rule never takes the stacked path",
        "metaopt/outer/truncated_backprop.py",
        'if self.config.optimizees == "stack" and rule.separable_by_model:\n            return self._stacked',
        'if self.config.optimizees == "stack" and rule.separable:\n            return self._stacked',
        STACKED,
    ),
    M(
        "the in-place step ignores ns_method",
        "metaopt/rules/tiny_inplace.py",
        "ns_method=cfg.ns_method,",
        "",
        NS_METHOD,
    ),
    M(
        "the functional step ignores ns_method",
        "metaopt/rules/tiny.py",
        "method=cfg.ns_method)  # fmt: skip",
        ")  # fmt: skip",
        NS_METHOD,
    ),
    M(
        "ns_method not checked",
        "metaopt/rules/tiny.py",
        '("ns_method", NS_METHODS),',
        "",
        NS_METHOD,
    ),
    M(
        "the in-place adaptation's cosine of the gradient with itself",
        "metaopt/rules/tiny_inplace.py",
        "torch.stack([torch.dot(g, u), torch.dot(g, g), torch.dot(u, u)]) / plan.sizes[t]",
        "torch.stack([torch.dot(g, g), torch.dot(g, g), torch.dot(u, u)]) / plan.sizes[t]",
        TINY_INPLACE,
    ),
    M(
        "the in-place parameter feature's mean square from the gradient",
        "metaopt/rules/tiny_inplace.py",
        "mean_p = _sum_of_products(p, p, traced) / n if plan.param_feature or plan.param_scale else None",
        "mean_p = _sum_of_products(g, g, traced) / n if plan.param_feature or plan.param_scale else None",
        TINY_INPLACE,
    ),
    M(
        "the in-place decay follows the muP factor whatever weight_decay_mup",
        "metaopt/rules/tiny_inplace.py",
        "decay = cfg.weight_decay * size * factors[t] / (1.0 if cfg.weight_decay_mup else plan.mup[t])",
        "decay = cfg.weight_decay * size * factors[t]",
        TINY_INPLACE,
    ),
    M(
        "bfloat16 iterations not cast back to the matrix's dtype",
        "envs/training/muon.py",
        "return orthogonalize(matrix.to(dtype), steps, eps, block, method=method).to(matrix.dtype)",
        "return orthogonalize(matrix.to(dtype), steps, eps, block, method=method)",
        MUON,
    ),
    M(
        "the iterations in the other dtype only when it is the matrix's own",
        "envs/training/muon.py",
        "if dtype is not None and dtype != matrix.dtype:",
        "if dtype is not None and dtype == matrix.dtype:",
        MUON,
    ),
    M(
        "the iterations in another dtype forget the blocks",
        "envs/training/muon.py",
        "return orthogonalize(matrix.to(dtype), steps, eps, block, method=method).to(matrix.dtype)",
        "return orthogonalize(matrix.to(dtype), steps, eps, method=method).to(matrix.dtype)",
        MUON,
    ),
    M(
        "the Gram form's polynomial with the constant coefficient where the linear one belongs",
        "envs/training/muon.py",
        "poly = torch.matmul(gram, gram).mul_(c).add_(gram, alpha=b)",
        "poly = torch.matmul(gram, gram).mul_(c).add_(gram, alpha=a)",
        MUON,
    ),
    M(
        "the Gram form's next Gram matrix with one factor of the polynomial",
        "envs/training/muon.py",
        "gram = poly @ (poly @ gram)",
        "gram = poly @ gram",
        MUON,
    ),
    M(
        "the Gram form keeps only the last polynomial",
        "envs/training/muon.py",
        "accumulated = poly if accumulated is None else poly @ accumulated",
        "accumulated = poly",
        MUON,
    ),
    M(
        "the Gram form in bfloat16 too",
        "envs/training/muon.py",
        "return x.dtype in (torch.float32, torch.float64) and rows >= GRAM_MIN_ROWS and cols >= GRAM_MIN_ASPECT * rows",
        "return rows >= GRAM_MIN_ROWS and cols >= GRAM_MIN_ASPECT * rows",
        MUON,
    ),
    M(
        "the Gram form on square matrices too",
        "envs/training/muon.py",
        "return x.dtype in (torch.float32, torch.float64) and rows >= GRAM_MIN_ROWS and cols >= GRAM_MIN_ASPECT * rows",
        "return x.dtype in (torch.float32, torch.float64) and rows >= GRAM_MIN_ROWS",
        MUON,
    ),
    M(
        "the functional step ignores ns_dtype",
        "metaopt/rules/tiny.py",
        "dtype = ns_dtype(cfg.ns_dtype)",
        "dtype = None",
        NS_BF16,
    ),
    M(
        "the in-place step ignores ns_dtype",
        "metaopt/rules/tiny_inplace.py",
        "ns_dtype=ns_dtype(cfg.ns_dtype),",
        "ns_dtype=None,",
        NS_BF16,
    ),
    M(
        "the in-place LSTM step commits a non-finite update",
        "metaopt/rules/lstm.py",
        "        if not finite(update):\n            self._spare = spare",
        "        if False:\n            self._spare = spare",
        LSTM_INPLACE,
    ),
    M(
        "the in-place LSTM step leaves the old state in place",
        "metaopt/rules/lstm.py",
        "for part, new in zip(state, spare):",
        "for part, new in zip(state, state):",
        LSTM_INPLACE,
    ),
    M(
        "the in-place LSTM step drops the swapped-out state instead of keeping it as the spare",
        "metaopt/rules/lstm.py",
        "self._spare = old",
        "self._spare = None",
        LSTM_INPLACE,
    ),
    M(
        "the in-place LSTM step steps state tensors that share memory",
        "metaopt/rules/lstm.py",
        "if len({part.data_ptr() for part in state}) < len(state):",
        "if len({part.data_ptr() for part in state}) < 1:",
        LSTM_INPLACE,
    ),
    M(
        "the cell gate's tanh from a sigmoid with the wrong sign",
        "metaopt/rules/lstm.py",
        "c.addcmul_(in_gate, cell_gate, value=-2.0)",
        "c.addcmul_(in_gate, cell_gate, value=2.0)",
        LSTM_INPLACE,
    ),
    M(
        "the cell gate's weights doubled without the sign",
        "metaopt/rules/lstm.py",
        "torch.cat([i_f, out_gate, -2 * cell_gate])",
        "torch.cat([i_f, out_gate, 2 * cell_gate])",
        LSTM_INPLACE,
    ),
    M(
        "the squashed cell's sigmoid of +2c",
        "metaopt/rules/lstm.py",
        "torch.mul(c, -2.0, out=squashed[:rows])",
        "torch.mul(c, 2.0, out=squashed[:rows])",
        LSTM_INPLACE,
    ),
    M(
        "the drop-in update takes the first group's options whatever the groups",
        "metaopt/rules/base.py",
        "if all(p.dtype == update.dtype for p in params) and options.count(options[0]) == len(options):",
        "if all(p.dtype == update.dtype for p in params):",
        LSTM_INPLACE,
    ),
    M(
        "the functional step orthogonalizes every matrix whatever ns_matrices",
        "metaopt/rules/tiny.py",
        "ortho = matrix_mask(shapes, cfg.ns_matrices)",
        'ortho = matrix_mask(shapes, "all")',
        NS_MATRICES,
    ),
    M(
        "the functional step's matrices ignore the ns_matrices mask",
        "metaopt/rules/tiny.py",
        "if ortho[i] and sizes[i]",
        "if len(shapes[i]) >= 2 and sizes[i]",
        NS_MATRICES,
    ),
    M(
        "the in-place step orthogonalizes every matrix whatever ns_matrices",
        "metaopt/rules/tiny_inplace.py",
        "ortho = matrix_mask(shapes, cfg.ns_matrices)",
        'ortho = matrix_mask(shapes, "all")',
        NS_MATRICES,
    ),
    M(
        "the in-place step's matrices ignore the ns_matrices mask",
        "metaopt/rules/tiny_inplace.py",
        "if chosen and ortho_i and size else None",
        "if chosen and len(shape) >= 2 and size else None",
        NS_MATRICES,
    ),
    M(
        "ns_matrices accepts a name it does not know",
        "metaopt/rules/tiny.py",
        'NS_MATRICES = ("all", "hidden")',
        'NS_MATRICES = ("all", "hidden", "first")',
        NS_MATRICES,
    ),
    M(
        "the weights' average moves the wrong way (towards its past, not the rule)",
        "metaopt/training/loop.py",
        "torch._foreach_lerp_(self.average, [w.detach() for w in self.rule.parameters()], 1 - decay)",
        "torch._foreach_lerp_(self.average, [w.detach() for w in self.rule.parameters()], decay)",
        META_AVERAGE,
    ),
    M(
        "the weights' average without its warm-up (the start weighs decay^t)",
        "metaopt/training/loop.py",
        "decay = min(self.cfg.meta_average, (1 + step) / (10 + step))",
        "decay = self.cfg.meta_average",
        META_AVERAGE,
    ),
    M(
        "validation leaves the averaged weights in the rule (training goes on from them)",
        "metaopt/training/loop.py",
        "                torch._foreach_copy_(weights, raw)",
        "                pass",
        META_AVERAGE,
    ),
    M(
        "a resumed run starts a fresh average",
        "metaopt/training/loop.py",
        "                kept.copy_(saved)",
        "                pass",
        META_AVERAGE,
    ),
    M(
        "validation and best.pt see the raw rule, not the average",
        "metaopt/training/loop.py",
        "            torch._foreach_copy_(weights, self.average)",
        "            pass",
        META_AVERAGE,
    ),
    M(
        "meta_average accepts 1 (an average that never moves)",
        "metaopt/training/config.py",
        'check_range(self, "meta_average", low=0, high=1, high_open=True)',
        'check_range(self, "meta_average", low=0, high=1)',
        META_AVERAGE,
    ),
    M(
        "the compiled LSTM block's cell adds the input gate's term with the wrong sign",
        "metaopt/rules/lstm.py",
        "c = in_gate + forget_gate * c_old - 2.0 * in_gate * cell_gate",
        "c = in_gate + forget_gate * c_old + 2.0 * in_gate * cell_gate",
        LSTM_COMPILED,
    ),
    M(
        "the compiled LSTM block squashes the cell with sigmoid(2c)",
        "metaopt/rules/lstm.py",
        "h = out_gate - 2.0 * out_gate * torch.sigmoid(-2.0 * c)",
        "h = out_gate - 2.0 * out_gate * torch.sigmoid(2.0 * c)",
        LSTM_COMPILED,
    ),
    M(
        "the compiled LSTM block forgets the output scale",
        "metaopt/rules/lstm.py",
        "update.copy_(torch.mv(torch.cat([source, ones], dim=1), readout) * scale)",
        "update.copy_(torch.mv(torch.cat([source, ones], dim=1), readout))",
        LSTM_COMPILED,
    ),
    M(
        "compile=True never reaches the LSTM's compiled blocks",
        "metaopt/rules/lstm.py",
        'if compile and features.device.type == "cpu":',
        'if compile and features.device.type == "cuda":',
        LSTM_COMPILED,
    ),
    M(
        "a compiler failure is not remembered (tried again at every step)",
        "metaopt/rules/lstm.py",
        "            _FAILED_COMPILE.append(True)",
        "            pass",
        LSTM_COMPILED,
    ),
    M(
        "the log objective's floor added after the logarithm (a zero loss scores -inf)",
        "metaopt/objectives/loss.py",
        "losses = torch.log(losses + LOG_FLOOR)",
        "losses = torch.log(losses) + LOG_FLOOR",
        LOG_OBJECTIVE,
    ),
    M(
        "the log objective refuses a loss of exactly zero",
        "metaopt/objectives/loss.py",
        "negative = losses.detach() < 0",
        "negative = losses.detach() <= 0",
        LOG_OBJECTIVE,
    ),
    M(
        "eval_loss ignores its log option",
        "metaopt/objectives/loss.py",
        "    return lambda trajectory: heldout_loss(trajectory, config.loss_weights, log=log)",
        "    return lambda trajectory: heldout_loss(trajectory, config.loss_weights)",
        LOG_OBJECTIVE,
    ),
    M(
        "the log option is never read",
        "metaopt/objectives/loss.py",
        'return bool(config.options.get("log", False))',
        "return False",
        LOG_OBJECTIVE,
    ),
    M(
        "the log objective drops the step weights",
        "metaopt/objectives/loss.py",
        "    if weights is None:\n        return losses.sum()",
        "    if True:\n        return losses.sum()",
        LOG_OBJECTIVE,
    ),
    M(
        'a flag option takes any value ("maybe" reads as true)',
        "envs/tooling/registry.py",
        'if f.type in ("bool", bool) and f.name in options and not isinstance(options[f.name], bool):',
        "if f.type is bool and f.name in options and not isinstance(options[f.name], bool):",
        BOOL_OPTIONS,
    ),
    # -- the mlp rule's per-tensor values tensor by tensor (metaopt/rules/mlp.py _times, _factored_by_tensor) ----------
    M(
        "mlp by tensor: the second moment corrected by the momentum's correction",
        "metaopt/rules/mlp.py",
        "v_hat = _times(second, 1, per_tensor, spread, layout)",
        "v_hat = _times(second, 0, per_tensor, spread, layout)",
        MLP_BY_TENSOR,
    ),
    M(
        "mlp by tensor: every tensor by the first tensor's factor",
        "metaopt/rules/mlp.py",
        "        torch.mul(piece, factor, out=target)",
        "        torch.mul(piece, per_tensor[row, 0], out=target)",
        MLP_BY_TENSOR,
    ),
    M(
        "mlp by tensor: every matrix reads the first matrix's column accumulators",
        "metaopt/rules/mlp.py",
        "row_at, col_at = row_at + rows, col_at + cols",
        "row_at = row_at + rows",
        MLP_BY_TENSOR,
    ),
    M(
        "mlp by tensor: the factored estimate without its scale",
        "metaopt/rules/mlp.py",
        "torch.mul(row[:, None], col[None, :], out=target.view(rows, cols)).mul_(scale)",
        "torch.mul(row[:, None], col[None, :], out=target.view(rows, cols))",
        MLP_BY_TENSOR,
    ),
    M(
        "mlp by tensor: a vector's estimate scaled as a matrix's",
        "metaopt/rules/mlp.py",
        "            target.copy_(floored)",
        "            target.copy_(floored * scale)",
        MLP_BY_TENSOR,
    ),
    # -- the start offsets taken together (metaopt/inner/stacked.py advance_many) --------------------------------------
    M(
        "offsets together: every optimizee advanced by the longest count",
        "metaopt/inner/stacked.py",
        "count = min(remaining[i] for i in active)",
        "count = max(remaining[i] for i in active)",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: a stopped optimizee draws a next batch",
        "metaopt/inner/stacked.py",
        "if remaining[i] == 0 and k not in stopped:",
        "if remaining[i] == 0:",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: the step at which an optimizee stopped is counted",
        "metaopt/inner/stacked.py",
        "for i in set(range(len(inners))) - stopped:",
        "for i in range(len(inners)):",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: a non-finite update taken (no guard)",
        "metaopt/inner/stacked.py",
        "        if stopped or not finite(update):",
        "        if stopped:",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: a guarded step not counted as skipped",
        "metaopt/inner/stacked.py",
        "for i in frozen - stopped:",
        "for i in frozen & stopped:",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: member by member, the update not kept",
        "metaopt/inner/stacked.py",
        "updates[j], pieces[j] = delta, piece",
        "pieces[j] = piece",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: a frozen optimizee's parameters moved",
        "metaopt/inner/stacked.py",
        "                new[kept] = old[kept]",
        "                pass",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: a frozen optimizee's state piece replaced",
        "metaopt/inner/stacked.py",
        "        if not finite(update):\n            frozen.add(member)\n            continue",
        "        if not finite(update):\n            frozen.add(member)",
        ADVANCE_MANY,
    ),
    M(
        "offsets together: the models numbered within their group (the scheduler mixes optimizees)",
        "metaopt/inner/stacked.py",
        "for k in range(len(group.members))]\n    models = torch.tensor([groups[g].members[k] for g, _, k in slots]",
        "for k in range(len(group.members))]\n    models = torch.tensor([k for g, _, k in slots]",
        ADVANCE_MANY,
    ),
    M(
        "stack estimator: the offsets one by one",
        "metaopt/outer/truncated_backprop.py",
        "            advance_many(inners, rule, steps)",
        "            super().advance(rule, inners, steps)",
        ADVANCE_MANY,
    ),
    M(
        "metaopt train: the offsets not through the estimator",
        "metaopt/training/loop.py",
        "self.fresh.inners(progress.episode, self.rule, self.share, self.estimator.advance)",
        "self.fresh.inners(progress.episode, self.rule, self.share)",
        ADVANCE_MANY,
    ),
    # -- ES/PES populations of one stack key together (metaopt/outer/population.py run_stacked_many) -------------------
    M(
        "ES together: every particle sees the first optimizee's batch",
        "metaopt/outer/population.py",
        "torch.cat([part.expand(count, *part.shape) for part, count in zip(parts, counts)])",
        "torch.cat([parts[0].expand(count, *part.shape) for part, count in zip(parts, counts)])",
        ES_TOGETHER,
    ),
    M(
        "ES together: every optimizee's particles go on from the first one's parameters",
        "metaopt/outer/population.py",
        "{name: value.split(list(counts))[k] for name, value in joined.params.items()}",
        "{name: value.split(list(counts))[0] for name, value in joined.params.items()}",
        ES_TOGETHER,
    ),
    M(
        "ES together: every optimizee's particles go on from the first one's rule state",
        "metaopt/outer/population.py",
        "    return t.split(counts)[k]",
        "    return t.split(counts)[0]",
        ES_TOGETHER,
    ),
    M(
        "ES together: the trajectories keep the first optimizee's step",
        "metaopt/outer/population.py",
        "dataclasses.replace(next(trajectories), start_step=inner.step, context=inner.context)",
        "dataclasses.replace(next(trajectories), context=inner.context)",
        ES_TOGETHER,
    ),
    M(
        "ES together: the losses of a group handed out in the wrong order",
        "metaopt/outer/es.py",
        "            for i, trajectories, joined in zip(members, runs, stacked):",
        "            for i, trajectories, joined in zip(reversed(members), runs, stacked):",
        ES_TOGETHER,
    ),
    M(
        "ES vmap: the unperturbed optimizee's rule state not carried",
        "metaopt/outer/population.py",
        "        inner.optimizer.state[by_name[name]].update(detach_state(piece))",
        "        pass",
        ES_TOGETHER,
    ),
    M(
        "ES vmap: the unperturbed optimizee's parameters not carried",
        "metaopt/outer/population.py",
        "            p.copy_(particle.params[name][0])",
        "            pass",
        ES_TOGETHER,
    ),
    M(
        "ES vmap: the unperturbed run takes the first + particle's weights",
        "metaopt/outer/es.py",
        "theta.double() - d.eps, theta.double()[None]]",
        "theta.double() - d.eps, (theta.double() + d.eps)[:1]]",
        ES_TOGETHER,
    ),
    M(
        "ES vmap: the unperturbed optimizee's step count not advanced",
        "metaopt/outer/es.py",
        "                inner.step += setup.truncation\n",
        "",
        ES_TOGETHER,
    ),
    M(
        "PES vmap: the particles restart from where the truncation began",
        "metaopt/outer/es.py",
        "particles.states.params, particles.states.state = population.params, population.state",
        "pass",
        ES_TOGETHER,
    ),
    M(
        "ES: population=stack runs each optimizee's population alone",
        "metaopt/outer/es.py",
        'groups.setdefault(stack_key(d.inner) if self.config.population == "stack" else index, [])',
        "groups.setdefault(index, [])",
        ES_TOGETHER,
    ),
    M(
        "ES: population=vmap runs the optimizees of one task together",
        "metaopt/outer/es.py",
        'groups.setdefault(stack_key(d.inner) if self.config.population == "stack" else index, [])',
        'groups.setdefault(stack_key(d.inner) if self.config.population != "loop" else index, [])',
        ES_TOGETHER,
    ),
    M(
        "preflight: a stacked population counted for one optimizee",
        "metaopt/training/preflight.py",
        'together = cfg.meta_batch if population == "stack" else 1',
        "together = 1",
        ("tests/metaopt/test_preflight.py",),
    ),
    M(
        "ES: the vmap population takes the offsets one by one",
        "metaopt/outer/es.py",
        "            advance_many(inners, rule, steps)",
        "            super().advance(rule, inners, steps)",
        ES_TOGETHER,
    ),
    M(
        "schedule: a rank builds every slot",
        "metaopt/training/schedule.py",
        "for slot in range(cfg.meta_batch) if slots is None else slots:",
        "for slot in range(cfg.meta_batch):",
        SLOTS,
    ),
    M(
        "schedule: the given advance ignored",
        "metaopt/training/schedule.py",
        "        if advance is None:\n",
        "        if True:\n",
        SLOTS,
    ),
    M(
        "compiled unroll: the first-order gradient enters the rule on the graph",
        "metaopt/inner/compiled.py",
        "flat = flat.detach()",
        "flat = flat",
        COMPILED_UNROLL,
    ),
    M(
        "compiled unroll: the rule state not carried into the optimizee",
        "metaopt/inner/compiled.py",
        "inner.optimizer.state[p].update(detach_state(piece))",
        "inner.optimizer.state[p].update({})",
        COMPILED_UNROLL,
    ),
    M(
        "compiled unroll: a group's lr and weight decay ignored",
        "metaopt/inner/compiled.py",
        "moved(p, delta, lr, wd)",
        "moved(p, delta, 1.0, 0.0)",
        COMPILED_UNROLL,
    ),
    M(
        "compiled unroll: iterates flattened in the optimizer's order, not the model's",
        "metaopt/inner/compiled.py",
        "return torch.cat([params[i].reshape(-1) for i in order])",
        "return torch.cat([p.reshape(-1) for p in params])",
        COMPILED_UNROLL,
    ),
    M(
        "compiled unroll: a parameter without a gradient compiled (it would get zeros)",
        "metaopt/inner/compiled.py",
        "return all(g is not None for g in grads)",
        "return True",
        COMPILED_UNROLL,
    ),
    M(
        "compiled unroll: first- and second-order steps share one compiled step",
        "metaopt/inner/compiled.py",
        "key = (id(inner.task), type(model), repr(model), shapes, tuple(options), first_order)",
        "key = (id(inner.task), type(model), repr(model), shapes, tuple(options))",
        COMPILED_UNROLL,
    ),
    M(
        "mlp rule: the Adam feature's square root unclamped on the meta-graph (NaN meta-gradients at v = 0)",
        "metaopt/rules/mlp.py",
        "root = v_hat.clamp_min(_TINY).sqrt() if v_hat.requires_grad else v_hat.sqrt()",
        "root = v_hat.sqrt()",
        ("tests/metaopt/rules/test_mlp.py",),
    ),
    M(
        "compiled unroll: a problem family's optimizees compiled one by one",
        "metaopt/inner/compiled.py",
        "if type(inner.task).instance is not Task.instance:",
        "if False:",
        COMPILED_UNROLL,
    ),
    M(
        "augment: layers reparameterized by other factors print alike (and stack together)",
        "metaopt/training/augment.py",
        'reparameterized by different factors print (and stack) apart."""\n        return f"scale={self.scale!r}"',
        'reparameterized by different factors print (and stack) apart."""\n        return ""',
        (*COMPILED_UNROLL, "tests/metaopt/inner/test_stacked.py"),
    ),
    M(
        "truncated_backprop: compile ignored",
        "metaopt/outer/truncated_backprop.py",
        "run = self._compiled.unroll",
        "run = unroll",
        COMPILED_UNROLL,
    ),
    M(
        "truncated_backprop: compile with the stacked meta-batch accepted",
        "metaopt/outer/truncated_backprop.py",
        'if self.compile and self.optimizees != "loop":',
        "if False:",
        COMPILED_UNROLL,
    ),
]

"""The mutants of the modules added or rewritten since the last audit of the tests (``--recent``)."""
MUTANTS += RECENT


def _pytest(tree: Path, tests: tuple[str, ...]) -> bool:
    """Whether ``tests`` pass in ``tree`` (its packages first on the path, one thread)."""
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=tree,
                          env=env, capture_output=True, text=True)  # fmt: skip
    return proc.returncode == 0


def _try(tree: Path, mutant: Mutant) -> dict[str, object]:
    """Apply ``mutant`` in ``tree``, run its tests, restore the file; the outcome."""
    target = tree / mutant.path
    original = target.read_text()
    if original.count(mutant.old) != 1:
        return {"mutant": mutant.name, "path": mutant.path, "outcome": "stale"}
    target.write_text(original.replace(mutant.old, mutant.new))
    start = time.perf_counter()
    try:
        passed = _pytest(tree, mutant.tests)
    finally:
        target.write_text(original)
    return {"mutant": mutant.name, "path": mutant.path, "outcome": "survived" if passed else "killed",
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def run_pass(
    commit: str, only: str | None, source: str = "commit", mutants: list[Mutant] | None = None, jobs: int = 1,
    baseline: bool = False,
) -> list[dict[str, object]]:  # fmt: skip
    """Apply each chosen mutant in a copy of the code, run its tests, and return the outcomes.

    ``source="commit"``: a ``git worktree`` of ``commit``; ``"working"``: a copy of the working tree as it is now
    (uncommitted edits included; ``.git``, ``.venv``, ``runs`` and caches left out). ``jobs`` copies of the code
    take mutants in parallel. ``baseline``: first run each distinct set of tests on the unmutated code; a mutant
    whose tests fail there is reported as ``baseline-fails`` and not counted (a kill it would score is no kill).
    """
    chosen = [m for m in (MUTANTS if mutants is None else mutants) if only is None or only in m.name or only in m.path]
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        first = Path(tmp) / "tree0"
        if source == "working":
            ignore = shutil.ignore_patterns(".git", ".venv", ".whl", "runs", "__pycache__", ".pytest_cache",
                                            ".ruff_cache", ".mypy_cache")  # fmt: skip
            shutil.copytree(ROOT, first, ignore=ignore)
        else:
            subprocess.run(["git", "worktree", "add", "--detach", str(first), commit], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
        trees = [first] + [Path(tmp) / f"tree{k}" for k in range(1, max(1, jobs))]
        for tree in trees[1:]:
            shutil.copytree(first, tree, ignore=shutil.ignore_patterns(".git"))
        try:
            broken: set[tuple[str, ...]] = set()
            if baseline:
                sets = sorted({m.tests for m in chosen})
                with ThreadPoolExecutor(len(trees)) as pool:
                    passed = list(pool.map(lambda k: _pytest(trees[k % len(trees)], sets[k]), range(len(sets))))
                broken = {tests for tests, ok in zip(sets, passed) if not ok}
            runnable = [m for m in chosen if m.tests not in broken]
            results += [{"mutant": m.name, "path": m.path, "outcome": "baseline-fails"} for m in chosen
                        if m.tests in broken]  # fmt: skip
            free: Queue[Path] = Queue()
            for tree in trees:
                free.put(tree)

            def one(mutant: Mutant) -> dict[str, object]:
                tree = free.get()
                try:
                    result = _try(tree, mutant)
                finally:
                    free.put(tree)
                print(f"{result['outcome']:8} {mutant.path}: {mutant.name}", flush=True)
                return result

            with ThreadPoolExecutor(len(trees)) as pool:
                results += list(pool.map(one, runnable))
        finally:
            if source != "working":
                subprocess.run(["git", "worktree", "remove", "--force", str(first)], cwd=ROOT, check=False)
    return results


def main() -> None:
    """Run the pass and print the score."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--source", choices=["commit", "working"], default="commit",
                        help="mutate a worktree of --commit, or a copy of the working tree as it is")  # fmt: skip
    parser.add_argument("--only", default=None, help="run the mutants whose name or path contains this")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tried in parallel, each in its own copy")
    parser.add_argument("--share", default=None, metavar="K/N",
                        help="every N-th mutant from the K-th (0-based): a pass split between machines")  # fmt: skip
    parser.add_argument("--baseline", action="store_true",
                        help="first check that each mutant's tests pass on the unmutated code")  # fmt: skip
    parser.add_argument("--recent", action="store_true",
                        help="only the mutants of modules added or rewritten since the last audit")  # fmt: skip
    args = parser.parse_args()
    mutants = RECENT if args.recent else MUTANTS
    if args.share:
        k, n = (int(x) for x in args.share.split("/"))
        mutants = mutants[k::n]
    results = run_pass(args.commit, args.only, args.source, mutants, args.jobs, args.baseline)
    counted = [r for r in results if r["outcome"] in ("killed", "survived")]
    for r in results:
        if r["outcome"] == "baseline-fails":
            print(f"not counted (its tests fail on the unmutated code): {r['path']}: {r['mutant']}")
    killed = sum(r["outcome"] == "killed" for r in counted)
    stale = len(results) - len(counted)
    print("\nby module (killed / mutants):")
    for path in sorted({str(r["path"]) for r in counted}):
        mine = [r for r in counted if r["path"] == path]
        print(f"  {sum(r['outcome'] == 'killed' for r in mine)}/{len(mine)}  {path}")
    print(
        f"mutation score: {killed}/{len(counted)} killed"
        + (f" ({stale} stale or baseline-failing mutants skipped)" if stale else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
