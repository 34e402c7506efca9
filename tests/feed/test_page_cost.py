"""A page's per-request work: what is kept per candidate set stays kept (a running experiment included),
and the fast paths give the pages the plain definitions give (pure logic: no services)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit
from feed.experiments import VARIANT_CONFIGS_KEPT, Experiment, Variant, assign, variant_config
from feed.stages import Filters, Rank, Score, per_config, session_penalty
from ranking.ranker import FEATURES, RankRequest, design, viewer_columns
from ranking.scorer import Scorer
from ranking.viewer_state import from_model
from rooms.live_index import LiveRoom
from tests.synthetic_model import synthetic_model

NOW = 1_800_000_000.0
CATEGORIES = ("beauty", "fashion", "food", "home")


@pytest.fixture(scope="module")
def market() -> Any:
    """A seeded market: 600 live rooms of 300 merchants, a two-part ranker with favourites first,
    co-visitation and 8 merchants of history per viewer (tests.synthetic_model)."""
    model = synthetic_model(200, 300, CATEGORIES, 8)
    model.ranker_favourites_first = 2
    scorer = Scorer(model)
    rooms = [
        LiveRoom(
            f"room_{i}",
            f"mer_{i % 300:016x}",
            f"t{i}",
            CATEGORIES[i % 4],
            (),
            ("low", "mid", "high")[i % 3],
            "one_to_many",
            "",
            NOW - 37 * (i % 200),
            f"https://s/{i}",
            "live",
            None,
        )
        for i in range(600)
    ]
    candidates = Candidates.of(rooms)
    candidates.enters = np.random.default_rng(1).random(600).astype(np.float32) * 20
    return SimpleNamespace(scorer=scorer, model=model, candidates=candidates)


def _ctx(market: Any, v: int, config: RankingConfig) -> FeedContext:
    """Viewer `v` with its state and a session of 9 visits (every third one swiped away)."""
    ctx = FeedContext(f"viewer-{v}", "s", 10, config, now=NOW, rng=np.random.default_rng(v))
    ctx.candidates = market.candidates.fresh_copy()
    ctx.candidates.enters = market.candidates.enters
    ctx.viewer = from_model(market.scorer, f"viewer-{v}")
    ctx.recent = [
        RecentVisit(
            f"room_{(v * 7 + k) % 600}",
            f"mer_{((v * 7 + k) % 600) % 300:016x}",
            1_000 if k % 3 == 0 else 40_000 + 9_000 * k,
            int(NOW * 1000) - k * 60_000,
            k % 3 == 0,
        )
        for k in range(9)
    ]
    return ctx


async def _ranked(market: Any, v: int, config: RankingConfig, rank: Rank) -> tuple[FeedContext, RankRequest]:
    watcher = SimpleNamespace(scorer=market.scorer)
    ctx = _ctx(market, v, config)
    await Score(watcher).apply(ctx)
    await rank.apply(ctx)
    _, req = rank.viewer_request(ctx)
    return ctx, req


def test_a_variant_config_is_one_object_per_value() -> None:
    base = RankingConfig()
    experiment = Experiment("exp_1", "e", (Variant("a", 1.0, {"w_model": 1.5}), Variant("b", 1.0, {})))
    for viewer in ("v1", "v2", "v3", "v4"):
        first, again = assign(viewer, base, [experiment]), assign(viewer, RankingConfig(), [experiment])
        assert first.config is again.config  # equal values: the same object (a new base object too)
        assert first.config.w_model == (1.5 if first.variant == "a" else 1.0)
    assert variant_config(base, {"w_model": 1.5}) is not variant_config(base, {"w_model": 2.0})
    for k in range(VARIANT_CONFIGS_KEPT + 5):  # bounded: a runaway of values never grows it past the bound
        variant_config(base, {"exploration_max_impressions_1h": k})
    assert variant_config(base, {"w_model": 1.5}).w_model == 1.5


async def test_the_room_part_is_kept_across_requests_while_an_experiment_runs(market: Any) -> None:
    # Two variants alternate request by request: each keeps its own room part over every room.
    rank = Rank(SimpleNamespace(scorer=market.scorer))
    experiment = Experiment("exp_2", "e", (Variant("a", 1.0, {"w_popularity": 2.0}), Variant("b", 1.0, {})))
    kept: dict[str, list[Any]] = {}
    base = RankingConfig()  # the operators' config, as the config watcher holds it
    for v in [*range(8), *range(8)]:
        assignment = assign(f"viewer-{v}", base, [experiment])
        ctx, _ = await _ranked(market, v, assignment.config, rank)
        part = ctx.candidates.memo[per_config("rank_rooms", assignment.config)][1]
        kept.setdefault(assignment.variant, []).append(part)
    assert set(kept) == {"a", "b"}
    for parts in kept.values():
        assert all(part is parts[0] for part in parts)  # made once per variant, not per page
    assert kept["a"][0] is not kept["b"][0]


async def test_the_feed_score_is_each_rooms_design_with_its_weights_and_the_page_follows(market: Any) -> None:
    # The feed's split score (room part kept per set; the viewer part dense only for LightFM, sparse for
    # co-visitation, the history and two-part rows) against the plain definition: design() row by row
    # with the weights of the room's part, favourites first, the session penalty.
    rank = Rank(SimpleNamespace(scorer=market.scorer))
    config = RankingConfig()
    ranker = rank.ranker(rank.viewer_request(_ctx(market, 0, config))[0], config)
    assert ranker.discovery is not None and ranker.favourites_first == 2
    compared = touched = 0
    for v in range(40):
        ctx, req = await _ranked(market, v, config, rank)
        x = design(market.model.table, req).astype(np.float64)
        entered = x[:, FEATURES.index("h_entered")] > 0
        expected = np.where(entered, x @ ranker.weights, x @ ranker.discovery)
        favourites = viewer_columns(market.model.table, req).favourite_rows
        if favourites.size:
            best = favourites[np.argsort(-expected[favourites], kind="stable")[: ranker.favourites_first]]
            expected[best] += 1e4
        penalty = session_penalty(ctx.candidates, ctx.recent, NOW, config.swipe_away_window_s)
        expected -= config.w_session * penalty
        got = ctx.candidates.score.astype(np.float64)
        tolerance = 2e-5 * np.maximum(1.0, np.abs(expected))  # float32 sums of ~30 terms
        assert np.all(np.abs(got - expected) <= tolerance)
        # The same best rooms in the same order: every neighbouring pair of the definition's best 21 whose
        # gap is beyond float32 noise is ordered alike by the feed's score.
        order = np.argsort(-expected, kind="stable")[:21]
        gaps = -np.diff(expected[order])
        clear = gaps > 4e-5 * np.maximum(1.0, np.abs(expected[order][1:]))
        assert all(got[a] > got[b] for a, b, c in zip(order[:-1], order[1:], clear, strict=True) if c)
        compared += int(clear.sum())
        touched += int(x[:, FEATURES.index("covisit")].any())
    assert compared >= 600 and touched >= 30


def test_rooms_of_merchants_are_found_as_a_binary_search_finds_them() -> None:
    rng = np.random.default_rng(5)
    items = rng.integers(-1, 50, 400)  # -1: merchants the model does not know
    req = RankRequest(0, items, items * 0, items * 0, items * 0.0, items * 0.0)
    order = np.argsort(items, kind="stable")
    ranked = items[order]
    for merchants in (
        np.array([3, 3, 49, -1, 7]),
        np.array([60, -5, 0]),
        np.arange(-2, 55),
        np.zeros(0, int),
    ):
        lo, hi = np.searchsorted(ranked, merchants), np.searchsorted(ranked, merchants, side="right")
        expected_rows = np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)] + [np.zeros(0, int)])
        expected_which = np.repeat(np.arange(merchants.size), hi - lo)
        rows, which = req.rows_of(merchants)
        assert rows.tolist() == expected_rows.tolist() and which.tolist() == expected_which.tolist()


async def test_co_visitation_is_the_dense_column_only_on_the_neighbours_rooms(market: Any) -> None:
    table = market.model.table
    cov = table.covisit
    for v in range(10):
        _, req = await _ranked(market, v, RankingConfig(), Rank(SimpleNamespace(scorer=market.scorer)))
        cols = viewer_columns(table, req)
        # The plain definition: every merchant's co-visitation with the viewer's watched merchants.
        h = req.history
        watched = h.stats[:, 2]
        mine = h.merchants[watched > 0]
        dense = np.zeros(cov.shape[1])
        for m, w in zip(mine, np.log1p(watched[watched > 0] / 60.0), strict=True):
            row = slice(cov.indptr[m], cov.indptr[m + 1])
            np.add.at(dense, cov.indices[row], w * cov.data[row])
        expected = np.log1p(dense)[np.where(req.items >= 0, req.items, 0)] * (req.items >= 0)
        got = cols.expanded(req)["covisit"]
        assert np.allclose(got, expected, rtol=1e-6, atol=1e-7)
        positions, _, size = cols.item_sparse["covisit"]
        assert (
            size == cov.shape[1] and positions.tolist() == np.flatnonzero(dense).tolist()
        )  # neighbours only


async def test_the_rows_not_kept_are_the_filters_drops_without_a_scan_and_a_scan_otherwise(
    market: Any,
) -> None:
    """`Candidates.not_kept` is np.flatnonzero(~keep): from the rows the stages dropped, and from the
    scan when a row was dropped another way (retrieval's LightFM moments subtract exactly these)."""
    for v in range(6):
        ctx = _ctx(market, v, RankingConfig())
        c = ctx.candidates
        assert c.not_kept().tolist() == []  # nothing dropped yet
        ctx.served = {f"room_{(v * 13 + k) % 600}" for k in range(25)} | {"room_gone_long_ago"}
        ctx.blocked_merchants = {f"mer_{(v + 7) % 300:016x}"}
        await Filters().apply(ctx)  # served, swiped away within the window (every third visit), blocked
        assert c.dropped and c.not_kept().tolist() == np.flatnonzero(~c.keep).tolist()
        assert len(c.not_kept()) >= 25
        c.keep[(v * 31) % 600] = False  # dropped without telling the set: the scan answers
        assert c.not_kept().tolist() == np.flatnonzero(~c.keep).tolist()
        c.keep[c.dropped[0][0]] = True  # kept again after a drop: the scan answers too
        assert c.not_kept().tolist() == np.flatnonzero(~c.keep).tolist()
    assert market.candidates.fresh_copy().dropped == []


async def test_equal_configs_share_what_a_candidate_set_keeps(market: Any) -> None:
    # A config read again (a new, equal object every poll) takes the same entry: the set never keeps one
    # room part per object made (it would grow every second).
    rank = Rank(SimpleNamespace(scorer=market.scorer))
    memo = market.candidates.memo  # shared by the set's copies (and by this module's other tests)
    before = {name for name in memo if name.startswith("rank_rooms:")}
    configs = [RankingConfig(w_repeat=1.25) for _ in range(30)]  # all alive: 30 objects, one value
    for v, config in enumerate(configs):
        await _ranked(market, v % 5, config, rank)
    added = {name for name in memo if name.startswith("rank_rooms:")} - before
    assert len(added) == 1


async def test_the_config_watcher_keeps_the_served_object_while_the_version_holds() -> None:
    from feed.config_store import ConfigVersion, ConfigWatcher

    class Store:
        version = 3

        async def current(self) -> ConfigVersion:  # a new object on every read, as PostgreSQL gives
            return ConfigVersion(self.version, RankingConfig(w_model=1.5), {}, "op", "", None, None)

    class Book:
        async def running(self) -> list[Experiment]:
            return []

    store = Store()
    watcher = ConfigWatcher(store, Book())  # type: ignore[arg-type]  # fakes of the two readers
    await watcher.reload()
    served = watcher.current
    await watcher.reload()
    assert watcher.current is served
    store.version = 4
    await watcher.reload()
    assert watcher.current is not served and watcher.current.version == 4
