"""Viewer state out of the API process: written per model version to Redis before promotion, read per page."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from ranking import viewer_state as vs
from ranking.registry import ModelRegistry, ModelWatcher
from ranking.scorer import Scorer
from tests.synthetic_model import synthetic_model


@pytest.fixture
async def redis(settings: Any) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _model(viewers: int = 40, merchants: int = 30) -> Any:
    return replace(synthetic_model(viewers, merchants), version=f"vs-{uuid.uuid4().hex[:10]}")


def _same(a: vs.ViewerState, b: vs.ViewerState) -> None:
    assert a.version == b.version and a.found == b.found
    assert (a.vector is None) == (b.vector is None)
    if a.vector is not None and b.vector is not None:
        assert np.array_equal(a.vector, b.vector) and a.bias == pytest.approx(b.bias)
    assert np.array_equal(a.history.merchants, b.history.merchants)
    np.testing.assert_allclose(a.history.stats, b.history.stats)


def test_a_state_reads_back_as_the_model_has_it() -> None:
    model = _model()
    scorer = Scorer(model)
    for ids, blobs in vs.model_states(model, chunk=7):
        for viewer, blob in zip(ids, blobs, strict=True):
            _same(vs.decode(model.version, blob), vs.from_model(scorer, viewer))


async def test_published_state_is_what_the_model_carries_and_is_ready_only_when_whole(redis: Redis) -> None:
    model = _model()
    store = vs.ViewerStateStore(redis, batch=8)
    assert not await store.ready(model.version)
    published = await store.publish(model)
    assert published.viewers == 40 and await store.ready(model.version)
    scorer = Scorer(model)
    for viewer in ("viewer-0", "viewer-17", "viewer-39"):
        _same(await store.get(model.version, viewer), vs.from_model(scorer, viewer))
    missing = await store.get(model.version, "nobody")
    assert not missing.found and missing.vector is None and len(missing.history) == 0


async def test_older_versions_are_deleted_and_the_kept_ones_stay(redis: Redis) -> None:
    store = vs.ViewerStateStore(redis)
    a, b, c = _model(10), _model(10), _model(10)
    for m in (a, b, c):
        await store.publish(m)
    deleted = await store.retire({b.version, c.version})
    assert deleted >= 10  # a's viewers (and any version other tests left)
    assert not await store.ready(a.version) and (await store.get(a.version, "viewer-1")).found is False
    assert (await store.get(b.version, "viewer-1")).found and (await store.get(c.version, "viewer-1")).found
    assert set(await store.versions()) >= {b.version, c.version} and a.version not in await store.versions()


async def test_registry_keeps_the_viewers_apart_from_what_api_processes_load(ranking_pool: Any) -> None:
    model = _model()
    registry = ModelRegistry(ranking_pool)
    await registry.register(model, {})
    serving = await registry.load(model.version, viewers=False)
    assert serving.user_ids == [] and serving.user_repr.shape[0] == 0
    assert serving.histories is not None and serving.histories.viewer_ids == []
    assert serving.histories.until_ms == model.histories.until_ms  # the feed adds the visits since
    assert np.array_equal(serving.item_repr, model.item_repr) and serving.table is not None
    whole = await registry.load(model.version)
    assert whole.user_ids == model.user_ids and np.array_equal(whole.user_repr, model.user_repr)
    assert whole.histories is not None and whole.histories.viewer_ids == model.histories.viewer_ids
    assert np.array_equal(whole.histories.stats, model.histories.stats)


async def test_an_api_process_holds_no_viewer_when_the_store_has_them(
    ranking_pool: Any, redis: Redis
) -> None:
    registry = ModelRegistry(ranking_pool)
    store = vs.ViewerStateStore(redis)
    published, unpublished = _model(), _model()
    for m in (published, unpublished):
        await registry.register(m, {})
    await store.publish(published)
    await registry.promote(published.version, "test")
    watcher = ModelWatcher(registry, interval_s=0.05, states=store)
    await watcher.start()
    try:
        assert watcher.scorer is not None and vs.in_store(watcher.scorer)
        # A model whose viewers are not in the store (Redis lost them) serves with them in memory.
        await registry.promote(unpublished.version, "test")
        for _ in range(100):
            if watcher.version == unpublished.version:
                break
            await asyncio.sleep(0.05)
        assert watcher.version == unpublished.version and not vs.in_store(watcher.scorer)
        assert watcher.scorer.is_known("viewer-3")
    finally:
        await watcher.stop()
