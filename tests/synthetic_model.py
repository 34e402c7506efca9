"""A synthetic model for the feed's tests and benchmarks: random LightFM factors and a random learned
ranker (weights on every column, a merchant table with co-visitation, 8 merchants of history per
viewer), so the feed pays for all of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CATEGORIES = ("beauty", "fashion", "food", "home", "digital", "sports", "baby", "books")


def synthetic_model(viewers: int, merchants: int, categories: Sequence[str] = CATEGORIES, k: int = 32) -> Any:
    """A promotable model of random factors and a random learned ranker over `viewers` x `merchants`
    (ids `viewer-<i>`, `mer_<16 hex>`), seeded: what the feed tests and bench_feed serve."""
    import numpy as np

    from ranking.model import RankingModel

    rng = np.random.default_rng(5)
    features = [f"cat:{c}" for c in categories]
    return RankingModel(
        version="bench-synthetic",
        params={},
        user_ids=[f"viewer-{i}" for i in range(viewers)],
        merchant_ids=[f"mer_{i:016x}" for i in range(merchants)],
        user_feature_names=[],
        item_feature_names=features,
        user_repr=rng.normal(size=(viewers, k)).astype(np.float32),
        user_bias=np.zeros(viewers, np.float32),
        item_repr=rng.normal(size=(merchants, k)).astype(np.float32),
        item_bias=rng.normal(size=merchants).astype(np.float32),
        user_feature_emb=np.zeros((0, k), np.float32),
        user_feature_bias=np.zeros(0, np.float32),
        item_feature_emb=rng.normal(size=(len(features), k)).astype(np.float32),
        item_feature_bias=np.zeros(len(features), np.float32),
        merchant_popularity=rng.random(merchants).astype(np.float32),
        **_ranker_parts(rng, viewers, merchants, categories),
    )


def _ranker_parts(rng: Any, viewers: int, merchants: int, categories: Sequence[str]) -> dict[str, Any]:
    """A learned ranker's share of the artifact (weights on every column, the merchant table with
    co-visitation, 8 merchants of history per viewer), so the feed pays for all of it."""
    import time

    import numpy as np
    import scipy.sparse as sp

    from ranking.history import STATS, ViewerHistories
    from ranking.ranker import FEATURES, POPULARITY_HALF_LIVES_MS, MerchantTable

    now_ms = int(time.time() * 1000)
    per, neighbours = 8, 20
    cov = sp.csr_matrix(
        (
            rng.random(merchants * neighbours).astype(np.float32),
            rng.integers(0, merchants, merchants * neighbours).astype(np.int32),
            np.arange(0, merchants * neighbours + 1, neighbours),
        ),
        shape=(merchants, merchants),
    )
    cov.sum_duplicates()
    stats = rng.random((viewers * per, len(STATS))).astype(np.float32) * 5
    merchants_of = np.sort(rng.integers(0, merchants, (viewers, per)), axis=1).ravel()
    return {
        "ranker_weights": rng.normal(size=len(FEATURES)),
        "ranker_discovery": rng.normal(size=len(FEATURES)),  # a two-part ranker, as the trainer fits them
        "categories": list(categories),
        "table": MerchantTable(
            category=rng.integers(0, len(categories), merchants),
            band=rng.integers(0, 4, merchants),
            pop_count=rng.random(merchants) * 1000,
            pop_decayed=rng.random((merchants, len(POPULARITY_HALF_LIVES_MS))) * 50,
            as_of_ms=now_ms,
            covisit=cov,
            n_categories=len(categories),
            n_bands=4,
        ),
        "histories": ViewerHistories(
            viewer_ids=[f"viewer-{i}" for i in range(viewers)],
            indptr=np.arange(0, viewers * per + 1, per),
            merchants=merchants_of,
            stats=stats,
            last_ms=now_ms - rng.integers(0, 7 * 86_400_000, viewers * per),
            until_ms=now_ms,
        ),
    }
