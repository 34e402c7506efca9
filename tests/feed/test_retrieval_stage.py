"""The feed's retrieval stage: the ranker and the stages after it work on a few hundred of the live rooms,
and each retrieved room is scored exactly as among every live room."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit, Stage
from feed.retrieval import RETRIEVAL_FROM_ROOMS, Retrieve, ViewerStep
from feed.stages import Exploration, Filters, Rank, Score, live_items
from ranking import retrieval as rt
from ranking.retrieval import Budget
from ranking.scorer import Scorer, unit_rows
from rooms.live_index import LiveRoom
from tests.synthetic_model import synthetic_model

NOW = time.time()
CATS = ("food", "home", "beauty", "books")
SMALL = Budget(discovery=20, covisit=10, trending=20, per_category=10, owed=5, exploration=4)


def retrieve_discovery(
    live: Any, keep: np.ndarray, vector: np.ndarray | None, merchants: int, sign: float
) -> np.ndarray:
    """Discovery's rooms by one product with every live merchant (the exact answer)."""
    return rt.discovery(live, keep, None, merchants, vector, sign)


def _rooms(n: int, merchants: int) -> list[LiveRoom]:
    return [
        LiveRoom(
            f"room_{i}",
            f"mer_{i % merchants:016x}",
            f"t{i}",
            CATS[i % len(CATS)],
            (),
            "mid",
            "one_to_many",
            "",
            NOW - 37 * i,
            f"https://s/{i}",
            "live",
            None,
        )
        for i in range(n)
    ]


class Owed:
    def __init__(self, merchants: list[str]) -> None:
        self.merchants = merchants

    async def owed_merchants(self) -> list[str]:
        return self.merchants


async def _ranked(
    scorer: Scorer, rooms: list[LiveRoom], base: Candidates, retrieve: Retrieve | None, served: set[str]
) -> FeedContext:
    watcher = SimpleNamespace(scorer=scorer)
    ctx = FeedContext("viewer-3", "ses_1", 10, RankingConfig(), now=NOW, rng=np.random.default_rng(1))
    ctx.candidates = base.fresh_copy()
    ctx.candidates.enters = base.enters
    ctx.candidates.impressions = base.impressions
    ctx.served = set(served)
    ctx.recent = [
        RecentVisit("room_5", f"mer_{5 % 300:016x}", 95_000, int(NOW * 1000) - 90_000, False),
        RecentVisit("room_9", f"mer_{9 % 300:016x}", 1_000, int(NOW * 1000) - 30_000, True),
    ]
    stages: list[Stage] = [Filters(), ViewerStep(watcher), *([retrieve] if retrieve else []), Score(watcher)]
    for stage in stages:
        await stage.apply(ctx)
    await (retrieve.rank if retrieve else Rank(watcher)).apply(ctx)
    return ctx


def _setup() -> tuple[Scorer, list[LiveRoom], Candidates]:
    scorer = Scorer(synthetic_model(20, 300))
    rooms = _rooms(3_000, 300)
    base = Candidates.of(rooms)
    rng = np.random.default_rng(4)
    base.enters = (rng.random(3_000) * 30).astype(np.float32)
    base.impressions = (rng.random(3_000) * 60).astype(np.float32)
    return scorer, rooms, base


async def test_a_retrieved_room_is_ranked_as_among_every_live_room() -> None:
    scorer, rooms, base = _setup()
    cfg = RankingConfig(w_session=0.0)
    rank = Rank(SimpleNamespace(scorer=scorer))
    full = await _with_config(scorer, base, None, set(), cfg, rank)
    retrieve = Retrieve(SimpleNamespace(scorer=scorer), rank, budget=SMALL, min_rooms=0)
    sub = await _with_config(scorer, base, retrieve, set(), cfg, rank)
    c = sub.candidates
    assert c.parent is not None and c.rows is not None
    assert 20 < len(c) < 600  # a few hundred of 3,000 (the viewer's 8 favourite merchants have 10 rooms each)
    # Every column, LightFM's standardisation and the rank among favourites included, is the same.
    np.testing.assert_allclose(c.score, full.candidates.score[c.rows], rtol=1e-5, atol=1e-4)


