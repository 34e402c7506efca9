"""The alliance sink behind the worker's SinkRunner, on the real Kafka topic: events in, ledger out;
a full replay of the topic by a new consumer group leaves the ledger as it was."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
from redis.asyncio import Redis

from alliance.alliances import AllianceBook, Terms
from alliance.attribution import AttributionBook
from alliance.codes import Attribution
from alliance.consumer import AllianceSink
from alliance.ledger import Ledger
from events.consumer import SinkRunner
from events.vocabulary import VIEWER_EVENTS
from roomfeed.kafka import ensure_topics, make_producer
from roomfeed.settings import Settings


async def consume_until(
    settings: Settings,
    sink: AllianceSink,
    group: str,
    done: Callable[[], Awaitable[bool]],
    timeout: float = 30,
) -> int:
    """Run a SinkRunner (a fresh consumer group reads the topic from the start); returns events written."""
    runner = SinkRunner(settings, sink, group=group)
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not await done():
            await asyncio.sleep(0.2)
    finally:
        await runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return runner.processed


async def test_worker_sink_earns_from_the_topic_and_replay_changes_nothing(
    migrated: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    a, b = f"mer_{secrets.token_hex(8)}", f"mer_{secrets.token_hex(8)}"
    book = AllianceBook(pool)
    alliance = await book.create(a, "Worker test", Terms())
    await book.invite(alliance.alliance_id, a, b)
    await book.join(alliance.alliance_id, b)
    now = time.time()
    viewers = [f"wv{secrets.token_hex(4)}" for _ in range(3)]
    for v in viewers:
        await AttributionBook(pool, redis).attribute(v, "s1", Attribution(a), now - 60)
    ms = int(now * 1000)
    base = {"session_id": "s1", "room_id": "room_b", "merchant_id": b}
    events = [
        e
        for v in viewers
        for e in (
            {**base, "event_id": f"w-{v}-s", "type": "served", "viewer_id": v, "ts": ms, "received_at": ms},
            {
                **base,
                "event_id": f"w-{v}-e",
                "type": "enter",
                "viewer_id": v,
                "ts": ms + 1,
                "received_at": ms + 1,
            },
            {
                **base,
                "event_id": f"w-{v}-l",
                "type": "leave",
                "viewer_id": v,
                "ts": ms + 20_001,
                "received_at": ms + 20_001,
                "dwell_ms": 20_000,
            },
        )
    ]
    await ensure_topics(migrated, {VIEWER_EVENTS: 2})
    producer = make_producer(migrated)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                migrated.topic(VIEWER_EVENTS), orjson.dumps(e), key=str(e["viewer_id"]).encode()
            )
    finally:
        await producer.stop()
    ledger = Ledger(pool)

    async def earned_all() -> bool:
        return sum(x.visits for x in await ledger.balances(a)) >= 3

    await consume_until(
        migrated, AllianceSink(pool, redis), f"alliance-test-{secrets.token_hex(3)}", earned_all
    )
    first = await ledger.statement(a)
    assert first["contributed_visits"] == 3 and first["earned"] == 9.0

    sink = AllianceSink(pool, redis)
    seen: list[str] = []
    original_write = sink.write

    async def spying_write(batch: list[dict[str, object]]) -> None:
        seen.extend(str(e["event_id"]) for e in batch)
        await original_write(batch)

    sink.write = spying_write  # type: ignore[method-assign]

    async def replayed() -> bool:
        return all(e["event_id"] in seen for e in events)

    await consume_until(migrated, sink, f"alliance-replay-{secrets.token_hex(3)}", replayed)
    assert await replayed()
    assert await ledger.statement(a) == first
