"""Ingest benchmark: HTTP batches → Kafka → realtime (Redis) and archive (PostgreSQL) sinks.

    .venv/bin/python bench/bench_ingest.py [--events 100000] [--clients 8] [--runs 3]

Starts the local services if needed, then, in one run on a throwaway database, Redis db and topic
prefix:
  ceiling   raw aiokafka producer rate and raw consumer rate (no validation, no sink);
  ingest    `roomfeed serve` (uvicorn, 2 workers) on loopback, concurrent clients posting 500-event
            batches, with a `roomfeed worker` process (realtime + archive) consuming meanwhile;
            events/s accepted, and events/s until both sinks hold everything;
  realtime  the realtime sink alone replaying the topic into an empty Redis db (vs raw consumer on the
            same records), and its stages: decode only, and everything but Redis;
  freshness a paced client at 5,000 events/s; time from the 202 to the events visible in LiveStats.
Each figure is the median of --runs repetitions where repeating is cheap (ceilings, realtime).

    .venv/bin/python bench/bench_ingest.py --baseline 9a42ed9 [--rounds 2] [--api-workers 1]

runs the benchmark of this checkout and of the baseline commit's own bench_ingest.py (its code in a
git worktree, same virtualenv) in turn, `--rounds` times, alternating who goes first, on PRIVATE
services started for the comparison (a PostgreSQL cluster, a Kafka broker and a redis-server that
nothing else uses; `--services shared` runs on the project's own instead, which other benchmarks and
test runs also load: on 2026-12-07 the same two trees read 0.78-0.83x on the shared services and
1.03-1.24x on private ones, see docs/benchmarks.md). Each run also counts the CPU the whole pipeline
spent (the bench's process tree: API processes, workers, clients; the broker, PostgreSQL and Redis):
`pipeline_cpu_s`, lower is better, steady where the host's load moves the rates. It records this
checkout's medians beside the baseline's and their ratios (the shared host's load
moves absolute figures; the ratio from one run is what compares). It compares the pipeline (ceilings,
HTTP ingest, the sinks as worker processes, freshness); the in-process realtime sink stages are left
out on both sides (at 9a42ed9 the no-Redis stage never finishes on a topic that holds the freshness
run's events: it stalls 1,500 records short of the topic's end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import markdown  # noqa: E402
from bench.markdown import markers  # noqa: E402
from devtools import services  # noqa: E402
from devtools.redis import RedisServer  # noqa: E402
from events.consumer import MAX_RECORDS, SinkRunner  # noqa: E402
from events.ingest import partition_of  # noqa: E402
from events.live_stats import LiveStats  # noqa: E402
from events.realtime import RealtimeSink  # noqa: E402
from events.vocabulary import ENTER, HEARTBEAT, IMPRESSION, LEAVE, LIKE, VIEWER_EVENTS  # noqa: E402
from roomfeed.auth import sign_viewer_token  # noqa: E402
from roomfeed.db import migrate  # noqa: E402
from roomfeed.kafka import drop_prefixed_topics, ensure_topics, make_consumer, make_producer  # noqa: E402
from roomfeed.settings import Settings, external_services  # noqa: E402
from tests.support import free_port  # noqa: E402

BATCH = 500


def event(i: int, viewer: str, room: str, now: int) -> dict[str, Any]:
    kind = (IMPRESSION, ENTER, HEARTBEAT, LEAVE, LIKE)[i % 5]
    e: dict[str, Any] = {
        "event_id": f"b{secrets.token_hex(8)}",
        "type": kind,
        "viewer_id": viewer,
        "session_id": f"ses_{viewer}",
        "room_id": room,
        "ts": now,
    }
    if kind == LEAVE:
        e["dwell_ms"] = 1000 * (i % 30)
    return e


def make_batches(total: int, rooms: int = 200) -> list[tuple[str, list[dict[str, Any]]]]:
    now = int(time.time() * 1000)
    out = []
    for b in range(total // BATCH):
        viewer = f"bv{b}"
        out.append((viewer, [event(i, viewer, f"room_b{(b * 7 + i) % rooms}", now) for i in range(BATCH)]))
    return out


async def raw_producer_rate(settings: Settings, n: int) -> float:
    producer = make_producer(settings)
    await producer.start()
    payloads = [orjson.dumps(e) for _, batch in make_batches(n) for e in batch]
    topic = settings.topic("raw")
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, p, key=str(i % 1000).encode()) for i, p in enumerate(payloads)]
        await asyncio.gather(*futures)
        return len(payloads) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def raw_producer_batch_rate(settings: Settings, n: int) -> float:
    """The same events as raw_producer_rate, sent as one record batch per 500-event viewer batch."""
    producer = make_producer(settings)
    await producer.start()
    batches = [(viewer.encode(), [orjson.dumps(e) for e in events]) for viewer, events in make_batches(n)]
    topic = settings.topic("raw")
    try:
        partitions = sorted(await producer.partitions_for(topic))
        started = time.perf_counter()
        await send_as_batches(producer, topic, partitions, batches)
        return sum(len(p) for _, p in batches) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def send_as_batches(
    producer: Any, topic: str, partitions: list[int], batches: list[tuple[bytes, list[bytes]]]
) -> None:
    """Each (key, payloads) as record batches on the key's partition, as ingest sends a viewer's batch;
    returns once the broker has acknowledged them all."""
    futures = []
    for key, payloads in batches:
        partition = partition_of(key, partitions)
        batch = producer.create_batch()
        for payload in payloads:
            if batch.append(key=key, value=payload, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=payload, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


async def raw_consumer_rate(settings: Settings, n: int, topic: str = "raw") -> float:
    """Records/s of a bare consumer, timed from its first records (as the sink rate is)."""
    consumer = make_consumer(settings, None, topic)
    await consumer.start()
    try:
        seen = first = 0
        started = 0.0
        while seen < n:
            polled = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            seen += sum(len(r) for r in polled.values())
            if seen and not started:
                started, first = time.perf_counter(), seen
        return (seen - first) / (time.perf_counter() - started)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "roomfeed.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(base + "/readyz")).json().get("status") == "ready":
                    return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{base} not ready")


async def post(
    client: httpx.AsyncClient, base: str, secret: str, viewer: str, events: list[Any] | bytes
) -> int:
    headers = {
        "Authorization": f"Bearer {sign_viewer_token(secret, viewer)}",
        "content-type": "application/json",
    }
    body = events if isinstance(events, bytes) else orjson.dumps(events)
    while True:
        response = await client.post(base + "/v1/events", content=body, headers=headers)
        if response.status_code == 202:
            return int(response.json()["accepted"])
        await asyncio.sleep(0.2)


async def post_all(settings: Settings, base: str, total: int, clients: int) -> tuple[int, float, float]:
    """`clients` concurrent clients posting 500-event batches (bodies encoded before the clock starts);
    returns (accepted, the start time, events/s)."""
    work = [(viewer, orjson.dumps(events)) for viewer, events in make_batches(total)]
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:

        async def run(mine: list[tuple[str, bytes]]) -> int:
            return sum([await post(client, base, settings.viewer_token_secret, v, e) for v, e in mine])

        started = time.perf_counter()
        accepted = sum(await asyncio.gather(*(run(work[i::clients]) for i in range(clients))))
        return accepted, started, accepted / (time.perf_counter() - started)


async def sinks_hold(redis: Redis, pool: asyncpg.Pool, total: int, started: float) -> tuple[float, float]:
    """Seconds from `started` until the realtime sink and the archive each hold `total` events."""
    stats = LiveStats(redis)
    realtime_done = archive_done = 0.0
    while not (realtime_done and archive_done):
        if not realtime_done:
            totals = await stats.totals()
            seen = sum(totals[k] for k in ("impressions_1h", "enters_1h", "leaves_1h", "likes_1h"))
            if seen >= total * 4 / 5:  # heartbeats are not counted in windows
                realtime_done = time.perf_counter() - started
        if not archive_done and await pool.fetchval("SELECT count(*) FROM interactions") >= total:
            archive_done = time.perf_counter() - started
        await asyncio.sleep(0.05)
    return realtime_done, archive_done


async def ingest_run(
    settings: Settings, base: str, total: int, clients: int, pool: asyncpg.Pool, redis: Redis
) -> dict[str, float]:
    accepted, started, rate = await post_all(settings, base, total, clients)
    ingest_s = accepted / rate
    stats = LiveStats(redis)
    realtime_done = archive_done = 0.0
    while not (realtime_done and archive_done):
        if not realtime_done:
            totals = await stats.totals()
            seen = sum(totals[k] for k in ("impressions_1h", "enters_1h", "leaves_1h", "likes_1h"))
            if seen >= accepted * 4 / 5:  # heartbeats are not counted in windows
                realtime_done = time.perf_counter() - started
        if not archive_done and await pool.fetchval("SELECT count(*) FROM interactions") >= accepted:
            archive_done = time.perf_counter() - started
        await asyncio.sleep(0.05)
    return {
        "accepted": accepted,
        "events_per_s": accepted / ingest_s,
        "to_realtime_per_s": accepted / realtime_done,
        "to_archive_per_s": accepted / archive_done,
        "both_sinks_per_s": accepted / max(realtime_done, archive_done),
    }


async def topic_size(settings: Settings) -> int:
    producer = make_producer(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    await consumer.start()
    try:
        topic = settings.topic(VIEWER_EVENTS)
        tps = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await producer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


class _Counted:
    """A stage sink's prepared batch: only its size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def events(self) -> list[dict[str, Any]]:
        return []


