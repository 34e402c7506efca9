"""Frames (feed.frames): a big candidate set's per-second arrays are built off the request path and swapped
in whole; a request reads one whole frame, never waits for a rebuild, and pages exactly as when it derives
the arrays itself."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from events.heat import HeatSnapshot
from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, Frame, RecentVisit, Stage, frame_part
from feed.frames import FrameRefresher
from feed.pipeline import FeedPipeline
from feed.retrieval import Retrieve, ViewerStep
from feed.sources import RoomHeatCache
from feed.stages import CandidateSource, Diversity, Exploration, Filters, Hydrate, Page, Rank, Score
from ranking.scorer import Scorer
from rooms.live_index import LiveRoom, LiveSnapshot
from tests.feed.test_retrieval_stage import NOW, SMALL, _rooms
from tests.synthetic_model import synthetic_model

ROOMS = 3_000


class MemoryIndex:
    def __init__(self, rooms: list[LiveRoom]) -> None:
        self.rooms = rooms
        # One snapshot object while nothing changes, as rooms.live_index.LiveIndex hands out (a new one
        # per read would be a new candidate set prepared per request).
        self.held = LiveSnapshot(1, tuple(rooms), {r.room_id: r for r in rooms})

    async def snapshot(self) -> LiveSnapshot:
        return self.held

    async def replays(self, limit: int) -> list[LiveRoom]:
        return []

    async def live_room_of_merchant(self, merchant_id: str) -> LiveRoom | None:
        return None


class Heat:
    """Every room's heat, different at each read (a real refresh changes some rooms each second)."""

    def __init__(self, room_ids: list[str]) -> None:
        self.room_ids = room_ids
        self.reads = 0

    async def snapshot(self, now: float | None = None) -> HeatSnapshot:
        self.reads += 1
        rng = np.random.default_rng(self.reads)
        values = rng.random((len(self.room_ids), 5)) * np.array([30.0, 60.0, 600.0, 2.0, 3.0])
        return HeatSnapshot(NOW if now is None else now, self.room_ids, values)


class Feed:
    """A pipeline over ROOMS live rooms with retrieval on (min_rooms 0) and its heat cache."""

    def __init__(self, frames: bool = True, model: Any = None) -> None:
        rooms = _rooms(ROOMS, 300)
        self.watcher = SimpleNamespace(
            scorer=Scorer(model if model is not None else synthetic_model(20, 300))
        )
        self.heat = RoomHeatCache(Heat([r.room_id for r in rooms]))
        self.source = CandidateSource(
            MemoryIndex(rooms), background_from=1, frames=FrameRefresher(in_thread=True)
        )
        rank = Rank(self.watcher)
        stages: list[Stage] = [
            self.source,
            Hydrate(self.heat, None),
            Filters(),
            ViewerStep(self.watcher),
            Retrieve(self.watcher, rank, budget=SMALL, min_rooms=0),
            Score(self.watcher),
            rank,
            Diversity(),
            Exploration(),
            Page(),
        ]
        self.pipeline = FeedPipeline(stages)
        if not frames:  # every request derives the arrays itself (the path before frames)
            self.source.frames.shared, self.source.frames.views = [], []

    @property
    def served(self) -> Candidates:
        assert self.source._candidates is not None
        return self.source._candidates[1]

    async def page(self, viewer: int = 3, config: RankingConfig | None = None) -> FeedContext:
        ctx = FeedContext(
            f"viewer-{viewer}",
            f"ses_{viewer}",
            10,
            config or RankingConfig(),
            now=NOW,
            rng=np.random.default_rng(viewer),
        )
        ctx.served = {f"room_{viewer * 11 + j}" for j in range(5)}
        ctx.recent = [RecentVisit("room_5", f"mer_{5:016x}", 95_000, int(NOW * 1000) - 90_000, False)]
        ctx.recent_loaded = True
        return await self.pipeline.run(ctx)


def _scores(ctx: FeedContext) -> dict[str, float]:
    c = ctx.candidates
    return {str(c.room_ids[i]): float(c.score[i]) for i in ctx.order[:30]}


async def test_a_page_from_a_frame_is_the_page_the_request_would_derive_itself() -> None:
    framed, plain = Feed(), Feed(frames=False)
    for feed in (framed, plain):
        await feed.heat.refresh()
        await feed.page()  # the first page builds the set in the request
    framed.source.frames.install(framed.served, await framed.source.frames.build_off_loop(framed.served, NOW))
    for viewer in (3, 7, 11):
        a, b = await framed.page(viewer), await plain.page(viewer)
        assert a.candidates.frame is not None and b.candidates.frame is None
        assert [r["room_id"] for r in a.page] == [r["room_id"] for r in b.page]
        assert _scores(a) == pytest.approx(_scores(b), rel=1e-6)
    await framed.pipeline.stop()
    await plain.pipeline.stop()


