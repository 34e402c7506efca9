"""A viewer's history is a function of the events and their event times, never of how they arrived."""

from __future__ import annotations

from typing import Any

import numpy as np

from feed.context import RecentVisit
from feed.stages import RankModel, viewer_inputs
from ranking.dataset import InteractionLog
from ranking.history import S, ViewerHistories, history_of
from ranking.ranker import RankRequest, baseline_ranker, design, empty_table


def _events(log: InteractionLog, viewer: int) -> dict[str, np.ndarray]:
    mine = log.viewer == viewer
    return {
        "merchants": log.merchant[mine],
        "types": log.type_names()[mine],
        "dwell_ms": log.dwell_ms[mine],
        "entry_code": log.entry_code[mine],
        "ts": log.ts[mine],
    }


def _busiest(log: InteractionLog) -> int:
    return int(np.bincount(log.viewer[log.type_names() == "leave"]).argmax())


def test_backfilled_late_or_replayed_history_equals_live(small_log: InteractionLog) -> None:
    v = _busiest(small_log)
    e = _events(small_log, v)
    live = history_of(e["merchants"], e["types"], e["dwell_ms"], e["entry_code"], e["ts"])
    # The same events arriving in another order (late, by backfill or replay), or in two parts.
    order = np.random.default_rng(1).permutation(e["ts"].size)
    shuffled = history_of(*(e[k][order] for k in ("merchants", "types", "dwell_ms", "entry_code", "ts")))
    half = e["ts"].size // 2
    first = history_of(*(e[k][order[:half]] for k in ("merchants", "types", "dwell_ms", "entry_code", "ts")))
    second = history_of(*(e[k][order[half:]] for k in ("merchants", "types", "dwell_ms", "entry_code", "ts")))
    both = first.plus(second)
    for other in (shuffled, both):
        assert np.array_equal(live.merchants, other.merchants)
        assert np.allclose(live.stats, other.stats)
    assert live.stats[:, S["watches"]].sum() > 0 and live.stats[:, S["enters"]].sum() > 0
    # And the ranker's inputs are the same, whatever the order.
    n = len(live)
    req: dict[str, Any] = dict(
        now_ms=int(e["ts"].max()) + 1,
        items=live.merchants,
        category=np.zeros(n, dtype=np.int64),
        band=np.zeros(n, dtype=np.int64),
        started_ms=np.zeros(n),
        heat=np.zeros(n),
    )
    table = empty_table()
    assert np.allclose(
        design(table, RankRequest(**req, history=live)), design(table, RankRequest(**req, history=shuffled))
    )


def test_archive_table_plus_recent_visits_is_the_whole_history(small_log: InteractionLog) -> None:
    """The feed's history (the model's table as of its round + the visits since) equals the table of all events."""
    v = _busiest(small_log)
    ts = small_log.ts[small_log.viewer == v]
    until = int(np.quantile(ts, 0.6))
    names = small_log.type_names()
    # A history of enters, leaves and follows (what the feed's recent visits can carry: each is an enter and its leave).
    keep = np.isin(names, ("enter", "leave")) & ~small_log.entry_code
    before = keep & (small_log.ts < until)
    histories = ViewerHistories.build(
        small_log.viewer[before],
        small_log.merchant[before],
        names[before],
        small_log.dwell_ms[before],
        small_log.entry_code[before],
        small_log.ts[before],
        small_log.viewer_ids,
        until,
    )
    mine = keep & (small_log.viewer == v)
    whole = history_of(
        small_log.merchant[mine],
        names[mine],
        small_log.dwell_ms[mine],
        small_log.entry_code[mine],
        small_log.ts[mine],
    )
    later = mine & (small_log.ts >= until) & (names == "leave")
    recent = [
        RecentVisit(f"r{int(r)}", small_log.merchant_ids[int(m)], int(d), int(t), d < 3000)
        for r, m, d, t in zip(
            small_log.room[later],
            small_log.merchant[later],
            small_log.dwell_ms[later],
            small_log.ts[later],
            strict=True,
        )
    ]
    straddling = sum(1 for v in recent if v.ts - v.dwell_ms < until)
    assert len(recent) > 20 and straddling >= 0  # a visit that began before the table's time counts once

    class Positions:
        def position_of(self, merchant_id: str) -> int:
            return small_log.merchant_ids.index(merchant_id)

    rm = RankModel(baseline_ranker("rep_pop"), empty_table(), histories, {}, Positions())
    history, _ = viewer_inputs(small_log.viewer_ids[v], recent, rm, {}, int(ts.max()) + 1)
    assert np.array_equal(history.merchants, whole.merchants)
    assert np.allclose(history.stats, whole.stats)
