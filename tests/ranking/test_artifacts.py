"""Model artifacts as PostgreSQL large objects: chunked both ways, checksummed, unlinked with their
row, and beyond the 1 GB a bytea can hold (slow)."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from ranking import artifacts
from ranking.dataset import TrainingSet
from ranking.model import ModelParams, RankingModel, train_model
from ranking.registry import ModelRegistry
from ranking.viewer_state import without_viewers

PARAMS = ModelParams(no_components=8, epochs=1, num_threads=1, seed=7)


@pytest.fixture(scope="module")
def model(small_training: TrainingSet) -> RankingModel:
    return train_model(small_training, PARAMS, version="artifact-base", progress=False)


async def test_a_model_goes_in_and_out_in_many_chunks(
    ranking_pool: Any, model: RankingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "CHUNK", 4096)  # the real path, many times over
    registry = ModelRegistry(ranking_pool)
    candidate = replace(model, version=f"a-{uuid.uuid4().hex[:8]}")
    version = await registry.register(candidate, {"hr5_ranker": 0.1})
    row = await ranking_pool.fetchrow(
        "SELECT artifact, artifact_oid, artifact_bytes, viewers_oid FROM ranking_models WHERE version = $1",
        version,
    )
    assert row["artifact"] is None and row["artifact_oid"] is not None and row["viewers_oid"] is not None
    # The artifact API processes load has no viewers; they are a large object of their own (viewer_state).
    assert row["artifact_bytes"] == len(without_viewers(candidate).to_bytes()) > 10 * 4096
    loaded = await registry.load(version)
    assert np.array_equal(loaded.item_repr, model.item_repr)
    assert loaded.merchant_ids == model.merchant_ids

    # A changed byte is caught by the checksum.
    await ranking_pool.execute("SELECT lo_put($1, 100, '\\xff00ff'::bytea)", row["artifact_oid"])
    with pytest.raises(ValueError, match="checksum mismatch"):
        await registry.load(version)

    # Deleting the row unlinks its large object (no orphan storage).
    await ranking_pool.execute("DELETE FROM ranking_models WHERE version = $1", version)
    assert not await ranking_pool.fetchval(
        "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = ANY($1::oid[])",
        [row["artifact_oid"], row["viewers_oid"]],
    )


async def test_a_model_registered_as_bytea_still_loads(ranking_pool: Any, model: RankingModel) -> None:
    import hashlib

    blob = model.to_bytes()
    version = f"old-{uuid.uuid4().hex[:8]}"
    await ranking_pool.execute(
        "INSERT INTO ranking_models (version, artifact, checksum) VALUES ($1, $2, $3)",
        version,
        blob,
        hashlib.sha256(blob).hexdigest(),
    )
    assert (await ModelRegistry(ranking_pool).load(version)).merchant_ids == model.merchant_ids


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_an_artifact_beyond_one_gigabyte(ranking_pool: Any) -> None:
    block = os.urandom(64 * 1024 * 1024)
    blob = block * 17 + b"tail"  # 1.07 GiB + 4 bytes: more than a bytea value can hold
    assert len(blob) > 2**30
    async with ranking_pool.acquire() as conn:
        async with conn.transaction():
            oid, written = await artifacts.write(conn, blob)
        try:
            back, read = await artifacts.read(conn, oid, len(blob))
            assert read == written and len(back) == len(blob) and back[-4:] == b"tail"
        finally:
            await conn.execute("SELECT lo_unlink($1)", oid)
