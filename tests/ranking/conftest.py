"""Fixtures for ranking tests: a small simulated marketplace, its training set, a migrated pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ranking.dataset import InteractionLog, TrainingSet, build_training_set, from_simulator
from ranking.model import ModelParams, train_model
from ranking.offline import merchant_features
from ranking.replay import Schedule, Target, replay
from ranking.scorer import Scorer
from simulator import Marketplace

DAY_MS = 86_400_000


@pytest.fixture(scope="session")
def small_market() -> Marketplace:
    return Marketplace(seed=11, n_merchants=300, n_viewers=4_000, days=4)


@pytest.fixture(scope="session")
def small_log(small_market: Marketplace) -> InteractionLog:
    return from_simulator(small_market)


@pytest.fixture(scope="session")
def small_training(small_market: Marketplace, small_log: InteractionLog) -> TrainingSet:
    until = small_market.config.start_ms + 3 * DAY_MS
    return build_training_set(small_log, merchant_features(small_market.rooms), until)


@pytest.fixture(scope="session")
def small_schedule(small_market: Marketplace) -> Schedule:
    w = small_market.world
    return Schedule(w.r_merchant, w.r_start, w.r_end, [r.features for r in small_market.rooms])


@pytest.fixture(scope="session")
def small_targets(
    small_market: Marketplace,
    small_log: InteractionLog,
    small_training: TrainingSet,
    small_schedule: Schedule,
) -> list[Target]:
    """Day 3's enters replayed against a small LightFM model trained on days 0-2."""
    model = train_model(
        small_training, ModelParams(no_components=8, epochs=2, num_threads=1), "t", progress=False
    )
    day3 = small_market.config.start_ms + 3 * DAY_MS
    (found,) = replay(
        small_log,
        small_schedule,
        merchant_features(small_market.rooms),
        Scorer(model),
        [(day3, day3 + DAY_MS)],
        [300],
    )
    return found


@pytest.fixture(scope="session")
async def ranking_pool(settings: Any) -> AsyncIterator[Any]:
    """A pool on this session's fresh database with every migration applied (0300 included)."""
    import asyncpg

    from roomfeed.db import migrate

    await migrate(settings.database_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
