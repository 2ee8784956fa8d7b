"""How ranks share out units of work: each unit exactly once, whatever the number of ranks."""

from __future__ import annotations

import pytest

from envs.tooling.distributed import block, shard


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_every_unit_goes_to_exactly_one_rank_round_robin(world: int) -> None:
    units = list(range(11))
    shares = [shard(units, rank, world) for rank in range(world)]
    assert sorted(u for share in shares for u in share) == units
    assert all(share == units[rank::world] for rank, share in enumerate(shares))  # round-robin: balanced work
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        shard([1, 2, 3], 2, 2)
    with pytest.raises(ValueError):
        shard([1, 2, 3], -1, 2)


@pytest.mark.parametrize(("count", "world"), [(10, 3), (2, 4), (7, 1)])
def test_blocks_cover_the_items_once_in_order(count: int, world: int) -> None:
    ranges = [block(count, rank, world) for rank in range(world)]
    assert [i for r in ranges for i in r] == list(range(count))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
