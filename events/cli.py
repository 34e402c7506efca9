"""`roomfeed worker`: the Kafka consumers, one consumer group per sink, in one process.

    roomfeed worker [--sinks realtime,archive,alliance] [--metrics-port 9101]

Run several worker processes to share the partitions of each group. SIGTERM/SIGINT stop the
consumers cleanly (in-flight batches finish, offsets are committed after the write).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from redis.asyncio import Redis

from events.archive import ArchiveSink
from events.consumer import Sink, SinkRunner
from events.heat_sink import RoomHeatSink
from events.realtime import RealtimeSink
from events.rebuild import worker_presence
from events.tombstones import Tombstones
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS
from roomfeed.db import create_pool, migrate
from roomfeed.kafka import ensure_topics_patiently
from roomfeed.reach import patiently
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.worker")

# Builds one sink of the worker from the process's settings and connections.
SinkFactory = Callable[[Settings, asyncpg.Pool, Redis], Awaitable[Sink]]


async def _realtime(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> Sink:
    return RealtimeSink(redis)


async def _archive(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> Sink:
    archive = ArchiveSink(pool, retention_days=settings.archive_retention_days)
    await archive.prepare()
    return archive


async def _heat(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> Sink:
    return RoomHeatSink(redis)


# The events domain's sinks; the composition root adds the other domains' (the alliance's).
SINKS: Mapping[str, SinkFactory] = {"realtime": _realtime, "archive": _archive, "heat": _heat}
DEFAULT_SINKS = ("realtime", "archive", "alliance", "heat")


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sinks", default=",".join(DEFAULT_SINKS), help="comma-separated sinks to run (default: %(default)s)"
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    parser.add_argument("--no-migrate", action="store_true")


def parse_sinks(text: str, known: Mapping[str, SinkFactory]) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise SystemExit(
            f"--sinks: unknown sink(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    return names


async def run_worker(
    settings: Settings, names: list[str], factories: Mapping[str, SinkFactory], stop: asyncio.Event
) -> None:
    """Run the named sinks until `stop` is set."""
    # A worker that starts while Kafka is down (a broker restarting, a rollout of both) waits for it
    # instead of exiting: nothing is lost meanwhile, the events wait on the topic.
    topics = {VIEWER_EVENTS: settings.kafka_partitions, DEAD_LETTERS: 1}
    if not await ensure_topics_patiently(settings, topics, stop, max_delay=5.0):
        return
    pool = await patiently(lambda: create_pool(settings, min_size=1), settings, stop)
    if pool is None:
        return
    redis = create_redis(settings)
    runners: list[SinkRunner] = []
    try:
        tombstones = Tombstones(pool)  # erased viewers: shared by every sink of this worker
        for name in names:
            runner = SinkRunner(settings, await factories[name](settings, pool, redis), tombstones=tombstones)
            await runner.start()
            runners.append(runner)
        log.info("worker running", extra={"fields": {"sinks": [r.sink.name for r in runners]}})
        tasks = [asyncio.create_task(r.run(), name=f"sink-{r.sink.name}") for r in runners]
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for runner in runners:
            await runner.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in tasks:
            if task in done and (error := task.exception()) is not None:
                raise error
    finally:
        for runner in runners:
            await runner.stop()
        await redis.aclose()
        await pool.close()


async def worker_command(
    settings: Settings, args: argparse.Namespace, factories: Mapping[str, SinkFactory]
) -> int:
    names = parse_sinks(args.sinks, factories)
    if not args.no_migrate:
        await migrate(settings.database_url)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=settings.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker_presence(settings, names, stop):  # a live-stats rebuild waits for the worker to stop
        await run_worker(settings, names, factories, stop)
    return 0
