"""Served records: every served room reaches viewer-events on the real Kafka as `served` (never as an
impression: what was seen is the app's to say), pages served together in one flush."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from feed.impressions import ImpressionPublisher, served_events
from roomfeed.settings import Settings
from tests.feed.conftest import AppClient, Market, on_topic, start_session

META = {"variant": "base", "experiment_id": None, "config_version": 1, "model_version": None}


def page_of(n: int) -> list[dict[str, Any]]:
    return [
        {"room_id": f"room_{i:016x}", "merchant_id": f"mer_{i:016x}", "position": i, "boosted": i == 0}
        for i in range(n)
    ]


async def test_pages_served_together_leave_in_one_flush_and_all_reach_kafka(
    feed_app: AppClient, settings: Settings
) -> None:
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
            publisher.publish(served_events("viewer-imp", session_id, page_of(10), META, now_ms))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not publisher.queue and flushes:
                break
    finally:
        publisher._drain_once = drain  # type: ignore[method-assign]
    assert flushes == 1
    events = await on_topic(settings, sessions, 200, ("served",))
    assert len(events) == 200
    assert len({e["event_id"] for e in events}) == 200


async def test_every_room_a_page_serves_becomes_one_served_record_and_no_impression(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
    settings: Settings,
) -> None:
    await market.populate(2, 4, ("beauty", "food"))
    headers = viewer_headers("viewer-imp-api")
    body = await start_session(feed_app, headers, "viewer-imp-api", count=3)
    r = await feed_app.get(f"/v1/sessions/{body['session_id']}/feed", params={"count": 4}, headers=headers)
    assert r.status_code == 200, r.text
    served = [room["room_id"] for room in body["rooms"]] + [room["room_id"] for room in r.json()["rooms"]]
    events = await on_topic(settings, {body["session_id"]}, len(served) + 1, timeout=5)
    assert sorted(e["room_id"] for e in events if e["type"] == "served") == sorted(served)
    assert all(e["type"] == "served" and e["viewer_id"] == "viewer-imp-api" for e in events)
    assert [e["entry"] for e in events if e.get("entry")] == []  # no entry room in this session


async def test_an_app_cannot_post_served_records(
    feed_app: AppClient, viewer_headers: Callable[[str], dict[str, str]]
) -> None:
    event = {
        "event_id": "fake-served",
        "type": "served",
        "viewer_id": "viewer-forger",
        "session_id": "ses_x",
        "room_id": "room_x",
        "ts": int(time.time() * 1000),
    }
    r = await feed_app.post("/v1/events", json=[event], headers=viewer_headers("viewer-forger"))
    assert r.status_code == 202 and r.json()["accepted"] == 0
    assert r.json()["rejected"][0]["error"]["code"] == "server_only"
