"""The availability-aware protocol: live, not-yet-shown rooms only, fair baselines, paired intervals."""

from __future__ import annotations

import numpy as np

from ranking.dataset import IMPRESSION, InteractionLog
from ranking.evaluation import BASELINES, baseline, evaluate, paired_bootstrap, ranker_method
from ranking.ranker import baseline_ranker
from ranking.replay import Schedule, Target

DAY_MS = 86_400_000


def test_targets_rank_only_live_rooms_not_shown_before(
    small_log: InteractionLog, small_schedule: Schedule, small_targets: list[Target]
) -> None:
    assert 50 < len(small_targets) <= 300
    for t in small_targets[::10]:
        at, session, room = (
            int(small_log.ts[t.event]),
            small_log.session[t.event],
            int(small_log.room[t.event]),
        )
        shown_before = set(
            small_log.room[
                (small_log.session == session) & (small_log.type == IMPRESSION) & (small_log.ts < at)
            ].tolist()
        ) - {room}
        live = set(small_schedule.live_at(at).tolist())
        assert room in live and int(t.rooms[t.target]) == room
        assert set(t.rooms.tolist()) == live - shown_before


def test_rep_baselines_break_ties_by_popularity_not_at_random(small_targets: list[Target]) -> None:
    rep_pop = baseline("rep_pop")
    for t in small_targets[:50]:
        s = rep_pop(t)
        order = np.argsort(-s, kind="stable")
        keys = list(zip(t.rep[order].tolist(), t.pop[order].tolist(), strict=True))
        assert keys == sorted(keys, reverse=True)


def test_every_method_is_judged_on_the_same_targets_with_the_best_baseline_named(
    small_targets: list[Target],
) -> None:
    ev = evaluate(small_targets, {"as_rep_pop": ranker_method(baseline_ranker("rep_pop"))})
    assert set(BASELINES) <= set(ev.results) and ev.best_baseline in ("rep_pop", "rep_live_pop")
    r = ev.results
    assert r["pop"]["overall"]["hr5"] > r["random"]["overall"]["hr5"]
    assert r["rep_pop"]["repeat"]["hr5"] > r["rep_pop"]["new"]["hr5"]
    # The baseline written as ranker weights is the baseline (up to the hourly popularity snapshot).
    assert abs(r["as_rep_pop"]["overall"]["hr5"] - r["rep_pop"]["overall"]["hr5"]) < 0.05
    assert r["rep_pop"]["discovery"]["n"] == r["rep_pop"]["new"]["n"]
    d = ev.difference("rep_pop", "random")
    assert d["ci_low"] <= d["diff"] <= d["ci_high"] and d["ci_low"] > 0


def test_paired_bootstrap_interval_covers_the_difference() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(2_000) < 0.5).astype(float)
    b = a.copy()
    b[:100] = 0
    d = paired_bootstrap(a, b)
    assert d["ci_low"] > 0 and d["ci_low"] <= d["diff"] <= d["ci_high"]