class DecodeOnlySink:
    """Stage 1 of the realtime sink: SinkRunner and orjson.loads of each record, nothing else (the
    floor of any sink that decodes the events in this process)."""

    name = "decode-only"

    def read(self, polled: dict[TopicPartition, list[Any]]) -> tuple[_Counted, list[Any]]:
        size = 0
        for records in polled.values():
            for record in records:
                orjson.loads(record.value)
                size += 1
        return _Counted(size), []

    async def apply(self, prepared: _Counted) -> int:
        return len(prepared)

    async def write(self, batch: list[dict[str, Any]]) -> int:
        return len(batch)


class NoRedisSink(RealtimeSink):
    """Stage 2: the realtime sink up to the script's arguments (decode, check, sum, serialise), no Redis."""

    async def apply(self, chunk: Any) -> int:
        chunk.head(), orjson.dumps(chunk.plan.ids), chunk.plan.as_json()
        return len(chunk)


async def sink_rate(settings: Settings, sink: Any, n: int) -> float:
    """Events/s of a SinkRunner replaying the topic in a fresh group, timed from its first records."""
    runner = SinkRunner(settings, sink, group=f"bench-{sink.name}-{secrets.token_hex(3)}")
    await runner.start()
    try:
        task = asyncio.create_task(runner.run())
        while not runner.processed:  # timed from its first records, as the raw consumer is
            await asyncio.sleep(0.001)
        started, first = time.perf_counter(), runner.processed
        while runner.processed < n:
            await asyncio.sleep(0.005)
        rate = (runner.processed - first) / (time.perf_counter() - started)
        await runner.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return rate
    finally:
        await runner.stop()


