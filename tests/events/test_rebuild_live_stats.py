"""`roomfeed rebuild --live-stats`: Redis lost → live stats replayed from Kafka equal what they were,
and the rebuild refuses to run beside a live worker (whose watermarks would skip the replay)."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace

import orjson
import pytest
from redis.asyncio import Redis

from events.consumer import SinkRunner
from events.live_stats import LiveStats
from events.realtime import RealtimeSink
from events.rebuild import rebuild_live_stats, worker_presence
from events.vocabulary import VIEWER_EVENTS
from roomfeed.kafka import ensure_topics, make_producer
from roomfeed.settings import Settings
from tests.events.conftest import make_event
from tests.support import PrivateServers


async def _produce(settings: Settings, events: list[dict[str, object]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for event in events:
            value = {**event, "merchant_id": None, "received_at": event["ts"]}
            await producer.send(
                settings.topic(VIEWER_EVENTS), orjson.dumps(value), key=str(event["viewer_id"]).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _until(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_live_stats_are_replayed_from_kafka_after_redis_is_lost(
    settings: Settings, private_servers: PrivateServers
) -> None:
    server = private_servers.redis()
    server.start()
    server.wait_ready()
    redis = Redis.from_url(server.url())
    own = replace(settings, redis_url=server.url(), kafka_prefix=f"rb{secrets.token_hex(3)}.")
    await ensure_topics(own, {VIEWER_EVENTS: 3})
    rooms = [f"room_rb{i}" for i in range(3)]
    events = []
    for n in range(60):
        viewer, room = f"v{n % 17}", rooms[n % 3]
        events.append(make_event("enter", viewer, room))
        events.append(make_event("leave", viewer, room, dwell_ms=500 + 1000 * (n % 5)))
    await _produce(own, events)

    # What `roomfeed worker` does: hold the worker-presence lock while its realtime sink runs.
    presence = worker_presence(own, ["realtime", "archive"], asyncio.Event())
    await presence.__aenter__()
    worker = SinkRunner(own, RealtimeSink(redis), consumer_options={"session_timeout_ms": 6000})
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        stats = LiveStats(redis)

        async def applied() -> bool:
            return sum(s.enters_1h for s in (await stats.rooms(rooms)).values()) == 60

        await _until(applied)
        before = await stats.rooms(rooms)
        with pytest.raises(RuntimeError, match="stop it first"):
            await rebuild_live_stats(own, redis)
        assert (await stats.rooms(rooms)) == before  # the refusal touched nothing
    finally:
        await worker.stop()
        task.cancel()
        await presence.__aexit__(None, None, None)

    await redis.flushall()
    assert all(s.enters_1h == 0 for s in (await stats.rooms(rooms)).values())
    replays = await rebuild_live_stats(own, redis)
    assert {r.sink for r in replays} == {"realtime", "heat"}
    after = await stats.rooms(rooms)
    for room in rooms:
        assert (after[room].enters_1h, after[room].leaves_1h, after[room].dwell_ms_1h) == (
            before[room].enters_1h,
            before[room].leaves_1h,
            before[room].dwell_ms_1h,
        )
    await redis.aclose()
