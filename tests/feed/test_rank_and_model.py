"""The feed ranks with `ranking.ranker` (the ranker the evaluation and the gate judge) and the promoted model."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import httpx
import numpy as np

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit
from feed.http import FeedTuning
from roomfeed.assembly import Tuning
from roomfeed.settings import Settings
from rooms.live_index import LiveRoom
from tests.feed.conftest import Market, running_app, start_session

NOW = time.time()


def _room(i: int, merchant: str, category: str) -> LiveRoom:
    return LiveRoom(
        f"room_{i}",
        merchant,
        f"t{i}",
        category,
        (),
        "mid",
        "one_to_many",
        "",
        NOW - 60 * i,
        f"https://s/{i}",
        "live",
        None,
    )


async def test_rank_stage_is_the_learned_ranker_with_the_operator_multipliers() -> None:
    from types import SimpleNamespace

    from feed.stages import Rank, Score, rank_model, viewer_inputs
    from ranking.ranker import FEATURES, RankRequest, design
    from ranking.scorer import Scorer
    from tests.synthetic_model import synthetic_model as _model

    scorer = Scorer(_model(10, 8))
    rooms = [_room(i, f"mer_{i % 8:016x}", ("food", "home", "beauty")[i % 3]) for i in range(40)]
    cfg = replace(RankingConfig(), w_popularity=1.5, w_repeat=2.0, w_model=0.5, w_session=0.0)
    ctx = FeedContext("viewer-1", "ses_1", 5, cfg, now=NOW)
    c = ctx.candidates = Candidates.of(rooms).fresh_copy()
    rng = np.random.default_rng(3)
    c.enters = rng.random(40).astype(np.float32) * 20
    ctx.recent = [
        RecentVisit("room_1", f"mer_{1:016x}", 90_000, int(NOW * 1000) - 60_000, False),
        RecentVisit("room_2", f"mer_{2:016x}", 1_000, int(NOW * 1000) - 30_000, True),
    ]
    watcher = SimpleNamespace(scorer=scorer)
    await Score(watcher).apply(ctx)
    await Rank(watcher).apply(ctx)
    rm = rank_model(scorer)
    live = scorer.prepare(cast(Any, rooms))  # LiveRoom: the attribute names of RoomFeatures
    history, session = viewer_inputs("viewer-1", ctx.recent, rm, {}, int(NOW * 1000))
    assert len(history) >= 8 and len(session) == 2  # the model's table plus the visits since
    req = RankRequest(
        now_ms=int(NOW * 1000),
        items=cast(np.ndarray, live.positions),
        category=np.array([rm.categories[r.category] for r in rooms]),
        band=np.ones(40, dtype=np.int64),
        started_ms=np.array([r.started_at * 1000 for r in rooms]),
        heat=c.enters,
        history=history,
        session=session,
        lightfm=c.model_score,
        unit_items=live.unit,
        item_unit_of=scorer.unit_items(),
    )
    ranker = rm.ranker.multiplied({"lightfm": 0.5, "popularity": 1.5, "history": 2.0, "session": 1.0})
    x = design(rm.table, req).astype(np.float64)
    # A two-part ranker: the rooms of merchants the viewer entered by their weights, the others by the
    # discovery part's (both multiplied alike).
    assert ranker.discovery is not None
    entered = x[:, FEATURES.index("h_entered")] > 0
    assert entered.any() and (~entered).any()
    expected = np.where(entered, x @ ranker.weights, x @ ranker.discovery)
    assert np.allclose(c.score, expected, atol=1e-3)


async def test_without_a_model_the_feed_ranks_favourites_then_live_popularity() -> None:
    from feed.stages import Rank, Score

    rooms = [_room(i, f"m{i}", "food") for i in range(6)]
    ctx = FeedContext("viewer-9", "ses_9", 5, RankingConfig(), now=NOW)
    c = ctx.candidates = Candidates.of(rooms).fresh_copy()
    c.enters = np.array([1, 50, 5, 9, 0, 3], dtype=np.float32)
    ctx.recent = [RecentVisit("room_old", "m4", 120_000, int(NOW * 1000) - 3_600_000 * 5, False)]
    await Score(None).apply(ctx)
    await Rank(None).apply(ctx)
    order = list(np.argsort(-c.score))
    assert order[:3] == [4, 1, 3]  # REP-then-live-POP: the favourite first, then the hottest rooms


async def test_promoted_model_scores_the_feed(
    migrated: Settings,
    operator_headers: dict[str, str],
    viewer_headers: Callable[[str], dict[str, str]],
    market_of: Callable[[httpx.AsyncClient], Market],
) -> None:
    from ranking.registry import ModelRegistry
    from tests.synthetic_model import synthetic_model as _model

    async with running_app(migrated, Tuning(model_poll_s=0.2, feed=FeedTuning(config_poll_s=0.5))) as client:
        market = market_of(client)
        await market.populate(merchants=2, rooms_each=2, categories=("food",))
        model = replace(_model(50, 20), version=f"m-feed-{secrets.token_hex(3)}")
        await ModelRegistry(client.app.resources.pool).register(model, {})
        r = await client.post(f"/v1/ops/models/{model.version}/promote", headers=operator_headers)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while True:
            session = await start_session(client, viewer_headers("viewer-3"), "viewer-3", count=3)
            if session["model_version"] == model.version or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert session["model_version"] == model.version
