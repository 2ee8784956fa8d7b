"""Statistics of the comparison: learning-rate choice, t-intervals, steps to reach, speed-ups, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaopt.compare.stats import (
    choose_lr,
    final_loss,
    paired_difference,
    reach_target,
    steps_to_reach,
    t_interval,
    wall_clock_speedup,
)


def test_a_learning_rate_that_diverged_on_any_seed_is_never_chosen() -> None:
    lrs = [0.1, 0.01, 1.0]  # unsorted on purpose
    finals = np.array([[0.5, 0.5, 0.5], [0.9, 0.9, 0.9], [0.0, 0.0, math.inf]])
    diverged = np.array([[False] * 3, [False] * 3, [False, False, True]])
    tuning = choose_lr(lrs, finals, diverged)
    assert tuning.lrs == (0.01, 0.1, 1.0)
    assert tuning.chosen == 0.1  # 1.0 has the lowest loss on two seeds but diverged on the third
    assert tuning.diverged == (0, 0, 1) and tuning.diverged_runs == 1
    assert math.isnan(tuning.scores[2]) and tuning.scores[1] == 0.5
    assert not tuning.at_edge


def test_ties_go_to_the_smaller_rate_and_nothing_stable_gives_none() -> None:
    tie = choose_lr([0.1, 0.01], np.ones((2, 2)), np.zeros((2, 2), dtype=bool))
    assert tie.chosen == 0.01 and tie.at_edge
    none = choose_lr([0.1, 1.0], np.full((2, 2), math.nan), np.array([[True, False], [False, True]]))
    assert none.chosen is None and none.diverged_runs == 2


def test_t_interval_matches_the_textbook_value() -> None:
    mean, half = t_interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{0.975, 2} * sd / sqrt(n)
    curves_mean, curves_half = t_interval(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert list(curves_mean) == [2.0, 5.0] and curves_half[1] == 0.0
    assert math.isnan(float(t_interval(np.array([4.0]))[1]))


def test_final_loss_is_the_mean_of_the_last_window() -> None:
    assert final_loss([9.0, 3.0, 1.0, 2.0], 2) == 1.5
    assert final_loss([9.0, 3.0], 5) == 6.0


def test_steps_to_reach_and_speedups() -> None:
    assert steps_to_reach(np.array([4.0, 2.0, 1.0, 0.5]), 1.0) == 2
    assert steps_to_reach(np.array([4.0, 2.0]), 1.0) is None
    reference = np.array([4.0, 3.0, 2.0, 1.5, 1.0, 0.9])
    fast = np.array([[4.0, 2.0, 1.0, 0.5, 0.4, 0.3], [4.0, 3.0, 1.0, 0.7, 0.5, 0.2]])
    result = reach_target(fast, 1.0, 6, reference)
    assert (result.steps, result.reached, result.seeds, result.speedup) == (2, 2, 2, 2.0)  # mean curve hits 1.0 at 2
    beyond = reach_target(fast, 0.5, 6, reference)  # the reference never gets to 0.5 within 6 steps
    assert beyond.steps == 4 and beyond.lower_bound and beyond.speedup == 1.5 and beyond.speedup_text == ">1.5×"
    never = reach_target(fast, 0.1, 6, reference)
    assert never.steps is None and never.speedup is None and never.reached == 0
    assert reach_target(fast, 1.0, 6, None).speedup is None


def test_paired_difference_skips_seeds_where_either_diverged() -> None:
    a = np.array([1.0, 2.0, math.nan, 4.0])
    b = np.array([1.5, 2.5, 3.0, math.nan])
    paired = paired_difference(a, b)
    assert paired.difference.n == 2 and paired.difference.mean == -0.5 and paired.wins == 2
    assert paired.difference.half == 0.0


def test_the_wall_clock_speed_up_pays_for_the_dearer_step() -> None:
    # twice as few steps at three times the time per step: 1.5x slower in wall time
    assert wall_clock_speedup(2.0, 0.003, 0.001) == pytest.approx(2.0 / 3.0)
    assert wall_clock_speedup(0.5, 0.001, 0.004) == pytest.approx(2.0)  # worse in steps, cheap enough to win
    assert wall_clock_speedup(1.0, 0.002, 0.002) == 1.0
    for missing in ((None, 0.1, 0.1), (2.0, None, 0.1), (2.0, 0.1, None), (2.0, 0.0, 0.1), (2.0, math.nan, 0.1)):
        assert wall_clock_speedup(*missing) is None
