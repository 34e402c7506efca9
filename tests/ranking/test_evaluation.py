"""The availability-aware protocol: live, not-yet-shown rooms only, fair baselines, paired intervals."""

from __future__ import annotations

import numpy as np
import pytest

from ranking import evaluation as ranking_evaluation
from ranking.dataset import IMPRESSION, InteractionLog
from ranking.evaluation import (
    BASELINES,
    Evaluation,
    Judged,
    baseline,
    evaluate,
    paired_bootstrap,
    ranker_method,
)
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


def test_the_gates_interval_resamples_viewers_not_targets(small_targets: list[Target]) -> None:
    # evaluate() knows each target's viewer, so every difference the gate reads resamples viewers.
    ev = evaluate(small_targets, {})
    assert ev.viewers is not None and ev.viewers.tolist() == [t.viewer for t in small_targets]
    # One heavy viewer for whom "a" always hits and "b" never (120 targets), beside 300 viewers with one
    # target each and no difference: per target that looks like strong evidence; it is one viewer's taste.
    rng = np.random.default_rng(3)
    rest = rng.integers(0, 20, 300)
    ranks_a = np.concatenate([np.zeros(120, dtype=np.int64), rest])
    ranks_b = np.concatenate([np.full(120, 50, dtype=np.int64), rest])
    viewers = np.concatenate([np.zeros(120, dtype=np.int64), np.arange(1, 301)])
    none = np.full(420, -1, dtype=np.int64)
    heavy = Evaluation(
        results={},
        judged={"a": Judged(ranks_a, none), "b": Judged(ranks_b, none)},
        best_baseline="b",
        best_pop="pop",
        repeat_share=1.0,
        targets=420,
        viewers=viewers,
    )
    by_target = heavy.difference("a", "b", by="target", seed=1)
    by_viewer = heavy.difference("a", "b", seed=1)
    assert by_viewer["diff"] == by_target["diff"] == 120 / 420
    assert by_target["ci_low"] > 0.2  # targets resampled: "certainly better"
    assert by_viewer["ci_low"] < 0.05  # viewers resampled: it hangs on whether the heavy viewer is drawn
    assert by_viewer["viewers"] == 301
    with pytest.raises(ValueError, match="by must be"):
        heavy.difference("a", "b", by="session")


def test_a_viewer_level_interval_needs_a_viewer_per_target() -> None:
    with pytest.raises(ValueError, match="viewers has shape"):
        ranking_evaluation.viewer_bootstrap(np.ones(3), np.zeros(3), np.arange(2))
