"""Each feed stage on its own, with an in-memory live index (pure logic: no services)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit
from feed.pipeline import FeedPipeline
from feed.sources import RoomHeatCache
from feed.stages import CandidateSource, Diversity, Exploration, Filters, Page, Rank, Score, arrange
from rooms.live_index import LiveRoom, LiveSnapshot

NOW = time.time()


def room(i: int, merchant: str, category: str, age_s: float = 3600, status: str = "live") -> LiveRoom:
    return LiveRoom(
        f"room_{i}",
        merchant,
        f"t{i}",
        category,
        (),
        "mid",
        "one_to_many",
        "",
        NOW - age_s,
        f"https://s/{i}",
        status,
        None,
    )


class MemoryIndex:
    def __init__(self, rooms: list[LiveRoom], replays: list[LiveRoom] | None = None) -> None:
        self.rooms, self._replays, self.version = rooms, replays or [], 1

    async def snapshot(self) -> LiveSnapshot:
        return LiveSnapshot(self.version, tuple(self.rooms), {r.room_id: r for r in self.rooms})

    async def replays(self, limit: int) -> list[LiveRoom]:
        return self._replays[:limit]

    async def live_room_of_merchant(self, merchant_id: str) -> LiveRoom | None:
        return None


def ctx_of(rooms: list[LiveRoom], count: int = 5, **config: float) -> FeedContext:
    ctx = FeedContext(
        "v1",
        "ses_1",
        count,
        replace(RankingConfig(exploration_share=0.0), **cast(dict[str, Any], config)),
        now=NOW,
        rng=np.random.default_rng(7),
    )
    ctx.candidates = Candidates.of(rooms).fresh_copy()
    return ctx


async def test_candidates_are_the_live_rooms_never_replays() -> None:
    replay = replace(room(99, "m9", "food", status="ended"), replay_url="https://r/99")
    source = CandidateSource(MemoryIndex([room(1, "m1", "food")], [replay]))
    ctx = ctx_of([])
    await source.apply(ctx)
    assert list(ctx.candidates.room_ids) == ["room_1"]


async def test_no_model_means_popularity() -> None:
    ctx = ctx_of([room(1, "m1", "food"), room(2, "m2", "food")])
    ctx.candidates.enters = np.array([1, 50], dtype=np.float32)
    await Score(None).apply(ctx)
    await Rank().apply(ctx)
    assert ctx.model_version == "popularity"
    assert ctx.candidates.score[1] > ctx.candidates.score[0]


async def test_model_version_follows_the_scorer() -> None:
    class Scorer:
        model_version = "m-7"

        def score(self, viewer_id: str, rooms: object) -> np.ndarray:
            return np.array([0.1, 3.0], dtype=np.float32)

    class Watcher:
        scorer = Scorer()

    ctx = ctx_of([room(1, "m1", "food"), room(2, "m2", "food")])
    await Score(Watcher()).apply(ctx)
    await Rank().apply(ctx)
    assert ctx.model_version == "m-7" and ctx.candidates.model_score[1] > ctx.candidates.model_score[0]


async def test_session_penalty_lowers_rooms_of_a_merchant_just_swiped_away() -> None:
    ctx = ctx_of([room(1, "m1", "food"), room(2, "m1", "food"), room(3, "m2", "home")])
    ctx.recent = [RecentVisit("room_1", "m1", 1000, int(NOW * 1000), True)]
    ctx.config = replace(ctx.config, w_session=0.0)
    await Rank().apply(ctx)
    plain = ctx.candidates.score.copy()
    ctx.config = replace(ctx.config, w_session=0.8)
    await Rank().apply(ctx)
    assert plain[1] - ctx.candidates.score[1] == pytest.approx(0.8, abs=1e-3)
    assert plain[2] - ctx.candidates.score[2] == pytest.approx(0.0, abs=1e-3)


async def test_filters_drop_served_swiped_and_blocked() -> None:
    rooms = [
        room(1, "m1", "a"),
        room(2, "m2", "a"),
        room(3, "m3", "a"),
        room(4, "m4", "a"),
        room(5, "m5", "a"),
    ]
    ctx = ctx_of(rooms)
    ctx.served = {"room_1"}
    ctx.recent = [
        RecentVisit("room_2", "m2", 1000, int(NOW * 1000), True),
        RecentVisit("room_5", "m5", 1000, int((NOW - 7200) * 1000), True),
    ]
    ctx.blocked_merchants = {"m3"}
    await Filters().apply(ctx)
    ctx.blocked_merchants.add("m4")
    await Filters().apply(ctx)
    assert ctx.candidates.keep.tolist() == [False, False, False, False, True]


def test_arrange_never_puts_more_than_m_of_a_category_in_a_row() -> None:
    merchants = np.arange(10)
    categories = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    order = arrange(list(range(10)), merchants, categories, max_run=2)
    runs = [
        categories[order[i]] == categories[order[i + 1]] == categories[order[i + 2]]
        for i in range(len(order) - 2)
    ]
    assert sorted(order) == list(range(10)) and not any(runs[:6])


async def test_diversity_then_page_keeps_best_first_within_the_run_limit() -> None:
    rooms = [room(i, f"m{i}", "food" if i < 5 else "home") for i in range(8)]
    ctx = ctx_of(rooms, count=4, diversity_max_run=1)
    ctx.candidates.score = np.arange(8, 0, -1).astype(np.float32)
    await Diversity().apply(ctx)
    await Page().apply(ctx)
    page = ctx.page[: ctx.count]  # the rest are spares for a concurrent request of the session
    cats = [r["category"] for r in page]
    assert page[0]["room_id"] == "room_0"
    assert all(a != b for a, b in zip(cats, cats[1:], strict=False))


async def test_exploration_gives_a_share_of_slots_to_little_seen_rooms() -> None:
    rooms = [room(i, f"m{i}", f"c{i}") for i in range(40)]
    ctx = ctx_of(
        rooms, count=10, exploration_share=0.3, exploration_max_impressions_1h=5, exploration_new_room_s=0
    )
    ctx.candidates.impressions = np.array([100] * 30 + [0] * 10, dtype=np.float32)
    ctx.candidates.score = np.linspace(1, 0, 40).astype(np.float32)
    await Diversity().apply(ctx)
    await Exploration().apply(ctx)
    await Page().apply(ctx)
    page = ctx.page[: ctx.count]
    explored = [r for r in page if ctx.candidates.index_of[r["room_id"]] in ctx.explored]
    assert all("explored" not in r and "score" not in r for r in ctx.page)  # nothing internal on a page
    assert len(explored) == 3 and all(int(r["room_id"].split("_")[1]) >= 30 for r in explored)
    assert len(page) == 10 and len({r["room_id"] for r in ctx.page}) == len(ctx.page) == 20


async def test_a_stage_is_added_in_one_line() -> None:
    class Boost:
        name = "alliance_boost"

        async def apply(
            self, ctx: FeedContext
        ) -> None:  # places room 1 (off the page of one) second, as the alliance does
            ctx.candidates.boosted[0] = True
            ctx.order = [i for i in ctx.order if i != 0]
            ctx.order.insert(1, 0)

    index = MemoryIndex([room(1, "m1", "a"), room(2, "m2", "b")])
    pipeline = FeedPipeline.standard(index, RoomHeatCache(None), None, None, alliance_boost=Boost())
    assert pipeline.names == [
        "candidates",
        "hydrate",
        "filters",
        "viewer",
        "retrieve",
        "score",
        "rank",
        "diversity",
        "exploration",
        "alliance_boost",
        "page",
    ]
    ctx = await pipeline.run(ctx_of([], count=2))
    assert ctx.page[1]["room_id"] == "room_1" and ctx.page[1]["boosted"] is True


@pytest.mark.parametrize("seed", range(6))
def test_best_first_is_the_exact_top_of_the_kept_scores(seed: int) -> None:
    from feed.stages import best_first

    rng = np.random.default_rng(seed)
    for n, want in ((10_000, 70), (10_000, 10_000), (500, 70), (3_000, 1), (10_000, 300)):
        score = rng.normal(size=n).astype(np.float32)
        if seed % 2:  # many ties, and a strided sample that sees only the worst rooms
            score = np.round(score, 1)
            score[::10] -= 5
        elif seed == 2:  # a sample that sees only the best rooms: too few pass its cut
            score[::10] += 5
        keep = rng.random(n) > (0.9 if seed == 5 else 0.2)
        expected = np.flatnonzero(keep)
        expected = expected[np.argsort(-score[expected], kind="stable")][:want]
        assert best_first(score, keep, want).tolist() == expected.tolist()


def test_exploration_draws_only_kept_eligible_rooms_off_the_page_and_evenly() -> None:
    rng = np.random.default_rng(3)
    n = 1_000
    eligible = np.zeros(n, dtype=bool)
    eligible[::2] = True
    keep = np.ones(n, dtype=bool)
    keep[:100] = False
    on_page = [100, 102, 104]
    counts = np.zeros(n)
    for _ in range(20_000):
        picks = Exploration.draw(rng, keep, (eligible, np.flatnonzero(eligible)), on_page, 2)
        assert len(picks) == len(set(picks)) == 2
        counts[picks] += 1
    allowed = eligible & keep
    allowed[on_page] = False
    assert counts[~allowed].sum() == 0
    share = counts[allowed] / counts.sum()
    assert share.max() < 2.0 / allowed.sum() and share.min() > 0.5 / allowed.sum()  # even, within noise
    # Hardly anything left (the redraws run out): the exact set answers, still only allowed rooms.
    keep[:] = False
    keep[[6, 8]] = True
    assert sorted(Exploration.draw(rng, keep, (eligible, np.flatnonzero(eligible)), [6], 3)) == [8]


async def test_a_big_candidate_set_is_prepared_in_the_background_and_ended_rooms_never_show() -> None:
    index = MemoryIndex([room(i, f"m{i}", "food") for i in range(1, 4)])
    source = CandidateSource(index, background_from=1)
    warmed: list[list[str]] = []
    source.warmers = [lambda c: warmed.append(list(c.room_ids))]
    ctx = ctx_of([])
    await source.apply(ctx)  # nothing served yet: built in the request
    assert list(ctx.candidates.room_ids) == ["room_1", "room_2", "room_3"]

    index.rooms = [room(1, "m1", "food"), room(3, "m3", "food"), room(4, "m4", "food")]  # 2 ended, 4 started
    index.version = 2
    ctx = ctx_of([])
    await source.apply(ctx)  # the set being served, minus the ended room; the new one is on its way
    c = ctx.candidates
    assert list(c.room_ids[c.keep]) == ["room_1", "room_3"]
    assert source._preparing is not None
    await source._preparing[1]
    assert warmed == [["room_1", "room_3", "room_4"]]

    ctx = ctx_of([])
    await source.apply(ctx)
    assert list(ctx.candidates.room_ids[ctx.candidates.keep]) == ["room_1", "room_3", "room_4"]
