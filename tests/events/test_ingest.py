"""POST /v1/events on the real broker, through the realtime and archive sinks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from events.consumer import SinkRunner
from events.live_stats import LiveStats
from tests.events.conftest import eventually, make_event, tag


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def archived(pool: asyncpg.Pool, room: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM interactions WHERE room_id = $1", room))


def visit(viewer: str, room: str, dwell_ms: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        make_event("impression", viewer, room, ts=now - 3000, position=1),
        make_event("enter", viewer, room, ts=now - 2500, source="feed"),
        make_event("like", viewer, room, ts=now - 2000),
        make_event(
            "purchase",
            viewer,
            room,
            ts=now - 1500,
            order_id=f"o{tag()}",
            product_id="prd_1",
            amount=25.5,
            currency="CNY",
        ),
        make_event("leave", viewer, room, ts=now - 1000, dwell_ms=dwell_ms),
    ]


async def test_ingest_reaches_both_sinks(
    app_client: httpx.AsyncClient,
    viewer_token: Callable[[str], str],
    worker: list[SinkRunner],
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    room = f"room_{tag()}"
    viewers = [f"v{tag()}" for _ in range(3)]
    for i, viewer in enumerate(viewers):
        response = await app_client.post(
            "/v1/events", json=visit(viewer, room, 1000 + 4000 * i), headers=auth(viewer_token(viewer))
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 5, "rejected": []}

    stats = LiveStats(redis)
    room_stats = (await eventually(lambda: _stats_when(stats, room, "orders_1h", 3)))[room]
    assert (room_stats.impressions_1h, room_stats.enters_1h, room_stats.enters_1m) == (3, 3, 3)
    assert room_stats.unique_visitors_1h == 3 and room_stats.likes_1h == 3
    assert room_stats.swipe_aways_1h == 1  # the 1 s visit
    assert room_stats.gmv_1h == 76.5
    assert room_stats.conversion_per_visit == 1.0 and room_stats.enter_rate == 1.0

    await eventually(lambda: _equals(archived(pool, room), 15))
    row = await pool.fetchrow(
        "SELECT type, viewer_id, session_id, merchant_id, dwell_ms, amount, payload FROM interactions "
        "WHERE room_id = $1 AND type = 'purchase' AND viewer_id = $2",
        room,
        viewers[0],
    )
    assert row["amount"] == 25.5 and row["merchant_id"] is None  # no room directory knows this room
    assert row["payload"]["currency"] == "CNY" and "order_id" in row["payload"]
    assert (
        await pool.fetchval(
            "SELECT dwell_ms FROM interactions WHERE room_id = $1 AND type = 'leave' AND viewer_id = $2",
            room,
            viewers[2],
        )
        == 9000
    )

    recent = await stats.viewer_recent(viewers[0])
    assert [(v.room_id, v.dwell_ms, v.swiped_away) for v in recent] == [(room, 1000, True)]


async def _stats_when(stats: LiveStats, room: str, field: str, value: int) -> Any:
    result = await stats.rooms([room])
    return result if getattr(result[room], field) >= value else None


async def _equals(awaitable: Any, expected: int) -> bool:
    return bool(await awaitable == expected)


async def test_bad_events_are_rejected_by_index_and_the_good_ones_accepted(
    app_client: httpx.AsyncClient,
    viewer_token: Callable[[str], str],
    worker: list[SinkRunner],
    pool: asyncpg.Pool,
) -> None:
    viewer, room = f"v{tag()}", f"room_{tag()}"
    batch = [
        make_event("enter", viewer, room),
        make_event("leave", viewer, room),  # no dwell_ms
        make_event("enter", "someone_else", room),
        make_event("like", viewer, room, ts=int(time.time() * 1000) + 3600_000),
        make_event("heartbeat", viewer, room),
    ]
    response = await app_client.post("/v1/events", json=batch, headers=auth(viewer_token(viewer)))
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["error"]["code"], r["error"]["field"]) for r in body["rejected"]] == [
        (1, "validation_failed", "dwell_ms"),
        (2, "viewer_mismatch", "viewer_id"),
        (3, "validation_failed", "ts"),
    ]
    # Each rejection in the API's one error shape too: `fields` names the bad field and what is wrong.
    assert all(r["error"]["fields"] == {r["error"]["field"]: r["error"]["message"]} for r in body["rejected"])
    await eventually(lambda: _equals(archived(pool, room), 2))


async def test_batches_are_bounded_and_viewer_only(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    viewer = f"v{tag()}"
    too_many = [make_event("heartbeat", viewer, "room_x") for _ in range(501)]
    response = await app_client.post("/v1/events", json=too_many, headers=auth(viewer_token(viewer)))
    assert response.status_code == 413
    response = await app_client.post("/v1/events", json={"not": "a list"}, headers=auth(viewer_token(viewer)))
    assert response.status_code == 422 and response.json()["error"]["fields"] == {"body": "must be a list"}
    response = await app_client.post("/v1/events", json=[make_event("enter", viewer, "room_x")])
    assert response.status_code == 401


async def test_duplicate_event_ids_are_counted_once(
    app_client: httpx.AsyncClient,
    viewer_token: Callable[[str], str],
    worker: list[SinkRunner],
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    viewer, room = f"v{tag()}", f"room_{tag()}"
    batch = [make_event("enter", viewer, room), make_event("like", viewer, room)]
    for _ in range(3):  # a client retrying the same batch
        response = await app_client.post("/v1/events", json=batch + batch, headers=auth(viewer_token(viewer)))
        assert response.status_code == 202 and response.json()["accepted"] == 4
    marker = make_event("share", viewer, room)
    await app_client.post("/v1/events", json=[marker], headers=auth(viewer_token(viewer)))

    stats = LiveStats(redis)
    result = (await eventually(lambda: _stats_when(stats, room, "shares_1h", 1)))[room]
    await eventually(lambda: _equals(archived(pool, room), 3))
    assert (result.enters_1h, result.likes_1h) == (1, 1)
    assert await archived(pool, room) == 3


async def test_consumer_lag_is_on_metrics(app_client: httpx.AsyncClient, worker: list[SinkRunner]) -> None:
    response = await app_client.get("/metrics")
    assert response.status_code == 200
    lines = [line for line in response.text.splitlines() if line.startswith("roomfeed_consumer_lag{")]
    assert any('group="' + worker[0].settings.group("sink-realtime") + '"' in line for line in lines), lines
    assert any('group="' + worker[0].settings.group("sink-archive") + '"' in line for line in lines), lines
