"""The realtime sink on a real Redis Cluster (3 masters, 3 replicas): every events key on one slot
(hash tag `{ev}`), the worker's consumer applying a Kafka topic while the master serving that slot
is failed over to its replica; then the same events again (a producer retry): each event counted
exactly once, and the live stats read back through the cluster client."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from dataclasses import replace

import orjson
import pytest

from events.consumer import SinkRunner
from events.keys import PREFIX
from events.live_stats import LiveStats
from events.realtime import RealtimeSink
from events.vocabulary import ENTER, IMPRESSION, LEAVE, LIKE, VIEWER_EVENTS
from roomfeed.kafka import drop_prefixed_topics, ensure_topics, make_producer
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings
from tests.support import PrivateServers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KINDS = (IMPRESSION, ENTER, LIKE, LEAVE)
ROOMS = [f"rc_room_{i}" for i in range(40)]


def _events(tag: str, first: int, count: int, now: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in range(first, first + count):
        kind = KINDS[n % len(KINDS)]
        event: dict[str, object] = {
            "event_id": f"rc_{tag}_{n}",
            "type": kind,
            "viewer_id": f"rc_viewer_{n % 500}",
            "session_id": f"rc_s_{n % 500}",
            "room_id": ROOMS[n % len(ROOMS)],
            "ts": now - 30_000 + n % 1000,
        }
        if kind == LEAVE:
            event["dwell_ms"] = 4_000
        out.append(event)
    return out


async def _produce(settings: Settings, events: list[dict[str, object]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for event in events:
            await producer.send(
                settings.topic(VIEWER_EVENTS), orjson.dumps(event), key=str(event["viewer_id"]).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _caught_up(runner: SinkRunner, task: asyncio.Task[None], timeout: float) -> None:
    """Until the runner has read every record on its partitions (the duplicates apply as nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        assert not task.done(), task
        consumer = runner.consumer
        assert consumer is not None
        parts = consumer.assignment()
        if parts:
            ends = await consumer.end_offsets(list(parts))
            positions = {tp: await consumer.position(tp) for tp in parts}
            if all(positions[tp] >= ends[tp] for tp in parts) and runner.processed >= 12000:
                await asyncio.sleep(1.0)  # the last batch's write finishes
                return
        assert time.monotonic() < deadline, runner.processed
        await asyncio.sleep(0.2)


async def test_realtime_stats_count_each_event_once_through_a_redis_cluster_failover(
    settings: Settings, private_servers: PrivateServers
) -> None:
    cluster = private_servers.redis_cluster(masters=3, replicas_each=1)
    await asyncio.to_thread(cluster.start)
    await asyncio.to_thread(cluster.wait_ready)
    own = replace(
        settings, redis_url=cluster.url(), kafka_prefix=f"trc{secrets.token_hex(3)}.", kafka_partitions=3
    )
    await ensure_topics(own, {VIEWER_EVENTS: 3})
    redis = create_redis(own)
    runner = SinkRunner(own, RealtimeSink(redis), group=f"rc-{secrets.token_hex(3)}")
    tag, now = secrets.token_hex(3), int(time.time() * 1000)
    first, second = _events(tag, 0, 6000, now), _events(tag, 6000, 6000, now)
    try:
        await runner.start()
        task = asyncio.create_task(runner.run())
        await _produce(own, first)
        deadline = time.monotonic() + 60
        while runner.processed < 2000:
            assert time.monotonic() < deadline and not task.done(), runner.processed
            await asyncio.sleep(0.05)
        # Fail over the master that serves every events key, while the sink is applying.
        master = cluster.master_of(f"{PREFIX}x")
        new_master = await asyncio.to_thread(cluster.fail_over, master)
        assert cluster.master_of(f"{PREFIX}x").port == new_master.port != master.port
        await _produce(own, second)
        await _produce(own, first[:1500])  # the same events again (a client's retry): counted once
        await _caught_up(runner, task, timeout=120)
        await runner.stop()
        task.cancel()
        expected = Counter((e["room_id"], e["type"]) for e in first + second)
        stats = await LiveStats(redis).rooms(ROOMS, now_ms=now)
        for room in ROOMS:
            got = stats[room]
            assert got.impressions_1h == expected[(room, IMPRESSION)], room
            assert got.enters_1h == expected[(room, ENTER)], room
            assert got.likes_1h == expected[(room, LIKE)], room
            assert got.leaves_1h == expected[(room, LEAVE)], room
        totals = await LiveStats(redis).totals(now_ms=now)
        assert totals["enters_1h"] == sum(1 for e in first + second if e["type"] == ENTER)
    finally:
        await runner.stop()
        await redis.aclose()
        await drop_prefixed_topics(own.kafka_bootstrap, own.kafka_prefix)