async def test_a_request_during_a_rebuild_reads_the_previous_frame_and_does_not_wait() -> None:
    feed = Feed()
    await feed.heat.refresh()
    await feed.page()
    frames = feed.source.frames
    first = await frames.build_off_loop(feed.served, NOW)
    frames.install(feed.served, first)
    entered, release = threading.Event(), threading.Event()

    def slow(c: Candidates, model: Any, config: RankingConfig, now: float, view: dict[str, Any]) -> None:
        entered.set()
        assert release.wait(10)

    frames.views = [*frames.views, slow]
    await feed.heat.refresh()  # new heat: the next frame differs from the first
    rebuild = asyncio.create_task(frames.build_off_loop(feed.served, NOW))
    assert await asyncio.to_thread(entered.wait, 10)  # the rebuild is half way
    ctx = await asyncio.wait_for(feed.page(), 2.0)  # served meanwhile, without waiting for it
    assert ctx.candidates.frame is first
    release.set()
    second = await rebuild
    frames.install(feed.served, second)
    assert (await feed.page()).candidates.frame is second
    assert second.shared["heat"]["enters"] is not first.shared["heat"]["enters"]
    await feed.pipeline.stop()


async def test_a_frame_swap_never_exposes_a_half_built_frame() -> None:
    """Builds run back to back in a thread, each part stamped with its build; every frame a request takes
    has every part, all of one build (the frame is swapped in whole, after it is complete)."""
    feed = Feed()
    await feed.heat.refresh()
    await feed.page()
    frames = feed.source.frames
    count = iter(range(1, 10**6))

    building: dict[int, int] = {}  # each build's own copy of the set -> its stamp

    def stamp_shared(c: Candidates, shared: dict[str, Any]) -> None:
        shared["stamp"] = building[id(c)] = next(count)

    def stamp_view(
        c: Candidates, model: Any, config: RankingConfig, now: float, view: dict[str, Any]
    ) -> None:
        time.sleep(0.002)  # widen the window a torn swap would show in
        view["stamp"] = building[id(c)]

    frames.shared = [stamp_shared, *frames.shared]
    frames.views = [*frames.views, stamp_view]
    frames.install(feed.served, await frames.build_off_loop(feed.served, NOW))
    stop = False

    async def rebuild() -> int:
        built = 0
        while not stop:
            frames.install(feed.served, await frames.build_off_loop(feed.served, NOW))
            built += 1
        return built

    builder = asyncio.create_task(rebuild())
    seen: set[int] = set()
    for _ in range(60):
        ctx = await feed.page()
        frame = ctx.candidates.frame
        assert frame is not None
        view = frame.views[RankingConfig()]
        assert {"room_part", "room_part32", "room_delta", "live", "eligible", "stamp"} <= set(view)
        assert view["stamp"] == frame.shared["stamp"]
        seen.add(frame.shared["stamp"])
        await asyncio.sleep(0.003)
    stop = True
    assert await builder > 1
    assert len(seen) > 1  # frames did change under the requests
    await feed.pipeline.stop()


async def test_a_frame_of_another_model_or_too_old_is_not_read() -> None:
    feed = Feed()
    await feed.heat.refresh()
    await feed.page()
    frames = feed.source.frames
    frames.install(feed.served, await frames.build_off_loop(feed.served, NOW))
    ctx = await feed.page()
    rank = next(s for s in feed.pipeline.stages if isinstance(s, Rank))
    config = RankingConfig()
    assert frame_part(ctx.candidates, "room_part", config, rank.model()) is not None
    # A promotion between two builds: the frame's model parts are not read under the new model.
    feed.watcher.scorer = Scorer(synthetic_model(20, 300))
    assert frame_part(ctx.candidates, "room_part", config, rank.model()) is None
    plain = Feed(frames=False, model=feed.watcher.scorer.model)
    await plain.heat.refresh()
    await plain.page()
    # (same heat reads: both caches read their first snapshot)
    assert [r["room_id"] for r in (await feed.page()).page] == [
        r["room_id"] for r in (await plain.page()).page
    ]
    # A frame older than max_age_s is not handed out (the refresher was idle): the request derives.
    old = Frame(rank.model(), NOW - 10 * frames.max_age_s, {"heat": {}}, {})
    frames.install(feed.served, old)
    assert (await feed.page()).candidates.frame is None
    await feed.pipeline.stop()
    await plain.pipeline.stop()


async def test_the_refresher_rebuilds_after_a_heat_refresh_and_stops() -> None:
    feed = Feed()
    frames = feed.source.frames
    frames.refresh_s = 0.08
    await feed.heat.refresh()
    await feed.page()
    await feed.page()  # takes the (frameless) set: the refresher starts for it
    deadline = time.monotonic() + 10
    while frames.builds == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    built = frames.builds
    assert built >= 1 and feed.served.memo.get("frame") is not None
    await feed.heat.refresh()
    while frames.builds == built and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert frames.builds > built
    task = frames._task
    await feed.pipeline.stop()
    assert task is not None and task.done()


