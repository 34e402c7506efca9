"""Consumers on the real broker: replays change nothing, poison goes to the dead-letter topic, and
two worker processes share the partitions and together process every event once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from events.archive import ArchiveSink
from events.consumer import SinkRunner
from events.ingest import Ingest
from events.live_stats import LiveStats
from events.realtime import RealtimeSink
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS
from roomfeed.kafka import ensure_topics, make_producer
from roomfeed.logs import JsonFormatter
from roomfeed.settings import REPO_ROOT, Settings
from tests.events.conftest import NO_OWNERS, eventually, make_event, running, tag


async def redis_state(redis: Redis) -> tuple[dict[bytes, Any], dict[bytes, float]]:
    """Every events key's content, except the dedup marks themselves, and when each key that has a
    TTL expires (epoch seconds). A key listed by SCAN that reached its TTL before it was read (the
    read comes back empty: Redis keeps no empty key) is not in the state: it is gone."""
    state: dict[bytes, Any] = {}
    expires: dict[bytes, float] = {}
    async for key in redis.scan_iter(match="rf:{ev}:*", count=1000):
        if key.startswith(b"rf:{ev}:seen:"):
            continue
        ttl_ms = await redis.pttl(key)
        if ttl_ms > 0:
            expires[key] = time.time() + ttl_ms / 1000
        kind = await redis.type(key)
        content: Any
        if kind == b"hash":
            content = await redis.hgetall(key)
        elif kind == b"list":
            content = await redis.lrange(key, 0, -1)
        elif kind == b"zset":
            content = await redis.zrange(key, 0, -1, withscores=True)
        else:
            content = await redis.dump(key)
        if content:
            state[key] = content
    return state, expires


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = settings.topic(VIEWER_EVENTS)
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return offsets
    finally:
        await stop_quietly(consumer)


async def stop_quietly(consumer: AIOKafkaConsumer) -> None:
    # aiokafka 0.14: stopping a group-less consumer can surface its own cancelled reset task.
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()


async def test_replay_from_offset_zero_changes_nothing(
    worker: list[SinkRunner], migrated: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    producer = make_producer(migrated)
    await producer.start()
    try:
        ingest = Ingest(producer, NO_OWNERS, NO_OWNERS, topic=migrated.topic(VIEWER_EVENTS))
        room, viewer = f"room_{tag()}", f"v{tag()}"
        events = [make_event("enter", viewer, room), make_event("leave", viewer, room, dwell_ms=4000)]
        await ingest.submit(events, viewer)
    finally:
        await producer.stop()
    stats = LiveStats(redis)
    await eventually(lambda: _room_leaves(stats, room))
    await eventually(lambda: pool.fetchval("SELECT count(*) = 2 FROM interactions WHERE room_id = $1", room))
    ends = await end_offsets(migrated)
    await asyncio.sleep(0.5)  # let the last commits land
    before_redis, expires = await redis_state(redis)
    before_rows = await pool.fetchval("SELECT count(*) FROM interactions")

    # Fresh groups start at offset 0 of every partition: the whole topic again, through the same sinks.
    replay_runners = [
        SinkRunner(migrated, RealtimeSink(redis), group=f"replay-rt-{tag()}"),
        SinkRunner(migrated, ArchiveSink(pool), group=f"replay-ar-{tag()}"),
    ]
    async with running(replay_runners):
        await eventually(lambda: _consumed(replay_runners, ends))
    assert await pool.fetchval("SELECT count(*) FROM interactions") == before_rows
    after_redis, _ = await redis_state(redis)
    # A bucket of other tests' events may reach its TTL during the replay (a slow host): gone on its
    # own, not changed by the replay. A key the replay wrote again after it expired still fails.
    expired = {k for k, at in expires.items() if k not in after_redis and at <= time.time()}
    changed = {
        k
        for k in set(before_redis) | set(after_redis)
        if before_redis.get(k) != after_redis.get(k) and b":now" not in k and k not in expired
    }
    assert not changed


async def _room_leaves(stats: LiveStats, room: str) -> bool:
    return (await stats.rooms([room]))[room].leaves_1h == 1


async def _consumed(runners: list[SinkRunner], ends: dict[TopicPartition, int]) -> bool:
    for runner in runners:
        assert runner.consumer is not None
        for tp, end in ends.items():
            if end and tp not in runner.consumer.assignment():
                return False
            if end and await runner.consumer.position(tp) < end:
                return False
    return True


async def test_poison_message_lands_in_the_dead_letter_topic_and_the_consumer_goes_on(
    worker: list[SinkRunner], migrated: Settings, pool: asyncpg.Pool
) -> None:
    topic = migrated.topic(VIEWER_EVENTS)
    marker = tag()
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("roomfeed.events.consumer").addHandler(handler)
    producer = AIOKafkaProducer(bootstrap_servers=migrated.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not json " + marker.encode(), key=b"poison", partition=0)
        await producer.send_and_wait(
            topic, orjson.dumps({"event_id": f"x{marker}", "type": "teleport"}), key=b"poison", partition=0
        )
        room = f"room_{marker}"
        after = make_event("enter", "v_after", room)
        await producer.send_and_wait(topic, orjson.dumps(after), key=b"v_after", partition=0)
    finally:
        await producer.stop()

    await eventually(lambda: pool.fetchval("SELECT count(*) = 1 FROM interactions WHERE room_id = $1", room))
    letters = await eventually(lambda: _dead_letters(migrated, marker, 4))  # 2 poison × 2 sinks
    errors = sorted({letter["error"].split(":")[0] for letter in letters})
    assert errors == ["not JSON", "type must be one of"], errors
    assert all(letter["topic"] == topic and letter["partition"] == 0 for letter in letters)
    # The worker's lines about a record carry its event id, and the batch it came in (the log context).
    logging.getLogger("roomfeed.events.consumer").removeHandler(handler)
    lines = [orjson.loads(line) for line in logged.getvalue().splitlines()]
    teleport = [line for line in lines if "dead-lettered" in line["msg"] and "type must be" in line["msg"]]
    assert teleport and all(line.get("event_id") == f"x{marker}" for line in teleport), teleport
    assert all(line["batch"].startswith(f"{topic}:0@") and line["sink"] for line in teleport)


async def _dead_letters(settings: Settings, marker: str, expected: int) -> list[dict[str, Any]] | None:
    consumer = AIOKafkaConsumer(
        settings.topic(DEAD_LETTERS), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        polled = await consumer.getmany(timeout_ms=1000)
        letters = [orjson.loads(r.value) for records in polled.values() for r in records]
    finally:
        await stop_quietly(consumer)
    mine = [letter for letter in letters if marker in letter["value"]]
    return mine if len(mine) >= expected else None


async def test_two_worker_processes_split_partitions_and_process_everything_once(
    migrated: Settings, redis: Redis, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    own = replace(migrated, kafka_prefix=f"{migrated.kafka_prefix}w{tag()}.")
    await ensure_topics(own, {VIEWER_EVENTS: 6, DEAD_LETTERS: 1})
    env = {
        **os.environ,
        "DATABASE_URL": own.database_url,
        "REDIS_URL": own.redis_url,
        "KAFKA_BOOTSTRAP": own.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": own.kafka_prefix,
        "ROOMFEED_LOG_LEVEL": "INFO",
    }
    command = [sys.executable, "-m", "roomfeed.cli", "worker", "--sinks", "realtime,archive", "--no-migrate"]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [subprocess.Popen(command, env=env, cwd=REPO_ROOT, stderr=log.open("w")) for log in logs]
    try:
        groups = [own.group("sink-realtime"), own.group("sink-archive")]
        await eventually(lambda: _split(logs, groups, 6), timeout=40)

        producer = make_producer(own)
        await producer.start()
        rooms = [f"room_{tag()}" for _ in range(4)]
        total = 0
        try:
            ingest = Ingest(producer, NO_OWNERS, NO_OWNERS, topic=own.topic(VIEWER_EVENTS))
            for i in range(40):
                viewer = f"v{i}_{tag()}"
                batch = [make_event("enter", viewer, rooms[(i + j) % 4]) for j in range(25)]
                total += (await ingest.submit(batch, viewer)).accepted
        finally:
            await producer.stop()

        await eventually(
            lambda: pool.fetchval(
                "SELECT count(*) = $2 FROM interactions WHERE room_id = ANY($1)", rooms, total
            ),
            timeout=30,
        )
        stats = LiveStats(redis)
        await eventually(lambda: _enters(stats, rooms, total), timeout=30)
        assert (
            await pool.fetchval(
                "SELECT count(DISTINCT event_id) FROM interactions WHERE room_id = ANY($1)", rooms
            )
            == total
        )
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


async def _enters(stats: LiveStats, rooms: list[str], total: int) -> bool:
    return sum(s.enters_1h for s in (await stats.rooms(rooms)).values()) == total


def _assignments(logs: list[Path], group: str) -> list[set[str]]:
    """The partitions each worker process last logged for `group` (its JSON log lines)."""
    held = []
    for path in logs:
        latest: set[str] = set()
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = orjson.loads(line)
                if entry.get("msg") == "partitions assigned" and entry.get("group") == group:
                    latest = set(entry["partitions"])
        held.append(latest)
    return held


async def _split(logs: list[Path], groups: list[str], partitions: int) -> bool:
    for group in groups:
        first, second = _assignments(logs, group)
        if not first or not second or first & second or len(first | second) != partitions:
            return False
    return True


class _Stuck:
    """A Kafka client whose stop() never returns (aiokafka's consumer after its session expired)."""

    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        await asyncio.Event().wait()


class _Quick(_Stuck):
    async def stop(self) -> None:
        self.stopped = True


async def test_stop_is_bounded_when_a_kafka_client_hangs(
    migrated: Settings, redis: Redis, monkeypatch: Any, caplog: Any
) -> None:
    """A consumer that never stops is abandoned after STOP_TIMEOUT_S, and the producer still stops."""
    import events.consumer as consumer_module

    monkeypatch.setattr(consumer_module, "STOP_TIMEOUT_S", 0.2)
    runner = SinkRunner(migrated, RealtimeSink(redis))
    stuck, quick = _Stuck(), _Quick()
    runner.consumer, runner.dead_letters = stuck, quick
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING, logger="roomfeed.events.consumer"):
        await asyncio.wait_for(runner.stop(), 5)
    assert asyncio.get_running_loop().time() - started < 2
    assert quick.stopped
    assert any("did not stop" in r.getMessage() for r in caplog.records)