async def test_a_retrieved_subset_reads_the_unit_item_rows_the_set_made_once() -> None:
    scorer, rooms, base = _setup()
    rank = Rank(SimpleNamespace(scorer=scorer))
    rank.warm(base)  # what the candidate source does with a set prepared in the background
    whole = live_items(base, scorer)
    made = whole.unit
    retrieve = Retrieve(SimpleNamespace(scorer=scorer), rank, budget=SMALL, min_rooms=0)
    sub = await _ranked(scorer, rooms, base, retrieve, set())  # the session has visits: it reads them
    c = sub.candidates
    assert c.rows is not None
    assert whole.unit is made  # not made again by the request
    # The subset's rows, bit for bit what scaling its own vectors gives.
    np.testing.assert_array_equal(live_items(c, scorer).unit, unit_rows(live_items(c, scorer).matrix))
    np.testing.assert_array_equal(live_items(c, scorer).unit, made[c.rows])


async def test_rooms_the_viewer_may_not_see_are_not_retrieved() -> None:
    scorer, rooms, base = _setup()
    served = {f"room_{i}" for i in range(0, 3_000, 97)}
    stage = Retrieve(
        SimpleNamespace(scorer=scorer), Rank(SimpleNamespace(scorer=scorer)), budget=SMALL, min_rooms=0
    )
    sub = await _ranked(scorer, rooms, base, stage, served)
    ids = set(sub.candidates.room_ids.tolist())
    assert not ids & served and "room_9" not in ids  # served in the session; swiped away
    assert sub.candidates.whole.keep.sum() == 3_000 - len(served) - 1


async def _with_config(
    scorer: Scorer,
    base: Candidates,
    retrieve: Retrieve | None,
    served: set[str],
    cfg: RankingConfig,
    rank: Rank,
) -> FeedContext:
    watcher = SimpleNamespace(scorer=scorer)
    ctx = FeedContext("viewer-3", "ses_1", 10, cfg, now=NOW, rng=np.random.default_rng(1))
    ctx.candidates = base.fresh_copy()
    ctx.candidates.enters = base.enters
    ctx.candidates.impressions = base.impressions
    ctx.served = set(served)
    ctx.recent = [RecentVisit("room_5", f"mer_{5:016x}", 95_000, int(NOW * 1000) - 90_000, False)]
    stages: list[Stage] = [
        Filters(),
        ViewerStep(watcher),
        *([retrieve] if retrieve else []),
        Score(watcher),
        rank,
    ]
    for stage in stages:
        await stage.apply(ctx)
    return ctx


async def test_the_best_rooms_of_a_full_ranking_are_retrieved() -> None:
    """The full ranking's top 10 of the rooms the viewer may see are among the retrieved rooms (a ranker
    that rewards what a learned one rewards: LightFM, co-visitation, affinity, favourites)."""
    scorer, rooms, base = _setup()
    model = scorer.model
    assert model.ranker_weights is not None
    model.ranker_weights = np.abs(model.ranker_weights)
    scorer = Scorer(model)
    full = await _ranked(scorer, rooms, base, None, set())
    stage = Retrieve(SimpleNamespace(scorer=scorer), Rank(SimpleNamespace(scorer=scorer)), min_rooms=0)
    sub = await _ranked(scorer, rooms, base, stage, set())
    top = set(full.candidates.room_ids[np.argsort(-full.candidates.score)[:10]].tolist())
    got = set(sub.candidates.room_ids.tolist())
    assert len(top & got) >= 9