def test_a_refresher_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="refresh_s must be positive"):
        FrameRefresher(refresh_s=0)


@pytest.mark.timeout(20)
async def test_stopping_the_heat_cache_ends_its_loop_even_when_a_refresh_swallows_the_cancel() -> None:
    """Python 3.11's wait_for (inside `refresh`) swallows a cancel that arrives as its read completes:
    `stop` must end the loop all the same (it waited forever for a loop that went on refreshing)."""
    cache = RoomHeatCache(Heat(["room_1"]), refresh_seconds=0.001)
    inside = asyncio.Event()

    async def swallowing_refresh() -> None:
        inside.set()
        # As wait_for does when its read is done as the cancel comes: the cancel is lost.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)

    cache.refresh = swallowing_refresh  # type: ignore[method-assign]
    cache._task = asyncio.create_task(cache._run())
    await asyncio.wait_for(inside.wait(), 2.0)
    await asyncio.wait_for(cache.stop(), 2.0)


async def test_with_a_fresh_frame_a_request_in_a_new_second_derives_nothing_over_every_room() -> None:
    feed = Feed()
    await feed.heat.refresh()
    await feed.page()
    frames = feed.source.frames
    frames.install(feed.served, await frames.build_off_loop(feed.served, NOW))
    per_second = (
        "heat",
        "rank_room_columns",
        "rank_rooms",
        "rank_rooms32",
        "rank_rooms_delta",
        "exploration",
        "retrieval_scored",
    )

    def derived_names() -> set[str]:
        return {name for name in feed.served.memo if name.split(":")[0] in per_second}

    for name in derived_names():
        del feed.served.memo[name]
    await feed.heat.refresh()  # new heat, and the request below is in another second than the frame
    ctx = FeedContext("viewer-3", "ses_3", 10, RankingConfig(), now=NOW + 1.5, rng=np.random.default_rng(3))
    ctx.recent_loaded = True
    await feed.pipeline.run(ctx)
    assert ctx.candidates.frame is not None and len(ctx.page) >= 10
    assert derived_names() == set()  # every per-second array came from the frame
    await feed.pipeline.stop()


async def test_the_refresher_builds_about_once_per_heat_refresh_not_twice() -> None:
    """A frame is rebuilt after each heat refresh (or when refresh_s old), not also at each turn of the
    clock's interval: with the heat refreshed once per interval at another phase, one build per interval."""
    feed = Feed()
    frames = feed.source.frames
    frames.refresh_s = 0.2
    await feed.heat.refresh()
    await feed.page()
    await feed.page()  # the refresher starts
    await asyncio.sleep(0.3)
    start = frames.builds
    await asyncio.sleep(0.1 - time.time() % 0.2 + 0.2)  # half way between two turns of the interval
    for _ in range(6):  # 1.2 s: six heat refreshes, six turns of the interval
        await feed.heat.refresh()
        await feed.page()  # requests keep coming (the refresher stops when idle)
        await asyncio.sleep(0.2)
    built = frames.builds - start
    await feed.pipeline.stop()
    assert 1 <= built <= 8  # twice per interval would be ~12


async def test_a_frame_computes_the_room_columns_once_for_the_room_part_delta_and_every_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ranker's room columns depend on no weight: one computation per frame serves the room part and
    the two-part ranker's room delta of every config in use, with the numbers each computes alone."""
    from ranking.ranker import room_columns

    feed_ = Feed()
    await feed_.heat.refresh()
    await feed_.page()
    calls = []

    def counted(*args: Any) -> np.ndarray:
        calls.append(1)
        return room_columns(*args)

    monkeypatch.setattr("feed.stages.room_columns", counted)
    configs = [RankingConfig(), RankingConfig(w_popularity=1.3, w_model=0.7)]
    frames = feed_.source.frames
    frame = frames.build(feed_.served, configs, NOW + 7)
    assert len(calls) == 1
    rank = next(stage for stage in feed_.pipeline.stages if isinstance(stage, Rank))
    rm = rank.model()
    work = feed_.served.fresh_copy()
    work.enters = frame.shared["heat"]["enters"]
    request = rank.request(work, rm, NOW + 7)
    for config in configs:
        ranker = rank.ranker(rm, config)
        assert ranker.discovery is not None  # the synthetic model's ranker is two-part
        view = frame.views[config]
        alone = ranker.room_score(rm.table, request).astype(np.float64)
        assert np.array_equal(view["room_part"], alone)  # the config's feed terms are off by default
        delta = ranker.room_delta(rm.table, request)
        assert delta is not None and np.array_equal(view["room_delta"], delta)
    await feed_.pipeline.stop()
