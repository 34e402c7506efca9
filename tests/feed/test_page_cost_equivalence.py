"""The page's cheaper steps give what the steps they replaced gave (perf4, issues 17/18): each reference
below is the replaced code, verbatim, run beside the feed's on random inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from feed.stages import arrange
from ranking.retrieval import LiveSet, sorted_unique, unique_inverse
from ranking.scorer import LiveItems, unit_rows


def arrange_before(
    order: Sequence[int],
    merchants: np.ndarray,
    categories: np.ndarray,
    max_run: int,
    reach: int | None = None,
) -> list[int]:
    """feed.stages.arrange as of 355a4a4 (a dict per room)."""
    pending = [int(i) for i in order]
    if not pending:
        return []
    index = np.asarray(pending, dtype=np.int64)
    merchant_of = dict(zip(pending, merchants[index].tolist(), strict=True))
    category_of = dict(zip(pending, categories[index].tolist(), strict=True))
    placed: list[int] = []
    last_m = last_c = None
    run_m = run_c = 0
    limit = len(pending) if reach is None else min(reach, len(pending))
    while len(placed) < limit:
        pick = 0
        if run_m >= max_run or run_c >= max_run:
            for j, candidate in enumerate(pending):
                if (run_m < max_run or merchant_of[candidate] != last_m) and (
                    run_c < max_run or category_of[candidate] != last_c
                ):
                    pick = j
                    break
        chosen = pending.pop(pick)
        m, cat = merchant_of[chosen], category_of[chosen]
        run_m = run_m + 1 if m == last_m else 1
        run_c = run_c + 1 if cat == last_c else 1
        last_m, last_c = m, cat
        placed.append(chosen)
    return placed + pending


@pytest.mark.parametrize("seed", range(40))
def test_arrange_orders_as_before(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    merchants = rng.integers(0, max(1, n // int(rng.integers(1, 6))), n)
    categories = rng.integers(0, int(rng.integers(1, 9)), n)
    k = int(rng.integers(0, n + 1))
    order = rng.permutation(n)[:k].tolist()
    if k and rng.random() < 0.3:  # a room listed twice (an exploration pick also in the rest)
        order.append(order[0])
    for max_run in (1, 2, 3):
        for reach in (None, 0, 5, 20, k + 3):
            assert arrange(order, merchants, categories, max_run, reach) == arrange_before(
                order, merchants, categories, max_run, reach
            )


def rooms_of_before(live: LiveSet, merchants: np.ndarray) -> np.ndarray:
    """ranking.retrieval.LiveSet.rooms_of as of 355a4a4 (two binary searches over every room)."""
    if merchants.size == 0 or live.positions.size == 0:
        return np.zeros(0, dtype=np.int64)
    ranked = live.ranked
    lo = np.searchsorted(ranked, merchants, side="left")
    hi = np.searchsorted(ranked, merchants, side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    out: np.ndarray = live.order[starts + np.arange(total)]
    return out


@pytest.mark.parametrize("seed", range(30))
def test_rooms_of_merchants_and_of_rows_give_the_rooms_as_before(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rooms = int(rng.integers(0, 3_000))
    merchants = int(rng.integers(1, 800))
    positions = rng.integers(-1, merchants, rooms)  # -1: a merchant the model does not know
    live = LiveSet.of(positions, rng.integers(0, 8, rooms))
    asked = rng.integers(-2, merchants + 5, int(rng.integers(0, 200)))  # some not live, some twice
    for query in (asked, np.sort(asked), np.zeros(0, dtype=np.int64)):
        assert live.rooms_of(query).tolist() == rooms_of_before(live, query).tolist()
    if live.merchants.size:
        rows = rng.integers(0, live.merchants.size, int(rng.integers(0, 100)))
        assert live.rooms_of_rows(rows).tolist() == rooms_of_before(live, live.merchants[rows]).tolist()


@pytest.mark.parametrize("seed", range(30))
def test_sorted_unique_and_unique_inverse_are_np_unique(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(-5, int(rng.integers(1, 2_000)), int(rng.integers(0, 1_500)))
    assert np.array_equal(sorted_unique(values), np.unique(values))
    got, inverse = unique_inverse(values)
    want, want_inverse = np.unique(values, return_inverse=True)
    assert np.array_equal(got, want) and np.array_equal(inverse, want_inverse)
    assert sorted_unique(values).dtype == np.unique(values).dtype


def test_a_subsets_unit_rows_are_the_whole_blocks_gathered_when_read() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.normal(size=(300, 8)).astype(np.float32)
    whole = LiveItems((), matrix, rng.random(300).astype(np.float32), np.zeros(300, np.float32))
    rows = np.sort(rng.choice(300, 40, replace=False))
    before_unit = whole.take(rows)  # the whole block's unit rows never made: the subset makes its own
    assert np.array_equal(before_unit.unit, unit_rows(matrix[rows]))
    unit = whole.unit
    sub = whole.take(rows)
    assert sub._unit is None  # nothing gathered until read
    assert np.array_equal(sub.unit, unit[rows]) and sub.unit is sub.unit