async def test_favourites_owed_and_exploration_rooms_are_retrieved() -> None:
    scorer, rooms, base = _setup()
    watcher = SimpleNamespace(scorer=scorer)
    owed = Owed([f"mer_{250:016x}"])
    stage = Retrieve(watcher, Rank(watcher), owed, budget=SMALL, min_rooms=0)
    ctx = await _ranked(scorer, rooms, base, stage, set())
    c = ctx.candidates
    ids = set(c.room_ids.tolist())
    # Every live room of every merchant the viewer entered (the model's history) is in.
    assert scorer.model.histories is not None
    history = scorer.model.histories.of("viewer-3")
    entered = history.merchants[history.stats[:, 0] > 0].tolist()
    assert entered and {f"room_{i}" for m in entered for i in range(m, 3_000, 300)} <= ids
    assert {f"room_{i}" for i in range(250, 3_000, 300)} <= ids  # the merchant the alliance is owed
    assert c.pool is not None and 0 < int(c.pool.sum()) <= SMALL.exploration
    assert set(np.flatnonzero(c.pool).tolist()) == set(Exploration().eligible(c, ctx.config, NOW)[1].tolist())


async def test_below_min_rooms_every_room_is_ranked() -> None:
    scorer, rooms, base = _setup()
    watcher = SimpleNamespace(scorer=scorer)
    ctx = await _ranked(scorer, rooms, base, Retrieve(watcher, Rank(watcher), min_rooms=5_000), set())
    assert ctx.candidates.parent is None and len(ctx.candidates) == 3_000


async def test_by_default_retrieval_starts_only_where_it_costs_less_than_ranking_every_room() -> None:
    scorer, rooms, base = _setup()
    watcher = SimpleNamespace(scorer=scorer)
    stage = Retrieve(watcher, Rank(watcher))
    assert stage.min_rooms == RETRIEVAL_FROM_ROOMS > 10_000  # the measured crossover (docs/feed.md)
    ctx = await _ranked(scorer, rooms, base, stage, set())
    assert ctx.candidates.parent is None and len(ctx.candidates) == 3_000


async def test_with_discovery_through_item_clusters_a_retrieved_room_still_scores_as_among_every_room() -> (
    None
):
    scorer, rooms, base = _setup()
    cfg = RankingConfig(w_session=0.0)
    rank = Rank(SimpleNamespace(scorer=scorer))
    full = await _with_config(scorer, base, None, set(), cfg, rank)
    retrieve = Retrieve(SimpleNamespace(scorer=scorer), rank, budget=SMALL, min_rooms=0, exact_below=100)
    sub = await _with_config(scorer, base, retrieve, set(), cfg, rank)
    c = sub.candidates
    assert c.parent is not None and c.rows is not None
    live = c.parent.memo["retrieval_live"][1]
    assert live.clusters is not None  # 300 live merchants > 100: discovery probes the model's clusters
    assert retrieve._clusters is not None and retrieve._clusters[0] is scorer.model  # made once per model
    np.testing.assert_allclose(c.score, full.candidates.score[c.rows], rtol=1e-5, atol=1e-4)


