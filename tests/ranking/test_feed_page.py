"""The offline evaluation can judge the page the feed would serve: its diversity and exploration after the ranker."""

from __future__ import annotations

import numpy as np

from feed.config import RankingConfig
from feed.replay import FeedPage
from ranking.evaluation import evaluate, page_method, ranker_method
from ranking.ranker import baseline_ranker
from ranking.replay import Schedule, Target


def test_page_judge_runs_the_feeds_stages_on_replayed_targets(
    small_targets: list[Target], small_schedule: Schedule
) -> None:
    ranker = ranker_method(baseline_ranker("rep_live_pop"))
    page = FeedPage(small_schedule.room_features, RankingConfig(), count=10, seed=1)
    t = small_targets[0]
    order = page(t, ranker(t))
    assert len(order) == min(10, t.rooms.size) and len(set(order.tolist())) == len(order)
    # Diversity: never more than `diversity_max_run` rooms of one category in a row on the page.
    cats = [small_schedule.room_features[int(t.rooms[i])].category for i in order]
    runs = max(sum(1 for _ in group) for group in _runs(cats))
    assert runs <= RankingConfig().diversity_max_run or len(set(cats)) == 1
    ev = evaluate(small_targets, {"ranker": ranker, "ranker_page": page_method(ranker, page)})
    assert ev.results["ranker_page"]["overall"]["n"] == len(small_targets)
    # The page can only lose hits the order had (exploration and diversity move rooms down), give or take ties.
    assert ev.results["ranker_page"]["overall"]["hr10"] <= ev.results["ranker"]["overall"]["hr10"] + 0.02


def _runs(items: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for x in items:
        if out and out[-1][-1] == x:
            out[-1].append(x)
        else:
            out.append([x])
    return out or [[]]


def test_off_page_rooms_rank_below_the_page() -> None:
    class T:
        rooms = np.arange(30)

    scores = page_method(lambda t: np.arange(30, dtype=float), lambda t, s: np.array([29, 5, 7]))(T())  # type: ignore[arg-type]
    assert list(np.argsort(-scores)[:3]) == [29, 5, 7] and (scores[[0, 1, 2]] < scores[7]).all()


def test_with_a_page_every_method_and_baseline_is_judged_by_the_page(
    small_targets: list[Target], small_schedule: Schedule
) -> None:
    page = FeedPage(small_schedule.room_features, RankingConfig(exploration_share=0.0), count=10)
    plain = evaluate(small_targets[:80], {"ranker": ranker_method(baseline_ranker("rep_pop"))})
    paged = evaluate(small_targets[:80], {"ranker": ranker_method(baseline_ranker("rep_pop"))}, page=page)
    assert set(paged.results) == set(plain.results)
    # Off the page (10 rooms) nothing counts: HR@10 through the page never exceeds the order's.
    for name in ("ranker", "rep_pop", "pop"):
        assert paged.results[name]["overall"]["hr10"] <= plain.results[name]["overall"]["hr10"] + 1e-9


def test_baselines_pages_do_not_depend_on_the_other_methods_judged(
    small_targets: list[Target], small_schedule: Schedule
) -> None:
    # Exploration draws at random; a baseline's page must come from its own scores and its target only,
    # never from how many draws another method's pages used before it (the ranker is judged first).
    targets = small_targets[:200]
    runs = []
    for ranker in ("rep_pop", "pop"):
        page = FeedPage(small_schedule.room_features, RankingConfig(exploration_share=0.25), count=10, seed=3)
        runs.append(evaluate(targets, {"ranker": ranker_method(baseline_ranker(ranker))}, seed=3, page=page))
    first, second = runs
    assert not np.array_equal(first.judged["ranker"].ranks, second.judged["ranker"].ranks)
    for name in ("pop", "live_pop", "rep_pop", "rep_live_pop", "random"):
        assert np.array_equal(first.judged[name].ranks, second.judged[name].ranks), name
        assert first.results[name] == second.results[name], name
