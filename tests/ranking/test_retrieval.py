"""Retrieval: each source gives what it promises, and a retrieved room scores exactly as among all live rooms."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from ranking import retrieval as rt
from ranking.evaluation import evaluate, ranker_method
from ranking.history import STATS, S, ViewerHistory
from ranking.ranker import FEATURES, POPULARITY_HALF_LIVES_MS, MerchantTable, Ranker
from ranking.replay import Target

# 12 rooms of 6 merchants (positions 0..5, two rooms each), categories 0/1 alternating by merchant.
POSITIONS = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
CATEGORY = POSITIONS % 2
ROOM_SCORE = np.arange(12, dtype=np.float64)  # room 11 is the most popular, room 0 the least


def _live(k: int = 2) -> rt.LiveSet:
    vectors = np.eye(6, k, dtype=np.float32)

    def items(merchants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return vectors[merchants], np.zeros(merchants.size, np.float32)

    return rt.LiveSet.of(POSITIONS, CATEGORY, items, ROOM_SCORE)


def _history(rows: dict[int, dict[str, float]]) -> ViewerHistory:
    merchants = np.array(sorted(rows), dtype=np.int64)
    stats = np.zeros((len(rows), len(STATS)))
    for i, m in enumerate(merchants.tolist()):
        for name, value in rows[m].items():
            stats[i, S[name]] = value
    return ViewerHistory(merchants, stats)


def _table(covisit: dict[int, dict[int, float]] | None = None) -> MerchantTable:
    n = 6
    cov = sp.lil_matrix((n, n), dtype=np.float32)
    for a, row in (covisit or {}).items():
        for b, w in row.items():
            cov[a, b] = w
    return MerchantTable(
        category=np.arange(n) % 2,
        band=np.zeros(n, dtype=np.int64),
        pop_count=np.zeros(n),
        pop_decayed=np.zeros((n, len(POPULARITY_HALF_LIVES_MS))),
        as_of_ms=0,
        covisit=cov.tocsr(),
        n_categories=2,
        n_bands=1,
    )


def test_favourites_are_every_room_the_viewer_may_see_of_merchants_it_entered() -> None:
    keep = np.ones(12, dtype=bool)
    keep[7] = False  # merchant 1's second room was served already
    history = _history({1: {"enters": 2}, 3: {"impressions": 4}})  # merchant 3 only shown, never entered
    assert rt.favourites(_live(), keep, history).tolist() == [1]


def test_discovery_brings_the_rooms_of_the_merchants_lightfm_likes_best() -> None:
    live = _live()
    scores = rt.merchant_scores_of(live, np.array([0.0, 1.0], np.float32))  # likes merchant 1 only
    assert scores is not None
    rows = rt.discovery(live, np.ones(12, dtype=bool), scores, merchants=1)
    assert sorted(rows.tolist()) == [1, 7]
    assert rt.discovery(live, np.ones(12, dtype=bool), None, merchants=5).size == 0  # no vector: nothing


def test_covisit_brings_the_neighbours_of_what_the_viewer_watched() -> None:
    table = _table({2: {4: 0.9, 5: 0.1}})
    history = _history({2: {"enters": 1, "dwell_s": 600}})
    rows = rt.covisited(_live(), np.ones(12, dtype=bool), history, table, merchants=1)
    assert sorted(rows.tolist()) == [4, 10]  # merchant 4's rooms; not merchant 5's (weaker), nor 2's own


def test_trending_is_the_best_viewer_independent_score_the_viewer_may_see() -> None:
    keep = np.ones(12, dtype=bool)
    keep[11] = False
    assert rt.trending(_live(), keep, rooms=3).tolist() == [10, 9, 8]


def test_categories_are_the_best_rooms_of_the_viewers_favourite_category() -> None:
    history = _history(
        {1: {"enters": 1, "dwell_s": 900}, 2: {"enters": 1, "dwell_s": 10}}
    )  # category 1 first
    rows = rt.categories(_live(), np.ones(12, dtype=bool), history, _table(), top=1, rooms=2)
    assert rows.tolist() == [11, 9]
    assert set(CATEGORY[rows].tolist()) == {1}


def test_owed_brings_the_rooms_of_merchants_the_alliance_owes_most_first() -> None:
    rows = rt.owed(_live(), np.ones(12, dtype=bool), [5, 0, 3], limit=2)
    assert sorted(rows.tolist()) == [0, 5, 6, 11]


def test_exploration_draws_only_eligible_rooms_the_viewer_may_see() -> None:
    keep = np.ones(12, dtype=bool)
    keep[[2, 4]] = False
    eligible = np.array([1, 2, 3, 4, 8])
    draws = [set(rt.exploration(keep, eligible, 2, np.random.default_rng(s)).tolist()) for s in range(50)]
    assert all(len(d) == 2 and d <= {1, 3, 8} for d in draws)
    assert set().union(*draws) == {1, 3, 8}  # every eligible kept room can be drawn


def test_lightfm_moments_are_those_over_every_kept_room_never_entered() -> None:
    live = _live()
    scores = np.array([0.5, -1.0, 2.0, 0.25, 3.0, -0.5], np.float32)
    keep = np.ones(12, dtype=bool)
    keep[[3, 10]] = False
    entered = np.array([0, 6])  # merchant 0's rooms
    count, total, squares = rt.lightfm_moments(live, keep, scores, entered)  # type: ignore[misc]
    per_room = scores[POSITIONS].astype(np.float64)
    mask = keep.copy()
    mask[entered] = False
    assert count == mask.sum()
    assert np.isclose(total, per_room[mask].sum()) and np.isclose(squares, (per_room[mask] ** 2).sum())


def _ranker() -> Ranker:
    rng = np.random.default_rng(3)
    return Ranker(rng.normal(size=len(FEATURES)))


def test_a_retrieved_room_scores_as_among_all_live_rooms(small_targets: list[Target]) -> None:
    """The ranker over the retrieved rows (with the moments) gives each row the score it has over every room."""
    ranker = _ranker()
    for t in small_targets[:150]:
        full = ranker.score(t.table, t.request)
        live = rt.replayed_live_set(ranker, t.table, t.request)
        viewer = rt.Viewer(t.request.history, rt.replayed_merchant_scores(live, t.request))
        budget = rt.Budget(discovery=5, covisit=5, trending=5, per_category=3, exploration=2)
        got = rt.retrieve(
            live, np.ones(len(live), bool), viewer, t.table, budget, eligible=np.arange(len(live))
        )
        assert got.rows.size <= len(live)
        part = ranker.score(t.table, rt.sub_request(t.request, got.rows, got.lightfm_moments))
        np.testing.assert_allclose(part, full[got.rows], rtol=1e-4, atol=1e-4)


def test_with_a_budget_over_every_room_retrieval_changes_nothing(small_targets: list[Target]) -> None:
    ranker = _ranker()
    wide = rt.Budget(trending=100_000)
    ev = evaluate(
        small_targets[:300],
        {"ranker": ranker_method(ranker), "retrieved": rt.retrieval_method(ranker, wide)},
    )
    assert ev.results["retrieved"]["overall"] == ev.results["ranker"]["overall"]


def test_moments_from_the_vector_equal_those_from_every_room() -> None:
    live = _live(k=2)
    u = np.array([0.7, -0.2], np.float32)
    keep = np.ones(12, dtype=bool)
    keep[[2, 9]] = False
    entered = np.array([1, 7])
    a = rt.lightfm_moments(live, keep, rt.merchant_scores_of(live, u), entered)
    b = rt.lightfm_moments_of(live, keep, u, entered)
    assert a is not None and b is not None
    np.testing.assert_allclose(a, b, rtol=1e-6)


# --- discovery over many live merchants: the model's item clusters ---------------------------------


def _tastes(merchants: int, k: int = 16, tastes: int = 32, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors grouped by taste (as trained factors are), biases small."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(tastes, k)) * 3
    items = (centres[rng.integers(0, tastes, merchants)] + 0.3 * rng.normal(size=(merchants, k))).astype(
        np.float32
    )
    return items, (0.1 * rng.normal(size=merchants)).astype(np.float32)


def _clustered(items: np.ndarray, bias: np.ndarray, **kw: int) -> rt.LiveSet:
    n = items.shape[0]
    index = rt.ItemClusters.of(items, clusters=kw.pop("clusters", 64), exact_below=0, **kw)

    def of(merchants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return items[merchants], bias[merchants]

    # Two rooms per merchant, rooms ordered so merchant positions are not sorted.
    positions = np.concatenate([np.arange(n)[::-1], np.arange(n)])
    return rt.LiveSet.of(positions, np.zeros(2 * n, np.int64), of, clusters=index)


def test_clustered_discovery_finds_the_exact_best_merchants_when_tastes_group_them() -> None:
    items, bias = _tastes(6_000)
    live = _clustered(items, bias, probe=600)  # a tenth of the merchants (at most a fifth) scored
    assert live.clusters is not None
    rng = np.random.default_rng(8)
    for _ in range(20):
        vector = (items[rng.integers(0, 6_000)] + 0.3 * rng.normal(size=16)).astype(np.float32)
        exact = rt._best(rt.merchant_scores_of(live, vector), np.arange(live.merchants.size), 50)
        got = live.clusters.best(vector, 1.0, 50)
        assert set(got.tolist()) == set(exact.tolist())  # the same merchants (order: float rounding)


def test_clustered_discovery_scores_a_bounded_number_of_merchants_however_many_are_live() -> None:
    rng = np.random.default_rng(2)
    items = rng.normal(size=(20_000, 16)).astype(np.float32)  # no structure: nothing lets it stop early
    live = _clustered(items, np.zeros(20_000, np.float32), probe=500, clusters=128)
    assert live.clusters is not None
    scored: list[int] = []
    score = live.clusters._scores

    def counting(clusters: np.ndarray, q: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray]:
        out = score(clusters, q, sign)
        scored.append(out[0].size)
        return out

    object.__setattr__(live.clusters, "_scores", counting)
    got = live.clusters.best(rng.normal(size=16).astype(np.float32), 1.0, 40)
    assert got.size == 40 and np.unique(got).size == 40
    biggest = int(live.clusters.sizes.max())
    assert 500 <= sum(scored) <= 1_000 + biggest  # probe, then up to twice it, whole clusters


def test_clustered_discovery_with_a_negative_lightfm_weight_takes_the_worst_scored() -> None:
    items, bias = _tastes(3_000)
    live = _clustered(items, bias, probe=3_000)  # every cluster probed: exact
    assert live.clusters is not None
    vector = items[17]
    scores = rt.merchant_scores_of(live, vector)
    assert scores is not None
    worst = rt._best(-scores, np.arange(scores.size), 10)
    assert set(live.clusters.best(vector, -1.0, 10).tolist()) == set(worst.tolist())


def test_discovery_scores_every_live_merchant_up_to_the_exact_threshold() -> None:
    items, bias = _tastes(500)
    index = rt.ItemClusters.of(items, clusters=16, exact_below=500)

    def of(merchants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return items[merchants], bias[merchants]

    assert rt.LiveSet.of(np.arange(500), np.zeros(500, np.int64), of, clusters=index).clusters is None
    assert rt.LiveSet.of(np.arange(500), np.zeros(500, np.int64), of, clusters=index).matrix is not None
    more = rt.ItemClusters.of(items, clusters=16, exact_below=499)
    live = rt.LiveSet.of(np.arange(500), np.zeros(500, np.int64), of, clusters=more)
    assert live.clusters is not None
    # discovery goes through the clusters then (same answer here: tastes are well apart)
    keep = np.ones(500, dtype=bool)
    exact = rt.discovery(rt.LiveSet.of(np.arange(500), np.zeros(500, np.int64), of), keep, None, 5, items[3])
    assert sorted(rt.discovery(live, keep, None, 5, items[3]).tolist()) == sorted(exact.tolist())


def test_item_clusters_need_item_vectors() -> None:
    import pytest

    with pytest.raises(ValueError, match="at least one item vector"):
        rt.ItemClusters.of(np.zeros((0, 8), np.float32))


def test_a_two_part_rankers_discovery_weights_decide_which_way_the_sources_count() -> None:
    from ranking.ranker import F

    whole = np.zeros(len(FEATURES))
    whole[F["lightfm"]], whole[F["covisit"]], whole[F["category_affinity"]] = 1.0, 1.0, 1.0
    assert rt.directions(Ranker(whole)) == {"lightfm": 1.0, "covisit": 1.0, "category_affinity": 1.0}
    # The rooms these sources bring are of merchants the viewer never entered: the discovery part scores them.
    discovery = whole.copy()
    discovery[F["lightfm"]], discovery[F["covisit"]] = -0.5, 0.0
    signs = rt.directions(Ranker(whole, discovery=discovery))
    assert signs == {"lightfm": -1.0, "covisit": 0.0, "category_affinity": 1.0}


def _of_items(items: np.ndarray, bias: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def of(merchants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return items[merchants], bias[merchants]

    return of


def test_discovery_from_the_viewers_best_merchants_is_the_exact_best_of_the_live_ones() -> None:
    rng = np.random.default_rng(5)
    items = rng.normal(size=(4_000, 16)).astype(np.float32)  # no structure: the clusters' worst case
    bias = rng.normal(size=4_000).astype(np.float32)
    live_merchants = np.sort(rng.choice(4_000, size=1_000, replace=False))  # a quarter of them live
    positions = np.repeat(live_merchants, 2)
    live = rt.LiveSet.of(positions, np.zeros(positions.size, np.int64), _of_items(items, bias))
    keep = np.ones(positions.size, dtype=bool)
    for sign in (1.0, -1.0):
        vector = rng.normal(size=16).astype(np.float32)
        depth = rt.top_depth(30, 4_000, 1_000)
        assert depth == 240  # twice what a quarter live needs (at least twice the budget)
        top = rt.TopMerchants.of(items, bias, vector, sign, depth)
        exact = rt.discovery(live, keep, None, 30, vector, sign)
        assert rt.discovery(live, keep, None, 30, vector, sign, top).tolist() == exact.tolist()


def test_the_viewers_best_merchants_count_a_merchant_added_since_and_say_when_they_are_too_few() -> None:
    rng = np.random.default_rng(6)
    items = rng.normal(size=(1_001, 8)).astype(np.float32)
    bias = np.zeros(1_001, np.float32)
    vector = rng.normal(size=8).astype(np.float32)
    items[1_000] = 10 * vector  # a merchant the model never saw, scored from its features: the viewer's best
    top = rt.TopMerchants.of(items[:1_000], bias[:1_000], vector, 1.0, 40)  # made before it went live
    live = rt.LiveSet.of(np.arange(1_001), np.zeros(1_001, np.int64), _of_items(items, bias))
    rows = top.live_rows(live, 10)
    assert rows is not None and live.merchants[rows[0]] == 1_000
    exact = rt.discovery(live, np.ones(1_001, bool), None, 10, vector)
    assert rt.discovery(live, np.ones(1_001, bool), None, 10, vector, 1.0, top).tolist() == exact.tolist()
    # Few of its 40 merchants live (every tenth merchant is): too short; discovery scores the live ones itself.
    sparse = rt.LiveSet.of(np.arange(0, 1_000, 10), np.zeros(100, np.int64), _of_items(items, bias))
    assert top.live_rows(sparse, 10) is None
    keep = np.ones(100, bool)
    assert (
        rt.discovery(sparse, keep, None, 10, vector, 1.0, top).tolist()
        == rt.discovery(sparse, keep, None, 10, vector).tolist()
    )


def test_history_picks_taken_once_give_the_sources_what_they_take_from_the_history(
    small_targets: list[Target],
) -> None:
    ranker = _ranker()
    signs = rt.directions(ranker)
    budget = rt.Budget(discovery=5, covisit=5, trending=5, per_category=3, exploration=2)
    for t in small_targets[:150]:
        live = rt.replayed_live_set(ranker, t.table, t.request)
        viewer = rt.Viewer(t.request.history, rt.replayed_merchant_scores(live, t.request))
        keep = np.ones(len(live), bool)
        picks = rt.HistoryPicks.of(t.request.history, t.table, budget, signs)
        each = rt.retrieve(live, keep, viewer, t.table, budget, rng=np.random.default_rng(1), signs=signs)
        kept = rt.retrieve(
            live, keep, viewer, t.table, budget, rng=np.random.default_rng(1), signs=signs, picks=picks
        )
        np.testing.assert_array_equal(kept.rows, each.rows)
        for name, rows in each.sources.items():
            np.testing.assert_array_equal(kept.sources[name], rows)
        assert kept.lightfm_moments == each.lightfm_moments
