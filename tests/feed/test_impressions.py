"""Impressions: every served room reaches viewer-events on the real Kafka, pages served together in one flush."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from events.vocabulary import VIEWER_EVENTS
from feed.impressions import ImpressionPublisher, impression_events
from tests.feed.conftest import start_session

META = {"variant": "base", "experiment_id": None, "config_version": 1, "model_version": None}


def page_of(n: int) -> list[dict[str, Any]]:
    return [
        {"room_id": f"room_{i:016x}", "merchant_id": f"mer_{i:016x}", "position": i, "boosted": i == 0}
        for i in range(n)
    ]


async def consumed(
    topic: str, bootstrap: str, session_ids: set[str], want: int, timeout: float = 20
) -> list[dict[str, Any]]:
    """The impression events of `session_ids` on `topic`, read from the beginning until `want` arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"t-imp-{secrets.token_hex(4)}",
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event.get("type") == "impression" and event.get("session_id") in session_ids:
                        found.append(event)
    finally:
        await consumer.stop()
    return found


async def test_pages_served_together_leave_in_one_flush_and_all_reach_kafka(feed_app, settings):
    publisher: ImpressionPublisher = feed_app.app.services.feed.impressions
    await asyncio.wait_for(feed_app.app.resources.producer_ready.wait(), 30)
    await asyncio.sleep(0.05)  # whatever earlier tests queued is flushed
    flushes = 0
    drain = publisher._drain_once

    async def counted() -> None:
        nonlocal flushes
        flushes += 1
        await drain()

    publisher._drain_once = counted  # type: ignore[method-assign]
    try:
        sessions = {f"ses_{secrets.token_hex(8)}" for _ in range(20)}
        now_ms = int(time.time() * 1000)
        for session_id in sessions:  # 20 pages within one linger, as under load
            publisher.publish(impression_events("viewer-imp", session_id, page_of(10), META, now_ms))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not publisher.queue and flushes:
                break
    finally:
        publisher._drain_once = drain  # type: ignore[method-assign]
    assert flushes == 1
    events = await consumed(settings.topic(VIEWER_EVENTS), settings.kafka_bootstrap, sessions, 200)
    assert len(events) == 200
    assert len({e["event_id"] for e in events}) == 200


async def test_every_room_a_page_serves_becomes_one_impression(feed_app, market_of, viewer_headers, settings):
    market = market_of(feed_app)
    await market.populate(2, 4, ("beauty", "food"))
    headers = viewer_headers("viewer-imp-api")
    body = await start_session(feed_app, headers, "viewer-imp-api", count=3)
    r = await feed_app.get(f"/v1/sessions/{body['session_id']}/feed", params={"count": 4}, headers=headers)
    assert r.status_code == 200, r.text
    served = [room["room_id"] for room in body["rooms"]] + [room["room_id"] for room in r.json()["rooms"]]
    events = await consumed(
        settings.topic(VIEWER_EVENTS), settings.kafka_bootstrap, {body["session_id"]}, len(served)
    )
    assert sorted(e["room_id"] for e in events) == sorted(served)
    assert all(e["viewer_id"] == "viewer-imp-api" for e in events)