async def realtime_sink_rate(settings: Settings, redis_url: str, n: int) -> float:
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    try:
        return await sink_rate(settings, RealtimeSink(redis), n)
    finally:
        await redis.aclose()


async def freshness(
    settings: Settings, base: str, redis: Redis, rate: int = 5000, seconds: float = 10.0, batch: int = 500
) -> tuple[float, float, float]:
    stats = LiveStats(redis)
    pending: dict[str, tuple[float, int]] = {}
    delays: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set() or pending:
            rooms = list(pending)
            if rooms:
                now = time.perf_counter()
                for room, room_stats in (await stats.rooms(rooms)).items():
                    acked, size = pending[room]
                    if room_stats.enters_1h >= size:
                        delays.append(now - acked)
                        del pending[room]
            await asyncio.sleep(0.005)

    async with httpx.AsyncClient(timeout=30) as client:
        watcher = asyncio.create_task(watch())
        interval = batch / rate
        started = time.perf_counter()
        sent = 0
        in_flight = []

        async def one(k: int) -> None:
            room, viewer = f"room_fresh{k}_{secrets.token_hex(3)}", f"fv{k}"
            now = int(time.time() * 1000)
            events = [
                {
                    "event_id": f"f{secrets.token_hex(8)}",
                    "type": "enter",
                    "viewer_id": viewer,
                    "session_id": "s",
                    "room_id": room,
                    "ts": now,
                }
                for _ in range(batch)
            ]
            await post(client, base, settings.viewer_token_secret, viewer, events)
            pending[room] = (time.perf_counter(), batch)

        k = 0
        while time.perf_counter() - started < seconds:
            in_flight.append(asyncio.create_task(one(k)))
            k += 1
            sent += batch
            await asyncio.sleep(max(0.0, started + k * interval - time.perf_counter()))
        await asyncio.gather(*in_flight)
        achieved = sent / (time.perf_counter() - started)
        done.set()
        await asyncio.wait_for(watcher, 30)
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
    return p50, p99, achieved


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base_settings = Settings.from_env()
    if not all(external_services().values()):
        services.up(base_settings)
    partitions = base_settings.kafka_partitions
    settings, drop = await throwaway_settings(
        base_settings, 14, {"raw": partitions, VIEWER_EVENTS: partitions}
    )
    db_url, redis_url = settings.database_url, settings.redis_url
    rt_redis_url = base_settings.redis_url.rsplit("/", 1)[0] + "/15"
    redis = Redis.from_url(redis_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    logs = Path(settings.data_dir) / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "ROOMFEED_LOG_LEVEL": "WARNING",
        "ROOMFEED_ACCESS_LOG": "0",
    }
    processes: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {}
    try:
        producer_rates = [await raw_producer_rate(settings, args.raw) for _ in range(args.runs)]
        batch_rates = [await raw_producer_batch_rate(settings, args.raw) for _ in range(args.runs)]
        results["raw_producer_batch_per_s"] = statistics.median(batch_rates)
        consumer_rates = [await raw_consumer_rate(settings, args.raw) for _ in range(args.runs)]
        results["raw_producer_per_s"] = statistics.median(producer_rates)
        results["raw_consumer_per_s"] = statistics.median(consumer_rates)
        print(
            f"raw producer {results['raw_producer_per_s']:,.0f}/s per message, "
            f"{results['raw_producer_batch_per_s']:,.0f}/s in 500-event batches, raw consumer "
            f"{results['raw_consumer_per_s']:,.0f}/s",
            flush=True,
        )

        processes.append(
            spawn(
                ["serve", "--port", str(port), "--workers", str(args.api_workers), "--no-migrate"],
                env,
                logs / "serve.log",
            )
        )
        await wait_ready(base)
        await post_all(settings, base, 10 * BATCH, args.clients)  # warm-up
        # Ingest alone: HTTP → Kafka acked, no consumer competing for the two cores.
        alone, _, results["ingest_alone_per_s"] = await post_all(settings, base, args.events, args.clients)
        print(f"ingest alone {results['ingest_alone_per_s']:,.0f} events/s over HTTP", flush=True)
        # The sinks (one worker process each) drain that backlog.
        drain_started = time.perf_counter()
        for sink in ("realtime", "archive"):
            processes.append(
                spawn(["worker", "--sinks", sink, "--no-migrate"], env, logs / f"worker-{sink}.log")
            )
        realtime_s, archive_s = await sinks_hold(redis, pool, alone + 10 * BATCH, drain_started)
        results["drain_realtime_per_s"] = (alone + 10 * BATCH) / realtime_s
        results["drain_archive_per_s"] = (alone + 10 * BATCH) / archive_s
        print(
            f"backlog drained: realtime {results['drain_realtime_per_s']:,.0f} events/s, archive "
            f"{results['drain_archive_per_s']:,.0f} events/s (worker start-up included)",
            flush=True,
        )
        await redis.flushdb()
        await pool.execute("TRUNCATE interactions, event_ids")
        run = await ingest_run(settings, base, args.events, args.clients, pool, redis)
        results.update({k: v for k, v in run.items() if k != "accepted"})
        results["events"] = run["accepted"]
        print(
            f"ingest {run['events_per_s']:,.0f} events/s over HTTP; both sinks caught up at "
            f"{run['both_sinks_per_s']:,.0f} events/s (realtime {run['to_realtime_per_s']:,.0f}, "
            f"archive {run['to_archive_per_s']:,.0f})",
            flush=True,
        )

        p50, p99, achieved = await freshness(settings, base, redis)
        results.update(freshness_p50_ms=p50, freshness_p99_ms=p99, freshness_rate_per_s=achieved)
        print(f"freshness at {achieved:,.0f} events/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)

        topic_events = await topic_size(settings)
        # The sink gets a private redis-server: the shared one carries the other benchmarks' and
        # tests' load, which the raw consumer (no Redis) would not feel.
        private = RedisServer(Path(tempfile.mkdtemp(prefix="rf-bench-ingest-redis-")), free_port())
        private.start()
        try:
            private.wait_ready()
            rt_rates, raw_rates, decode_rates, no_redis_rates = [], [], [], []
            stage_redis = Redis.from_url(private.url())
            for _ in range(args.runs):  # interleaved with the raw consumer on the same topic and records
                raw_rates.append(await raw_consumer_rate(settings, topic_events, VIEWER_EVENTS))
                decode_rates.append(await sink_rate(settings, DecodeOnlySink(), topic_events))
                no_redis_rates.append(await sink_rate(settings, NoRedisSink(stage_redis), topic_events))
                rt_rates.append(await realtime_sink_rate(settings, private.url(), topic_events))
            await stage_redis.aclose()
            shared_rate = await realtime_sink_rate(settings, rt_redis_url, topic_events)
        finally:
            private.kill()
        results["realtime_sink_per_s"] = statistics.median(rt_rates)
        results["realtime_sink_shared_redis_per_s"] = shared_rate
        results["raw_consumer_same_topic_per_s"] = statistics.median(raw_rates)
        results["realtime_decode_only_per_s"] = statistics.median(decode_rates)
        results["realtime_no_redis_per_s"] = statistics.median(no_redis_rates)
        results["realtime_vs_raw_consumer"] = (
            results["realtime_sink_per_s"] / results["raw_consumer_same_topic_per_s"]
        )
        print(
            f"realtime sink alone {results['realtime_sink_per_s']:,.0f} events/s "
            f"({results['realtime_vs_raw_consumer']:.0%} of raw consumer; {shared_rate:,.0f}/s on the shared "
            f"Redis); its stages: decode only {results['realtime_decode_only_per_s']:,.0f}/s, without Redis "
            f"{results['realtime_no_redis_per_s']:,.0f}/s",
            flush=True,
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
        await pool.close()
        await redis.aclose()
        await drop()
    return results


async def throwaway_settings(
    base: Settings, redis_db: int, topics: Mapping[str, int]
) -> tuple[Settings, Callable[[], Awaitable[None]]]:
    """A bench run's own services: a fresh migrated database, Redis database `redis_db` (flushed) and
    a Kafka prefix of its own with `topics` (name → partitions); and `drop`, which removes them all."""
    tag = secrets.token_hex(3)
    dbname = f"rf_bench_{tag}"
    admin = await asyncpg.connect(base.database_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    settings = replace(
        base,
        database_url=base.database_url.rsplit("/", 1)[0] + "/" + dbname,
        redis_url=base.redis_url.rsplit("/", 1)[0] + f"/{redis_db}",
        kafka_prefix=f"bench{tag}.",
    )
    await migrate(settings.database_url)
    await ensure_topics(settings, dict(topics))
    redis = Redis.from_url(settings.redis_url)
    await redis.flushdb()
    await redis.aclose()

    async def drop() -> None:
        try:
            flushed = Redis.from_url(settings.redis_url)
            await flushed.flushdb()
            await flushed.aclose()
            await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        finally:
            await admin.close()
            await drop_topics(settings)

    return settings, drop


async def drop_topics(settings: Settings) -> None:
    """Delete this run's topics (each run has its own prefix; they would pile up on the broker)."""
    await drop_prefixed_topics(settings.kafka_bootstrap, settings.kafka_prefix)


def record(results: dict[str, Any], command: str) -> None:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"

    def rounded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return round(value, 3) if isinstance(value, float) else value

    metrics = rounded(results)
    out = {
        "name": "ingest",
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine,
        "metrics": metrics,
    }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "ingest.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "<!-- bench:ingest -->",
        f"## ingest ({out['date']}, {machine})\n",
        f"`{command}`\n",
        "| figure | value |",
        "|---|---|",
        f"| raw aiokafka producer, one send() per event | {results['raw_producer_per_s']:,.0f} events/s |",
        f"| raw aiokafka producer, one record batch per 500 events (ceiling of ingest) | "
        f"{results['raw_producer_batch_per_s']:,.0f} events/s |",
        f"| raw aiokafka consumer (ceiling, its own topic) | {results['raw_consumer_per_s']:,.0f} events/s |",
        f"| HTTP ingest, 500-event batches, {results['events']:,} events, sinks running | "
        f"{results['events_per_s']:,.0f} events/s (target ≥ 30,000) |",
        f"| HTTP → both sinks caught up (sinks running meanwhile) | {results['both_sinks_per_s']:,.0f} events/s |",
        f"| HTTP ingest alone (no consumer running) | {results['ingest_alone_per_s']:,.0f} events/s |",
        f"| backlog drained by one worker process per sink | realtime {results['drain_realtime_per_s']:,.0f}, "
        f"archive {results['drain_archive_per_s']:,.0f} events/s |",
        f"| realtime sink alone (SinkRunner, private Redis), replaying the topic | "
        f"{results['realtime_sink_per_s']:,.0f} events/s = "
        f"{results['realtime_vs_raw_consumer']:.0%} of the raw consumer on the same records, interleaved "
        f"({results['raw_consumer_same_topic_per_s']:,.0f}/s) (target ≥ 50%) |",
        f"| the same on the shared Redis (one run) | {results['realtime_sink_shared_redis_per_s']:,.0f} events/s |",
        f"| its stages, same records, interleaved: SinkRunner + orjson.loads only (floor of a decoding sink) | "
        f"{results['realtime_decode_only_per_s']:,.0f} events/s = "
        f"{results['realtime_decode_only_per_s'] / results['raw_consumer_same_topic_per_s']:.0%} of the raw consumer |",
        f"| its stages: decode, check, sum and serialise, no Redis | {results['realtime_no_redis_per_s']:,.0f} events/s = "
        f"{results['realtime_no_redis_per_s'] / results['raw_consumer_same_topic_per_s']:.0%} |",
        f"| freshness 202 → visible in Redis at {results['freshness_rate_per_s']:,.0f} events/s | "
        f"p50 {results['freshness_p50_ms']:.0f} ms, p99 {results['freshness_p99_ms']:.0f} ms "
        "(target p99 ≤ 1 s) |",
        "",
        "Rates are medians of the runs; the realtime sink, its stages and the raw consumer are all timed from",
        "their first records, with the same consumer settings (the sink through SinkRunner: decode, check,",
        "sum, one Lua script per poll, commit). Per-event costs and what is left: docs/events.md.",
        "<!-- /bench:ingest -->",
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", "\n".join(lines))


def record_against_baseline(results: dict[str, Any], command: str) -> None:
    """With --baseline: bench/results/ingest_vs_<ref>.json and its own section in docs/benchmarks.md
    (the plain run's ingest.json and section stay as they are)."""
    base, ref = results["baseline"], results["baseline"]["ref"]
    name = f"ingest_vs_{ref}"
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"

    def rounded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return round(value, 3) if isinstance(value, float) else value

    out = {
        "name": name,
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine,
        "metrics": rounded(results),
    }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"<!-- bench:{name} -->",
        f"## ingest against the starting commit {ref} ({out['date']}, {machine})\n",
        f"`{command}`\n",
        f"This checkout's bench_ingest.py and {ref}'s own, each with its own code (a git worktree for {ref}) on "
        f"the same {results.get('services', 'shared')} services, {results['rounds']} rounds each, alternating who "
        "goes first; medians of the rounds, "
        "and each round's ratio (this / the baseline's run beside it) with their median. "
        f"`roomfeed serve` with {results['api_workers']} worker process(es). Host load average (1 min) before "
        f"each run and at the end: {', '.join(str(x) for x in results['load_avg'])}: only the ratios compare.\n",
        f"| figure | this | {ref} | this / {ref} | median of the rounds' ratios | rounds' ratios |",
        "|---|---|---|---|---|---|",
    ]
    rounds_median = results.get("vs_baseline_rounds_median", {})
    per_round = results.get("per_round", {})
    for key, ratio in results["vs_baseline"].items():
        each = [
            t[key] / b[key]
            for t, b in zip(per_round.get("this", []), per_round.get("baseline", []), strict=True)
            if b[key]
        ]
        lines.append(
            f"| {key} | {results[key]:,.1f} | {base[key]:,.1f} | {ratio:.2f} | "
            f"{rounds_median.get(key, math.nan):.2f} | {', '.join(f'{x:.2f}' for x in each)} |"
        )
    lines += [
        "",
        "Freshness is a delay and the CPU figures are costs: below 1 is better there; every other figure is a rate. "
        "The in-process realtime sink stages are left out on both sides (at 9a42ed9 the no-Redis stage never",
        "finishes on a topic holding the freshness run's events); the plain run above has them.",
        f"<!-- /bench:{name} -->",
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", "\n".join(lines), name)


def replace_section(path: Path, section: str, name: str = "ingest") -> None:
    """bench.markdown.replace_section, which also replaces the unmarked ingest section of earlier runs."""
    text = path.read_text() if path.exists() else ""
    if name == "ingest" and markers(name)[0] not in text and "\n## ingest (" in text:
        head, rest = text.split("\n## ingest (", 1)
        tail = rest.split("\n<!-- bench:", 1)
        path.write_text(head + "\n" + section + ("\n\n<!-- bench:" + tail[1] if len(tail) > 1 else "\n"))
        return
    markdown.replace_section(path, section, name)


# Compared with a baseline: the figures that say whether a change cost ingest something.
COMPARED = (
    "events_per_s",
    "ingest_alone_per_s",
    "both_sinks_per_s",
    "to_realtime_per_s",
    "to_archive_per_s",
    "drain_realtime_per_s",
    "drain_archive_per_s",
    "realtime_sink_per_s",
    "raw_consumer_same_topic_per_s",
    "raw_producer_batch_per_s",
    "freshness_p50_ms",
    "freshness_p99_ms",
    "bench_tree_cpu_s",
    "services_cpu_s",
    "pipeline_cpu_s",
)
# Runs one tree's own bench_ingest.main (the baseline's code from its worktree) and prints its figures.
# The in-process sink stages are skipped (NaN): see the module docstring.
_RUN_TREE = """
import argparse, asyncio, importlib.util, json, sys
root, options = sys.argv[1], json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("bench_ingest_of_tree", root + "/bench/bench_ingest.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
async def skipped(*args, **kwargs):
    return float("nan")
module.sink_rate = module.realtime_sink_rate = skipped
figures = asyncio.run(module.main(argparse.Namespace(**options)))
print("FIGURES " + json.dumps(figures), flush=True)
"""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int | None, *, with_children: bool = False) -> float:
    """CPU seconds of a process from /proc (user + system; with its waited-for children's)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def _children_cpu_s(parent: int) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile: its time is in the parent's children's time
                continue
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


class PrivateServices:
    """A PostgreSQL cluster, a Kafka broker and a redis-server for one comparison (nothing else uses
    them), the environment that points a run at them, and the CPU they have spent so far."""

    def __init__(self) -> None:
        from tests.support import PrivateServers

        self.servers = PrivateServers(Settings.from_env())
        self.postgres = self.servers.postgres()
        self.kafka = self.servers.kafka()
        self.redis = self.servers.redis()

    def __enter__(self) -> dict[str, str]:
        for server in (self.postgres, self.kafka, self.redis):
            server.start()
        for server in (self.postgres, self.kafka, self.redis):
            server.wait_ready()
        return {
            "DATABASE_URL": self.postgres.url(),
            "KAFKA_BOOTSTRAP": self.kafka.bootstrap(),
            "REDIS_URL": self.redis.url(),
        }

    def __exit__(self, *exc: object) -> None:
        self.servers.close()

    def cpu_s(self) -> float:
        postmaster = self.postgres.postmaster_pid()
        postgres = _cpu_s(postmaster, with_children=True) + (
            _children_cpu_s(postmaster) if postmaster else 0.0
        )
        return postgres + _cpu_s(self.kafka.pid()) + _cpu_s(self.redis.pid())


def run_tree(root: Path, options: dict[str, Any], label: str) -> dict[str, Any]:
    """The whole benchmark with the code in `root` (its modules first on the path), in a process of its own."""
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_TREE, str(root), json.dumps(options)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    figures: dict[str, Any] | None = None
    for line in process.stdout:
        if line.startswith("FIGURES "):
            figures = json.loads(line[len("FIGURES ") :])
        else:
            print(f"[{label}] {line}", end="", flush=True)
    if process.wait() != 0 or figures is None:
        raise SystemExit(f"bench_ingest of {label} failed (status {process.returncode})")
    return figures


def baseline_worktree(commit: str) -> tuple[str, Path]:
    """(short ref, path): a detached git worktree of `commit` in a temporary folder (remove it after)."""
    ref = subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="rf-bench-baseline-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True
    )
    return ref, tree


def _counted(
    private: PrivateServices | None, root: Path, options: dict[str, Any], label: str
) -> dict[str, Any]:
    """`run_tree`'s figures with the CPU its run cost: its process tree (waited for, so in this process's
    children's time) and, on private services, theirs (`pipeline_cpu_s`; lower is better)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    services = private.cpu_s() if private is not None else 0.0
    figures = run_tree(root, options, label)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    tree_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    figures["bench_tree_cpu_s"] = tree_s
    if private is not None:
        figures["services_cpu_s"] = private.cpu_s() - services
        figures["pipeline_cpu_s"] = tree_s + figures["services_cpu_s"]
    return figures


def against_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """This checkout and `args.baseline`, `args.rounds` times each, alternating who goes first."""
    ref, tree = baseline_worktree(args.baseline)
    options = {k: getattr(args, k) for k in ("events", "raw", "clients", "api_workers", "runs")}
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    loads: list[float] = []
    private = PrivateServices() if args.services == "private" else None
    try:
        if private is not None:
            os.environ.update(private.__enter__())  # run_tree's processes inherit the environment
        for round_ in range(args.rounds):
            order = ("baseline", "this") if round_ % 2 == 0 else ("this", "baseline")
            for who in order:
                loads.append(os.getloadavg()[0])
                label = f"{ref} round {round_ + 1}" if who == "baseline" else f"this round {round_ + 1}"
                root = tree if who == "baseline" else ROOT
                try:
                    figures = _counted(private, root, options, label)
                except SystemExit as failed:  # e.g. a 202 slower than the client's 30 s on a loaded host
                    print(f"{failed}; running it again", flush=True)
                    figures = _counted(private, root, options, label + " (again)")
                runs[who].append(figures)
    finally:
        if private is not None:
            private.__exit__(None)
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    loads.append(os.getloadavg()[0])

    def median(who: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[who]))

    def measured(who: str, key: str) -> bool:
        value = runs[who][0].get(key)
        return isinstance(value, int | float) and math.isfinite(value)

    this = {k: median("this", k) for k in runs["this"][0] if measured("this", k)}
    base = {k: median("baseline", k) for k in COMPARED if measured("baseline", k)}
    ratios = {k: this[k] / base[k] for k in COMPARED if k in base and k in this and base[k]}
    # Each round's own ratio (this / the baseline's run next to it, the same minutes of the host), and
    # their median: steadier than the ratio of medians when the host's load drifts between rounds.
    per_round = {
        k: [t[k] / b[k] for t, b in zip(runs["this"], runs["baseline"], strict=True) if b[k]] for k in ratios
    }
    round_ratios = {k: float(statistics.median(v)) for k, v in per_round.items() if v}
    print(f"medians of {args.rounds} rounds, this / {ref} (ratio of medians; median of the rounds' ratios):")
    for key, ratio in ratios.items():
        print(
            f"  {key:32s} {this[key]:>12,.1f} {base[key]:>12,.1f}  {ratio:.3f}  {round_ratios.get(key, math.nan):.3f}"
        )
    return {
        **this,
        "baseline": {"ref": ref, **base},
        "vs_baseline": ratios,
        "vs_baseline_rounds_median": round_ratios,
        "per_round": {
            "this": [{k: r[k] for k in ratios} for r in runs["this"]],
            "baseline": [{k: r[k] for k in ratios} for r in runs["baseline"]],
        },
        "rounds": args.rounds,
        "services": args.services,
        "api_workers": args.api_workers,
        "load_avg": [round(x, 1) for x in loads],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--raw", type=int, default=100_000, help="events for the raw producer/consumer ceiling"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--baseline", help="a commit whose own bench_ingest.py runs in turn with this one")
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: runs of each side")
    parser.add_argument(
        "--services",
        choices=("private", "shared"),
        default="private",
        help="with --baseline: services of its own for the comparison (default) or the project's shared ones",
    )
    options = parser.parse_args()
    command = "python " + " ".join(["bench/bench_ingest.py", *sys.argv[1:]])
    if options.baseline:
        figures = against_baseline(options)
        if not options.no_record:
            record_against_baseline(figures, command)
    else:
        figures = asyncio.run(main(options))
        if not options.no_record:
            record(figures, command)
