"""The model registry in PostgreSQL and the watcher an API process runs."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from ranking.dataset import TrainingSet
from ranking.model import ModelParams, RankingModel, train_model
from ranking.registry import ModelRegistry, ModelWatcher

PARAMS = ModelParams(no_components=8, epochs=2, num_threads=1, seed=5)


@pytest.fixture(scope="module")
def base_model(small_training: TrainingSet) -> RankingModel:
    return train_model(small_training, PARAMS, version="base", progress=False)


def fresh(model: RankingModel) -> RankingModel:
    return replace(model, version=f"t-{uuid.uuid4().hex[:10]}")


async def test_registry_refuses_worse_model(ranking_pool: Any, base_model: RankingModel) -> None:
    registry = ModelRegistry(ranking_pool)
    async with ranking_pool.acquire() as conn:  # the session's database: other tests promote models too
        await conn.execute("UPDATE ranking_models SET status = 'retired' WHERE status = 'promoted'")
    good = await registry.register(fresh(base_model), {"hr5_ranker": 0.50, "ndcg10_ranker": 0.40})
    assert await registry.promote_if_not_worse(good)
    worse = await registry.register(fresh(base_model), {"hr5_ranker": 0.45, "ndcg10_ranker": 0.41})
    assert not await registry.promote_if_not_worse(worse)
    assert await registry.promoted_version() == good
    assert (await registry.get(worse)).status == "candidate"  # type: ignore[union-attr]
    # Judged on the same held-out data, the current model may be worse than its recorded numbers.
    assert await registry.promote_if_not_worse(
        worse, current_metrics={"hr5_ranker": 0.40, "ndcg10_ranker": 0.30}
    )
    assert await registry.promoted_version() == worse


async def test_operator_promotes_and_rolls_back(ranking_pool: Any, base_model: RankingModel) -> None:
    registry = ModelRegistry(ranking_pool)
    first = await registry.register(fresh(base_model), {"hr5_ranker": 0.1})
    second = await registry.register(fresh(base_model), {"hr5_ranker": 0.05})
    await registry.promote(first, "op-1")
    await registry.promote(second, "op-1")
    assert (await registry.get(first)).status == "retired"  # type: ignore[union-attr]
    assert await registry.rollback("op-2") == first
    record = await registry.promoted()
    assert record is not None and record.version == first and record.promoted_by == "op-2"
    loaded = await registry.load(first)
    assert np.array_equal(loaded.item_repr, base_model.item_repr)


async def test_promoted_model_reaches_running_watcher(ranking_pool: Any, base_model: RankingModel) -> None:
    registry = ModelRegistry(ranking_pool)
    v1 = await registry.register(fresh(base_model), {})
    await registry.promote(v1, "test")
    seen: list[str] = []
    watcher = ModelWatcher(registry, interval_s=0.1, on_change=lambda s: seen.append(s.model_version))
    await watcher.start()
    try:
        assert watcher.version == v1 and watcher.scorer is not None
        v2 = await registry.register(fresh(base_model), {})
        await registry.promote(v2, "test")
        for _ in range(100):
            if watcher.version == v2:
                break
            await asyncio.sleep(0.05)
        assert watcher.version == v2 and seen == [v1, v2]
        assert watcher.scorer is not None
        scores = watcher.scorer.score(base_model.user_ids[0], [])
        assert scores.shape == (0,)
    finally:
        await watcher.stop()
