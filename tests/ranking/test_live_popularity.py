"""Live popularity: one quantity for the baselines, the ranker's lists, the evaluation and the served table."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.dataset import ENTER, LEAVE, InteractionLog
from ranking.offline import merchant_features
from ranking.replay import MerchantPopularity, Schedule, popularity_of, replay
from simulator import Marketplace

DAY_MS = 86_400_000


def test_popularity_folded_enter_by_enter_is_the_snapshots_popularity() -> None:
    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(0, 3 * DAY_MS, 5_000))
    merchant = rng.integers(0, 40, ts.size)
    folded = MerchantPopularity(40)
    checked = 0
    for i, (t, m) in enumerate(zip(ts.tolist(), merchant.tolist(), strict=True)):
        if i % 997 == 0 and i:
            counts, decayed = folded.at(t)
            want_counts, want_decayed = popularity_of(ts, merchant, 40, t)
            # popularity_of counts the enters strictly before t; the fold has every enter before this one.
            same_ms = (ts[:i] == t).sum()
            assert same_ms == 0
            np.testing.assert_array_equal(counts, want_counts)
            np.testing.assert_allclose(decayed, want_decayed, rtol=1e-9, atol=1e-12)
            live = folded.live_at(np.array([m, -1, 39]), t)
            np.testing.assert_allclose(live, [want_decayed[m, 0], 0.0, want_decayed[39, 0]], rtol=1e-9)
            checked += 1
        folded.add(m, t)
    assert checked == 5


@pytest.fixture(scope="module")
def day3(small_market: Marketplace) -> tuple[int, int]:
    lo = small_market.config.start_ms + 3 * DAY_MS
    return lo, lo + DAY_MS


def test_exact_popularity_gives_the_ranker_the_numbers_the_pop_baselines_rank_by(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule, day3: tuple[int, int]
) -> None:
    features = merchant_features(small_market.rooms)
    (exact,) = replay(small_log, small_schedule, features, None, [day3], [200], popularity="exact")
    (snap,) = replay(small_log, small_schedule, features, None, [day3], [200])
    assert [t.event for t in exact] == [t.event for t in snap] and len(exact) > 100
    for e, s in zip(exact, snap, strict=True):
        t = e.request.now_ms
        counts, decayed = e.table.popularity_at(e.request.items, t)
        np.testing.assert_array_equal(counts, e.pop)  # POP: the merchant's enters up to t
        np.testing.assert_allclose(decayed[:, 0], e.live_pop, rtol=1e-9, atol=1e-12)  # live POP
        # The trainer's 10-minute table: as of the last boundary, never more than the enters up to t.
        assert s.table.as_of_ms == t - t % 600_000
        snap_counts, _ = s.table.popularity_at(s.request.items, t)
        assert (snap_counts <= counts).all()
        np.testing.assert_array_equal(s.pop, e.pop)
        np.testing.assert_array_equal(s.live_pop, e.live_pop)
    # Where enters fell between the boundary and t, the two differ: the snapshot is staler.
    assert any(
        (
            e.table.popularity_at(e.request.items, e.request.now_ms)[0]
            > s.table.popularity_at(s.request.items, s.request.now_ms)[0]
        ).any()
        for e, s in zip(exact, snap, strict=True)
    )


def test_a_served_table_ranks_the_whole_day_with_the_models_popularity(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule, day3: tuple[int, int]
) -> None:
    features = merchant_features(small_market.rooms)
    (served,) = replay(small_log, small_schedule, features, None, [day3], [100], table_as_of=day3[0])
    assert len({id(t.table) for t in served}) == 1 and served[0].table.as_of_ms == day3[0]
    enters = small_log.type == ENTER
    before = np.bincount(
        small_log.merchant[enters & (small_log.ts < day3[0])], minlength=len(small_log.merchant_ids)
    )
    np.testing.assert_array_equal(served[0].table.pop_count, before)


def test_viewers_heat_counts_the_viewers_in_the_room_at_that_moment(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule, day3: tuple[int, int]
) -> None:
    features = merchant_features(small_market.rooms)
    (targets,) = replay(small_log, small_schedule, features, None, [day3], [60], heat="viewers")
    log = small_log
    checked = 0
    for target in targets[::6]:
        for j, room in enumerate(target.rooms[:40].tolist()):
            # The log's enters and leaves of the room before the target's enter, viewer by viewer: in the
            # room after an enter, out after a leave (a leave with no enter before it changes nothing).
            rows = np.flatnonzero(
                (log.room[: target.event] == room) & np.isin(log.type[: target.event], [ENTER, LEAVE])
            )
            inside: dict[int, int] = {}
            for row in rows.tolist():
                v = int(log.viewer[row])
                inside[v] = inside.get(v, 0) + 1 if log.type[row] == ENTER else max(inside.get(v, 0) - 1, 0)
            assert target.request.heat[j] == sum(inside.values())
            checked += 1
    assert checked > 100
    with pytest.raises(ValueError, match="heat must be one of"):
        replay(small_log, small_schedule, features, None, [day3], [5], heat="minutes")
    with pytest.raises(ValueError, match="popularity must be one of"):
        replay(small_log, small_schedule, features, None, [day3], [5], popularity="hourly")
