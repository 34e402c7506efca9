"""`roomfeed worker`: the Kafka consumers, one consumer group per sink, in one process.

    roomfeed worker [--sinks realtime,archive,alliance] [--metrics-port 9101]

Run several worker processes to share the partitions of each group. SIGTERM/SIGINT stop the
consumers cleanly (in-flight batches finish, offsets are committed after the write).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import signal
from typing import Any

from events.archive import ArchiveSink
from events.consumer import Sink, SinkRunner
from events.realtime import RealtimeSink
from events.rebuild import worker_presence
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS
from roomfeed.db import create_pool, migrate
from roomfeed.kafka import ensure_topics_patiently
from roomfeed.observability import configure_logging
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.worker")

SINKS = ("realtime", "archive", "alliance", "heat")


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sinks", default=",".join(SINKS), help="comma-separated sinks to run (default: %(default)s)"
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    parser.add_argument("--no-migrate", action="store_true")


def parse_sinks(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SINKS]
    if unknown or not names:
        raise SystemExit(
            f"--sinks: unknown sink(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SINKS)}"
        )
    return names


async def _build_sinks(names: list[str], pool: Any, redis: Any, settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    for name in names:
        if name == "realtime":
            sinks.append(RealtimeSink(redis))
        elif name == "archive":
            archive = ArchiveSink(pool, retention_days=settings.archive_retention_days)
            await archive.prepare()
            sinks.append(archive)
        elif name == "heat":
            from events.heat import RoomHeatSink

            sinks.append(RoomHeatSink(redis))
        elif name == "alliance":
            try:
                from alliance.consumer import AllianceSink  # type: ignore[import-not-found]
            except ImportError:
                log.warning("alliance.consumer is not available in this build; the alliance sink is skipped")
                continue
            # Hand over what its constructor asks for, by name (settings, pool, redis).
            offered = {"settings": settings, "pool": pool, "redis": redis}
            wanted = inspect.signature(AllianceSink).parameters
            sinks.append(AllianceSink(**{k: v for k, v in offered.items() if k in wanted}))
    return sinks


async def run_worker(settings: Settings, names: list[str], stop: asyncio.Event) -> None:
    """Run the named sinks until `stop` is set."""
    # A worker that starts while Kafka is down (a broker restarting, a rollout of both) waits for it
    # instead of exiting: nothing is lost meanwhile, the events wait on the topic.
    topics = {VIEWER_EVENTS: settings.kafka_partitions, DEAD_LETTERS: 1}
    if not await ensure_topics_patiently(settings, topics, stop, max_delay=5.0):
        return
    pool = await create_pool(settings, min_size=1)
    redis = create_redis(settings)
    runners: list[SinkRunner] = []
    try:
        for sink in await _build_sinks(names, pool, redis, settings):
            runner = SinkRunner(settings, sink)
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
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for runner in runners:
            await runner.stop()
        await redis.aclose()
        await pool.close()


async def worker_command(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging(settings.log_level)
    names = parse_sinks(args.sinks)
    if not args.no_migrate:
        await migrate(settings.database_url)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=settings.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker_presence(settings, names):  # a live-stats rebuild waits for the worker to stop
        await run_worker(settings, names, stop)
    return 0
