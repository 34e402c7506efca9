"""Rebuild the events domain's Redis state (live stats, viewer history, room heat) by replaying Kafka.

Redis holds only derived state; the `viewer-events` topic is its source. A rebuild deletes every
`rf:{ev}:*` key, then runs the realtime and heat sinks in fresh consumer groups from offset 0 up to
the end offsets taken when it began. The worker's own sinks must be stopped meanwhile: their
per-partition watermarks would otherwise mark the records below their first new offset as applied.
Once the worker restarts it resumes from its committed offsets, and everything the replay already
applied is skipped by the same watermarks, so nothing counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiokafka import TopicPartition
from redis.asyncio import Redis

from events.consumer import Sink, SinkRunner
from events.heat_sink import RoomHeatSink
from events.keys import PREFIX
from events.realtime import RealtimeSink
from events.tombstones import Tombstones
from events.vocabulary import VIEWER_EVENTS
from roomfeed.reach import patiently
from roomfeed.settings import Settings


@dataclass(frozen=True)
class Replay:
    sink: str
    records_to: dict[int, int]  # partition → end offset replayed up to
    seconds: float


# The worker holds this advisory lock in shared mode for its whole life (a dead worker's session,
# and so its lock, ends with it); a rebuild needs it exclusively, so it cannot run beside a worker.
WORKER_LOCK = 72_002_001
REPLAYED_SINKS = {"realtime", "heat"}


@contextlib.asynccontextmanager
async def worker_presence(settings: Settings, sinks: list[str], stop: asyncio.Event) -> AsyncIterator[None]:
    """Held by `roomfeed worker` while it runs sinks that a rebuild replays. A worker that starts while
    PostgreSQL restarts waits for it (until `stop`) instead of exiting."""
    if not REPLAYED_SINKS & set(sinks):
        yield
        return
    conn = await patiently(lambda: asyncpg.connect(settings.database_url), settings, stop)
    if conn is None:  # stopped before PostgreSQL answered: nothing to hold
        yield
        return
    try:
        await conn.execute("SELECT pg_advisory_lock_shared($1)", WORKER_LOCK)
        yield
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def no_worker_running(settings: Settings) -> AsyncIterator[None]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", WORKER_LOCK):
            raise RuntimeError(
                "a `roomfeed worker` with the realtime or heat sink is running: stop it first "
                "(its watermarks would make the replay skip records)"
            )
        yield
    finally:
        await conn.close()


async def clear(redis: Redis) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{PREFIX}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await redis.delete(*batch)
            batch.clear()
    if batch:
        deleted += await redis.delete(*batch)
    return deleted


async def replay(
    settings: Settings, sink: Sink, timeout_s: float = 600.0, tombstones: Tombstones | None = None
) -> Replay:
    """Run `sink` in a fresh group from offset 0 until it has committed the end offsets seen at start
    (erased viewers' records left out when `tombstones` are given)."""
    started = time.monotonic()
    runner = SinkRunner(
        settings,
        sink,
        (VIEWER_EVENTS,),
        group=f"rebuild-{sink.name}-{secrets.token_hex(4)}",
        tombstones=tombstones,
    )
    await runner.start()
    task = asyncio.create_task(runner.run())
    consumer = runner.consumer
    assert consumer is not None
    topic = settings.topic(VIEWER_EVENTS)
    ends: dict[TopicPartition, int] | None = None
    try:
        while time.monotonic() - started < timeout_s:
            if task.done():
                task.result()  # the runner failed: raise its error
            assigned = consumer.assignment()
            partitions = consumer.partitions_for_topic(topic) or set()
            if ends is None and partitions and len(assigned) == len(partitions):
                ends = await consumer.end_offsets(list(assigned))
            if ends is not None:
                committed = {tp: await consumer.committed(tp) or 0 for tp in ends}
                if all(committed[tp] >= end for tp, end in ends.items()):
                    return Replay(
                        sink.name, {tp.partition: end for tp, end in ends.items()}, time.monotonic() - started
                    )
            await asyncio.sleep(0.25)
        raise TimeoutError(f"the {sink.name} replay did not reach the end offsets {ends} in {timeout_s}s")
    finally:
        await runner.stop()
        task.cancel()


async def rebuild_live_stats(settings: Settings, redis: Redis) -> list[Replay]:
    """Delete events' Redis state and replay it from Kafka (refuses while a worker runs those sinks)."""
    async with no_worker_running(settings):
        await clear(redis)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            tombstones = Tombstones(pool)  # a rebuild must not bring erased viewers back
            return [
                await replay(settings, RealtimeSink(redis), tombstones=tombstones),
                await replay(settings, RoomHeatSink(redis), tombstones=tombstones),
            ]
        finally:
            await pool.close()
