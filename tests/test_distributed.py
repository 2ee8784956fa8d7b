"""Several ranks under ``torchrun`` (gloo, CPU) write what one process writes; a killed run resumes with any ranks.

Each command runs once alone and once as two ranks launched by ``python -m torch.distributed.run`` (the form the
README gives): the two run directories must hold the same records, reports, CSVs, tensors, PNGs and TensorBoard
scalars (``envs.tooling.rundiff``), and meta-training the same checkpoints to float rounding (the ranks' meta-gradients
are summed in another order). A 2-rank sweep that loses a rank to ``kill -9`` and is rerun by one process ends with
the records of an uninterrupted run, none lost, none twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from envs.tooling import distributed
from envs.tooling.rundiff import diff_runs
from metaopt import optimizee_loss, start_episode
from metaopt.outer import ESConfig, EstimatorSetup, PersistentES, TruncatedES
from tests.metaopt.test_es import TwoScales, task

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(key, None)
SWEEP = ["geodesics", "sweep", "configs/geodesics/sweep/poly_cubic.yaml", "device=cpu", "thresholds=[0.2,0.15]",
         "pairs=2", "concurrent=1", "dss.max_steps=300"]  # fmt: skip
COMPARE = ["metaopt", "compare", "configs/compare/quadratic.yaml", "tuning_seeds=2", "eval_seeds=3",
           "optimizers=[sgd,adam]", "tasks.quadratic.steps=20"]  # fmt: skip
TRAIN = ["metaopt", "train", "configs/metaopt/quadratic.yaml", "device=cpu", "episodes=3", "steps=20", "truncation=10",
         "meta_batch=3", "val_every=2", "val_seeds=2", "tune_seeds=2"]  # fmt: skip


def alone(argv: list[str], out: Path) -> None:
    """The command as one process, in this one (one intra-op thread, as the ranks have)."""
    from geodesics.cli import main as geodesics_main
    from metaopt.cli import main as metaopt_main

    main = {"geodesics": geodesics_main, "metaopt": metaopt_main}[argv[0]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*argv[1:], f"out={out}"]) == 0
    finally:
        torch.set_num_threads(threads)


def ranks(argv: list[str], out: Path, n: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "--monitor-interval=0.1", "-m", argv[0], *argv[1:], f"out={out}"]  # fmt: skip


def finish(command: list[str]) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def record_lines(out: Path) -> list[str]:
    return [line for path in sorted(out.glob("records*.jsonl")) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "alone"
    alone(SWEEP, out)
    return out


def test_ranks_agree_on_what_is_done_before_any_appends_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast rank appending as soon as the barrier opens must not change what a slower rank reads as done."""
    from envs.tooling.runs import Run

    run = Run.create("agree", {"x": 1}, tmp_path / "run")
    run.append_record({"kind": "unit", "id": 0})

    def barrier_then_a_fast_rank_appends() -> None:
        run.append_record({"kind": "unit", "id": 1})

    monkeypatch.setattr(distributed, "barrier", barrier_then_a_fast_rank_appends)
    assert [r["id"] for r in run.agreed_records("unit")] == [0]  # read before the barrier: what every rank saw
    assert [r["id"] for r in run.records("unit")] == [0, 1]


def test_shard_splits_the_units_still_to_do_round_robin() -> None:
    units = list(range(7))
    shares = [distributed.shard(units, r, 3) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(u for share in shares for u in share) == units
    blocks = [distributed.block(5, r, 2) for r in range(2)]
    assert blocks == [range(0, 3), range(3, 5)]
    assert list(distributed.block(1, 1, 2)) == []  # a rank may have nothing to unroll
    assert distributed.world_size() == 1 and distributed.is_main()  # no torchrun here: one process, no group


@pytest.mark.parametrize("argv", [SWEEP, COMPARE], ids=["sweep", "compare"])
def test_two_ranks_write_the_run_one_process_writes(argv: list[str], sweep_alone: Path, tmp_path: Path) -> None:
    first = sweep_alone if argv is SWEEP else tmp_path / "alone"
    if argv is not SWEEP:
        alone(argv, first)
    finish(ranks(argv, tmp_path / "ranks"))
    assert not list((tmp_path / "ranks").glob("records.rank*.jsonl")), "the ranks' records are folded at the end"
    assert diff_runs(first, tmp_path / "ranks") == []


def test_data_parallel_meta_training_matches_one_process(tmp_path: Path) -> None:
    alone(TRAIN, tmp_path / "alone")
    finish(ranks(TRAIN, tmp_path / "ranks"))  # meta-batch 3: shares of 2 and 1
    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "alone" / "checkpoints" / name, weights_only=False)
        b = torch.load(tmp_path / "ranks" / "checkpoints" / name, weights_only=False)
        assert a["info"]["meta_step"] == b["info"]["meta_step"] == 6
        for key, weight in a["state_dict"].items():
            torch.testing.assert_close(b["state_dict"][key], weight, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    assert len(record_lines(tmp_path / "ranks")) == len(record_lines(tmp_path / "alone")) == 3


def _rank_pid(agent: int, rank: int) -> int | None:
    """The pid of worker ``rank`` among the children of the torchrun agent ``agent`` (from /proc)."""
    children = Path(f"/proc/{agent}/task/{agent}/children")
    for pid in children.read_text().split() if children.is_file() else []:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank's process through /proc")
def test_a_rank_killed_then_one_process_completes_the_sweep(sweep_alone: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen(ranks(SWEEP, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, victim = time.monotonic() + 120, None
    rank_file = out / "records.rank1.jsonl"
    while proc.poll() is None and time.monotonic() < deadline:
        if rank_file.is_file() and rank_file.read_bytes().count(b"\n") >= 1:  # rank 1 finished its first group
            victim = _rank_pid(proc.pid, 1)
            if victim is not None:
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait(timeout=120)  # torchrun stops rank 0 when rank 1 dies
    assert victim is not None and proc.returncode != 0, "the sweep ended before a rank could be killed"
    left = record_lines(out)
    total = len(record_lines(sweep_alone))
    assert 0 < len(left) < total
    alone(SWEEP, out)  # one process finishes what the two ranks left
    lines = record_lines(out)
    assert len(lines) == len(set(lines)) == total and set(left) <= set(lines)  # nothing lost, nothing twice
    assert diff_runs(sweep_alone, out) == []


@pytest.mark.parametrize("estimator", [TruncatedES, PersistentES])
def test_es_shares_sum_to_the_whole_population(estimator: type) -> None:
    """ES over slots [0, 1, 2] equals the share-weighted mean of ES over [0, 1] and over [2] (noise keyed by slot)."""
    rule = TwoScales().double()
    setup = EstimatorSetup(4, optimizee_loss, seed=5)

    def estimate(slots: range) -> torch.Tensor:
        es = estimator(ESConfig(pairs=2, sigma=0.01), setup)
        es.slot_offset = slots.start
        inners = [start_episode(task(), 10 + slot, rule) for slot in slots]
        first = es.estimate(rule, inners, meta_step=0)  # PES: a second truncation uses the accumulated noise
        grads = es.estimate(rule, inners, meta_step=1).grads
        return torch.stack([torch.stack(first.grads), torch.stack(grads)])

    whole = estimate(range(3))
    shared = (2 * estimate(range(2)) + estimate(range(2, 3))) / 3
    torch.testing.assert_close(shared, whole, rtol=1e-10, atol=1e-12)
