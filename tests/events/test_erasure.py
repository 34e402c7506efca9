"""Erasure (`DELETE /v1/ops/viewers/{id}`) on the real services: history, sessions, blocks,
attributions, features and model vectors go; verified orders stay, anonymised, and the merchant's
books do not change; a replay of the topic does not bring the viewer's events back (tombstone)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
from redis.asyncio import Redis

from events.archive import ArchiveSink
from events.consumer import SinkRunner
from events.live_stats import LiveStats
from events.tombstones import Tombstones
from ranking.model import RankingModel
from ranking.registry import ModelRegistry
from ranking.viewer_state import ViewerStateStore
from roomfeed.auth import create_key
from roomfeed.settings import Settings
from tests.events.conftest import eventually, running

pytestmark = pytest.mark.timeout(180)


def _model(version: str, users: list[str]) -> RankingModel:
    k, rng = 4, np.random.default_rng(1)
    features = [f"id:{u}" for u in users]
    return RankingModel(
        version=version,
        params={},
        user_ids=users,
        merchant_ids=["m1"],
        user_feature_names=features,
        item_feature_names=["id:m1"],
        user_repr=rng.random((len(users), k), dtype=np.float32),
        user_bias=np.zeros(len(users), dtype=np.float32),
        item_repr=rng.random((1, k), dtype=np.float32),
        item_bias=np.zeros(1, dtype=np.float32),
        user_feature_emb=rng.random((len(features), k), dtype=np.float32),
        user_feature_bias=np.zeros(len(features), dtype=np.float32),
        item_feature_emb=rng.random((1, k), dtype=np.float32),
        item_feature_bias=np.zeros(1, dtype=np.float32),
        merchant_popularity=np.ones(1, dtype=np.float32),
    )


async def test_erasure_forgets_the_viewer_keeps_the_books_and_survives_a_replay(
    app_client: httpx.AsyncClient,
    viewer_token: Any,
    worker: list[SinkRunner],
    pool: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
) -> None:
    await eventually(lambda: _assigned(worker), timeout=30)
    _, op_key = await create_key(pool, "operator", label="erasure test")
    op = {"Authorization": f"Bearer {op_key}"}
    r = await app_client.post("/v1/ops/merchants", json={"name": "erasure shop"}, headers=op)
    merchant_id, mh = r.json()["merchant_id"], {"Authorization": f"Bearer {r.json()['key']}"}
    other_merchant = (await app_client.post("/v1/ops/merchants", json={"name": "other"}, headers=op)).json()[
        "merchant_id"
    ]
    product = (
        await app_client.post("/v1/products", json={"title": "t", "price": 10, "currency": "CNY"}, headers=mh)
    ).json()
    room = (
        await app_client.post(
            "/v1/rooms",
            json={"title": "r", "category": "beauty", "stream_url": "https://live.example/e.m3u8"},
            headers=mh,
        )
    ).json()["room_id"]
    assert (await app_client.post(f"/v1/rooms/{room}/live", headers=mh)).status_code == 200
    code = (await app_client.post("/v1/codes", json={}, headers=mh)).json()["code"]
    viewer, bystander = f"er{secrets.token_hex(4)}", f"by{secrets.token_hex(4)}"
    vh = {"Authorization": f"Bearer {viewer_token(viewer)}"}
    r = await app_client.post("/v1/sessions", json={"viewer_id": viewer, "entry": {"code": code}}, headers=vh)
    assert r.status_code == 201, r.text
    session = r.json()["session_id"]
    assert (
        await app_client.post("/v1/viewers/me/blocks", json={"merchant_id": other_merchant}, headers=vh)
    ).status_code == 201
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": f"{viewer}-{n}",
            "type": kind,
            "viewer_id": viewer,
            "session_id": session,
            "room_id": room,
            "ts": now - 1000 + n,
            **extra,
        }
        for n, (kind, extra) in enumerate([("enter", {}), ("like", {}), ("leave", {"dwell_ms": 9000})])
    ]
    r = await app_client.post("/v1/events", json=events, headers=vh)
    assert r.json()["accepted"] == 3
    count = "SELECT count(*) FROM interactions WHERE viewer_id = $1 AND event_id LIKE $1 || '-%'"
    await eventually(lambda: _equals(pool, count, viewer, 3), timeout=30)
    await eventually(lambda: LiveStats(redis).viewer_recent(viewer), timeout=30)
    order = {
        "order_id": f"o-{viewer}",
        "product_id": product["product_id"],
        "quantity": 1,
        "unit_price": 10,
        "currency": "CNY",
        "ordered_at": now,
        "viewer_id": viewer,
    }
    assert (await app_client.post("/v1/orders", json=order, headers=mh)).status_code == 201
    registry = ModelRegistry(pool)
    version = f"erasure-{secrets.token_hex(3)}"
    await registry.register(_model(version, [bystander, viewer]), {})
    states = ViewerStateStore(redis)
    await states.publish(_model(version, [bystander, viewer]))  # as a promotion writes them
    assert (await states.get(version, viewer)).found
    ledger_before = (await app_client.get(f"/v1/merchants/{merchant_id}/ledger", headers=mh)).json()
    assert ledger_before["attributed"]["orders"] == 1

    assert (await app_client.delete(f"/v1/ops/viewers/{viewer}", headers=mh)).status_code == 403
    r = await app_client.delete(f"/v1/ops/viewers/{viewer}", headers=op)
    assert r.status_code == 200, r.text
    removed = r.json()["removed"]
    assert removed["interactions"] >= 3 and removed["sessions"] == 1 and removed["models_rewritten"] >= 1

    for query in (
        count,
        "SELECT count(*) FROM feed_sessions WHERE viewer_id = $1",
        "SELECT count(*) FROM feed_blocks WHERE viewer_id = $1",
        "SELECT count(*) FROM attributions WHERE viewer_id = $1",
        "SELECT count(*) FROM alliance_viewers WHERE viewer_id = $1",
        "SELECT count(*) FROM orders WHERE viewer_id = $1",
        "SELECT count(*) FROM attributed_order_entries WHERE viewer_id = $1",
    ):
        assert await pool.fetchval(query, viewer) == 0, query
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE order_id = $1", order["order_id"]) == 1
    ledger_after = (await app_client.get(f"/v1/merchants/{merchant_id}/ledger", headers=mh)).json()
    assert ledger_after["attributed"] == ledger_before["attributed"]
    assert ledger_after["orders"] == ledger_before["orders"]
    assert await LiveStats(redis).viewer_recent(viewer) == []
    assert (await app_client.get(f"/v1/sessions/{session}/feed", headers=vh)).status_code == 404
    model = await registry.load(version)
    assert model.user_ids == [bystander] and model.user_feature_names == [f"id:{bystander}"]
    assert not (await states.get(version, viewer)).found and (await states.get(version, bystander)).found
    assert viewer not in (await registry.load(version, viewers=False)).user_ids
    assert (await app_client.delete(f"/v1/ops/viewers/{viewer}", headers=op)).status_code == 200  # idempotent

    # A replay of the topic by a consumer that lost its dedup marks (event ids pruned, say): the
    # tombstone keeps the erased viewer's events out; without it they would come back.
    await pool.execute(
        "DELETE FROM event_ids WHERE event_id = ANY($1::text[])", [e["event_id"] for e in events]
    )
    archive = ArchiveSink(pool)
    await archive.prepare()
    tombstones = Tombstones(pool)
    replay = SinkRunner(migrated, archive, group=f"replay-{secrets.token_hex(3)}", tombstones=tombstones)
    async with running([replay]):
        await eventually(lambda: _replayed_past(replay, pool, viewer), timeout=30)
    assert await pool.fetchval(count, viewer) == 0
    assert await pool.fetchval("SELECT count(*) FROM interactions WHERE viewer_id = $1", viewer) == 0
    control = SinkRunner(migrated, archive, group=f"control-{secrets.token_hex(3)}")
    async with running([control]):
        await eventually(lambda: _equals(pool, count, viewer, 3), timeout=30)
    await pool.execute("DELETE FROM interactions WHERE viewer_id = $1", viewer)


async def _assigned(runners: list[SinkRunner]) -> bool:
    return all(r.consumer is not None and r.consumer.assignment() for r in runners)


async def _equals(pool: asyncpg.Pool, query: str, viewer: str, want: int) -> bool:
    return bool(await pool.fetchval(query, viewer) == want)


async def _replayed_past(runner: SinkRunner, pool: asyncpg.Pool, viewer: str) -> bool:
    """The replaying group has read the topic to its end (and a moment more for the write)."""
    consumer = runner.consumer
    if consumer is None or not consumer.assignment():
        return False
    ends = await consumer.end_offsets(list(consumer.assignment()))
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    await asyncio.sleep(1.0)
    return True
