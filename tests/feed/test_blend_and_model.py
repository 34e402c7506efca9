"""The feed ranks with `ranking.blend` (the ranker the evaluation judges) and the promoted model."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace

import numpy as np

from feed.config import RankingConfig, blend_weights
from feed.context import Candidates, FeedContext, RecentVisit
from feed.stages import Blend, blend_inputs
from ranking.blend import blend
from rooms.live_index import LiveRoom
from tests.feed.conftest import running_app, start_session

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


async def test_blend_stage_is_ranking_blend_with_the_operator_weights():
    rooms = [_room(i, f"m{i % 7}", ("food", "home", "beauty")[i % 3]) for i in range(40)]
    cfg = replace(
        RankingConfig(), w_conversion=0.0, w_freshness=0.0, w_session=0.0, w_popularity=1.5, w_repeat=2.0
    )
    ctx = FeedContext("v1", "ses_1", 5, cfg, model_version="m-1", now=NOW)
    c = ctx.candidates = Candidates.of(rooms).fresh_copy()
    rng = np.random.default_rng(3)
    c.model_score = rng.normal(size=40).astype(np.float32)
    c.enters = rng.random(40).astype(np.float32) * 20
    ctx.recent = [
        RecentVisit("room_1", "m1", 90_000, int(NOW * 1000) - 60_000, False),
        RecentVisit("room_2", "m2", 1_000, int(NOW * 1000) - 30_000, True),
    ]
    await Blend().apply(ctx)
    repeat_dwell, repeat_skips, dwell_share, skip_share = blend_inputs(c, ctx.recent, NOW, cfg)
    expected = blend(
        blend_weights(cfg), c.model_score, repeat_dwell, repeat_skips, c.enters, dwell_share, skip_share
    )
    assert np.allclose(c.score, expected, atol=1e-4)
    assert (
        repeat_dwell[c.rooms_of_merchant["m1"]].min() > 89
        and repeat_skips[c.rooms_of_merchant["m2"]].min() > 0.99
    )
    assert dwell_share[c.index_of["room_1"]] == 1.0 and skip_share[c.index_of["room_2"]] == 1.0


async def test_blend_feeds_the_session_term_from_the_scorer():
    from types import SimpleNamespace

    from bench.bench_feed import _model
    from ranking.scorer import Scorer

    scorer = Scorer(_model(10, 8))
    rooms = [_room(i, f"mer_{i % 8:016x}", "food") for i in range(16)]
    cfg = replace(RankingConfig(), w_conversion=0.0, w_freshness=0.0, w_session=0.0, w_session_lightfm=2.0)
    ctx = FeedContext("viewer-1", "ses_1", 5, cfg, model_version="m-1", now=NOW)
    c = ctx.candidates = Candidates.of(rooms).fresh_copy()
    c.model_score = scorer.score("viewer-1", c.rooms)
    ctx.recent = [
        RecentVisit("room_3", f"mer_{3:016x}", 60_000, int(NOW * 1000) - 5_000, False),
        RecentVisit("room_gone", "mer_never_seen", 40_000, int(NOW * 1000) - 9_000, False),
    ]
    await Blend(SimpleNamespace(scorer=scorer)).apply(ctx)
    repeat_dwell, repeat_skips, dwell_share, skip_share = blend_inputs(c, ctx.recent, NOW, cfg)
    session = scorer.session_similarity(c.rooms, [(rooms[3], 60.0)])
    expected = blend(
        blend_weights(cfg),
        c.model_score,
        repeat_dwell,
        repeat_skips,
        c.enters,
        dwell_share,
        skip_share,
        session,
    )
    assert np.allclose(c.score, expected, atol=1e-4) and float(np.abs(session).max()) > 0


async def test_promoted_model_scores_the_feed(migrated, operator_headers, viewer_headers, market_of):
    from bench.bench_feed import _model
    from ranking.registry import ModelRegistry

    async with running_app(migrated, model_poll_s=0.2) as client:
        market = market_of(client)
        await market.populate(merchants=2, rooms_each=2, categories=("food",))
        model = replace(_model(50, 20), version=f"m-feed-{secrets.token_hex(3)}")
        await ModelRegistry(client.app.state.resources.pool).register(model, {})
        r = await client.post(f"/v1/ops/models/{model.version}/promote", headers=operator_headers)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while True:
            session = await start_session(client, viewer_headers("viewer-3"), "viewer-3", count=3)
            if session["model_version"] == model.version or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert session["model_version"] == model.version