async def test_a_viewers_best_merchants_are_made_on_its_second_page_and_kept_for_a_bounded_number_of_viewers() -> (
    None
):
    scorer, rooms, base = _setup()
    cfg = RankingConfig(w_session=0.0)
    rank = Rank(SimpleNamespace(scorer=scorer))
    # exact_below=100: 300 live merchants go through the model's clusters, where a list pays off
    retrieve = Retrieve(SimpleNamespace(scorer=scorer), rank, budget=SMALL, min_rooms=0, exact_below=100)
    retrieve.viewers_kept = 2
    sign = retrieve.signs(rank.model(), cfg)["lightfm"]  # the ranker's discovery weight on LightFM decides
    await _with_config(scorer, base, retrieve, set(), cfg, rank)
    model, tops = retrieve._tops
    # The first page went through the probe (a viewer who asks one page pays no list) ...
    assert (
        model is scorer.model and list(tops) == [("viewer-3", sign)] and tops[("viewer-3", sign)][0] is None
    )
    second = await _with_config(scorer, base, retrieve, set(), cfg, rank)
    top = retrieve._tops[1][("viewer-3", sign)][0]
    assert top is not None  # ... the second made the list
    third = await _with_config(scorer, base, retrieve, set(), cfg, rank)
    assert retrieve._tops[1][("viewer-3", sign)][0] is top  # and the next pages read it
    assert second.candidates.rows is not None and third.candidates.rows is not None
    np.testing.assert_array_equal(third.candidates.rows, second.candidates.rows)
    # Discovery from the list is discovery over every live merchant (exact).
    c = second.candidates
    assert c.parent is not None and c.rows is not None
    live = c.parent.memo["retrieval_live"][1]
    assert live.clusters is not None
    vector = second.viewer.vector if second.viewer is not None else None
    exact = retrieve_discovery(live, c.parent.keep, vector, SMALL.discovery, sign)
    assert set(exact.tolist()) <= set(c.rows.tolist())
    for viewer in ("viewer-4", "viewer-5"):
        ctx = FeedContext(viewer, "ses_2", 10, cfg, now=NOW, rng=np.random.default_rng(1))
        ctx.candidates = base.fresh_copy()
        for stage in (Filters(), ViewerStep(SimpleNamespace(scorer=scorer)), retrieve):
            await stage.apply(ctx)
    assert [v for v, _ in retrieve._tops[1]] == ["viewer-4", "viewer-5"]  # the least recent went first


async def test_what_the_sources_take_from_a_viewers_history_is_kept_until_the_history_changes() -> None:
    scorer, rooms, base = _setup()
    cfg = RankingConfig(w_session=0.0)
    rank = Rank(SimpleNamespace(scorer=scorer))
    retrieve = Retrieve(SimpleNamespace(scorer=scorer), rank, budget=SMALL, min_rooms=0)
    first = await _with_config(scorer, base, retrieve, set(), cfg, rank)
    picks = retrieve._picks["viewer-3"][3]
    again = await _with_config(scorer, base, retrieve, set(), cfg, rank)
    assert retrieve._picks["viewer-3"][3] is picks  # the same history: taken once
    assert first.candidates.rows is not None and again.candidates.rows is not None
    np.testing.assert_array_equal(again.candidates.rows, first.candidates.rows)
    # A visit since: the history changed, so are its picks (and the rooms are those taken afresh).
    histories = scorer.model.histories
    assert histories is not None
    ctx = FeedContext("viewer-3", "ses_1", 10, cfg, now=NOW, rng=np.random.default_rng(1))
    ctx.candidates = base.fresh_copy()
    ctx.recent = [
        RecentVisit("room_5", f"mer_{5:016x}", 95_000, int(NOW * 1000) - 90_000, False),
        # after the model's round (what the model's history already counts is not a change)
        RecentVisit("room_40", f"mer_{40:016x}", 300_000, histories.until_ms + 400_000, False),
    ]
    for stage in (Filters(), ViewerStep(SimpleNamespace(scorer=scorer)), retrieve):
        await stage.apply(ctx)
    assert retrieve._picks["viewer-3"][3] is not picks
    fresh = Retrieve(SimpleNamespace(scorer=scorer), rank, budget=SMALL, min_rooms=0)
    ctx2 = FeedContext("viewer-3", "ses_1", 10, cfg, now=NOW, rng=np.random.default_rng(1))
    ctx2.candidates = base.fresh_copy()
    ctx2.recent = list(ctx.recent)
    for stage in (Filters(), ViewerStep(SimpleNamespace(scorer=scorer)), fresh):
        await stage.apply(ctx2)
    assert ctx.candidates.rows is not None and ctx2.candidates.rows is not None
    np.testing.assert_array_equal(ctx.candidates.rows, ctx2.candidates.rows)
