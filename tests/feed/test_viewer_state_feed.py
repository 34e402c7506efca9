"""The feed reads a viewer's model state per page (ranking.viewer_state), never across model versions."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
from redis.asyncio import Redis

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit
from feed.http import FeedTuning
from feed.retrieval import ViewerStep
from feed.stages import Rank, Score
from ranking import viewer_state as vs
from ranking.scorer import Scorer
from roomfeed.assembly import Tuning
from rooms.live_index import LiveRoom
from tests.feed.conftest import running_app, start_session
from tests.synthetic_model import synthetic_model

CATS = ("food", "home", "beauty")


def _rooms(now: float, n: int = 60, merchants: int = 20) -> list[LiveRoom]:
    return [
        LiveRoom(
            f"room_{i}",
            f"mer_{i % merchants:016x}",
            "t",
            CATS[i % 3],
            (),
            "mid",
            "one_to_many",
            "",
            now - 50 * i,
            "u",
            "live",
            None,
        )
        for i in range(n)
    ]


async def _scores(
    scorer: Scorer, rooms: list[LiveRoom], now: float, state: Any, recent: list[RecentVisit]
) -> Any:
    watcher = SimpleNamespace(scorer=scorer)
    ctx = FeedContext("viewer-2", "ses", 5, RankingConfig(), now=now, viewer=state)
    ctx.candidates = Candidates.of(rooms).fresh_copy()
    ctx.candidates.enters = np.linspace(0, 30, len(rooms)).astype(np.float32)
    ctx.recent = recent
    for stage in (ViewerStep(watcher), Score(watcher), Rank(watcher)):
        await stage.apply(ctx)
    return ctx


def _states(model: Any) -> dict[str, bytes]:
    return {v: b for ids, blobs in vs.model_states(model) for v, b in zip(ids, blobs, strict=True)}


async def test_a_viewer_read_from_the_store_ranks_as_with_the_model_in_memory() -> None:
    model = replace(synthetic_model(10, 20), version="m1")
    now = time.time()
    rooms = _rooms(now)
    in_memory = await _scores(Scorer(model), rooms, now, None, [])
    serving = Scorer(vs.without_viewers(model))
    assert vs.in_store(serving) and not serving.is_known("viewer-2")
    stored = vs.decode("m1", _states(model)["viewer-2"])
    from_store = await _scores(serving, rooms, now, stored, [])
    np.testing.assert_allclose(from_store.candidates.score, in_memory.candidates.score, rtol=1e-6)
    np.testing.assert_allclose(from_store.candidates.model_score, in_memory.candidates.model_score, rtol=1e-6)


async def test_a_state_of_another_model_version_is_never_combined_with_this_ones_items() -> None:
    """The switch is atomic per request: a state read under the previous version (the model changed
    between the session's round trip and ranking) counts as no state at all under the new one."""
    old = replace(synthetic_model(10, 20), version="old")
    new = replace(synthetic_model(10, 20), version="new")
    new.user_repr = -new.user_repr  # a different model: its vectors differ
    now = time.time()
    rooms = _rooms(now)
    serving = Scorer(vs.without_viewers(new))
    stale = vs.decode("old", _states(old)["viewer-2"])
    got = await _scores(serving, rooms, now, stale, [])
    none = await _scores(serving, rooms, now, vs.ViewerState.missing("new"), [])
    np.testing.assert_array_equal(got.candidates.score, none.candidates.score)
    assert got.viewer.version == "new" and not got.viewer.found
    assert stale.vector is not None
    mixed = Scorer.score_vector(serving.prepare(rooms), stale.vector)  # type: ignore[arg-type]
    assert not np.allclose(got.candidates.model_score, mixed)  # the old vector was not used with new items


async def test_a_viewer_the_store_does_not_know_is_ranked_by_popularity_and_its_visits() -> None:
    from ranking.ranker import baseline_ranker

    model = replace(synthetic_model(10, 20), version="m2")
    model.ranker_weights = baseline_ranker("rep_live_pop").weights  # a ranker that rewards what was watched
    serving = Scorer(vs.without_viewers(model))
    now = time.time() + 600  # visits (enter and leave) after the model's round
    rooms = _rooms(now)
    missing = vs.ViewerState.missing("m2")
    plain = await _scores(serving, rooms, now, missing, [])
    c = plain.candidates
    assert np.isfinite(c.score).all() and plain.model_version == "m2"
    np.testing.assert_array_equal(c.model_score, serving.prepare(rooms).popularity)  # type: ignore[arg-type]  # popularity, no vector
    # A room of a merchant it watched since the round (the session's visits) comes first.
    favourite = int(np.argmin(c.score))
    merchant = rooms[favourite].merchant_id
    visit = RecentVisit(f"room_{favourite}", merchant, 240_000, int(now * 1000) - 1_000, False)
    watched = await _scores(serving, rooms, now, missing, [visit])
    assert rooms[int(np.argmax(watched.candidates.score))].merchant_id == merchant


async def test_promotion_writes_the_viewers_to_redis_and_the_api_holds_none(
    migrated: Any, operator_headers: Any, viewer_headers: Any, market_of: Any
) -> None:
    async with running_app(migrated, Tuning(model_poll_s=0.2, feed=FeedTuning(config_poll_s=0.5))) as client:
        market = market_of(client)
        await market.populate(merchants=2, rooms_each=2, categories=("food",))
        model = replace(synthetic_model(50, 20), version=f"m-vs-{secrets.token_hex(3)}")
        ranking = client.app.services.ranking
        await ranking.registry.register(model, {})
        r = await client.post(f"/v1/ops/models/{model.version}/promote", headers=operator_headers)
        assert r.status_code == 200, r.text
        assert await ranking.states.ready(model.version)  # written before the promotion
        deadline = time.monotonic() + 5
        while ranking.watcher.version != model.version and time.monotonic() < deadline:
            await client.get("/healthz")
            await asyncio.sleep(0.05)
        scorer = ranking.watcher.scorer
        assert scorer is not None and vs.in_store(scorer)  # no viewer vectors or histories in the API
        redis = Redis.from_url(client.app.settings.redis_url)
        try:
            stored = vs.ViewerStateStore.parse(
                model.version, await redis.get(vs.state_key(model.version, "viewer-7"))
            )
        finally:
            await redis.aclose()
        assert (
            stored.found and stored.vector is not None and np.array_equal(stored.vector, model.user_repr[7])
        )
        body = await start_session(client, viewer_headers("viewer-7"), "viewer-7")
        assert body["model_version"] == model.version and body["rooms"]
