"""The worker's composition root: `roomfeed worker` runs the events domain's sinks and the alliance's,
and loads those two domains only.

The API's root (roomfeed/assembly.py) loads every domain: the feed, ranking (numba, LightFM), the
console, the alliance's scheduler (scipy.stats). A worker that started through it paid ~1.4 s more CPU
and ~2.5 s more wall time at every start and restart before its first event (2.1 s of CPU against
9a42ed9's 0.7 s on the shared 2-core host: docs/benchmarks.md, ingest), all of it modules the sinks
never call. roomfeed/cli.py runs the `worker` verb from here, and the API's root offers it from here too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import asyncpg
from redis.asyncio import Redis

from alliance.clock import AllianceClock
from alliance.consumer import AllianceSink
from events import cli as events_cli
from events.consumer import Sink
from roomfeed.settings import Settings
from roomfeed.verbs import Verb


async def _alliance_sink(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> Sink:
    return AllianceSink(pool, redis, AllianceClock.of(settings))


# The sinks `roomfeed worker` can run, by name: the events domain's and the alliance's.
WORKER_SINKS: Mapping[str, events_cli.SinkFactory] = {**events_cli.SINKS, "alliance": _alliance_sink}


async def worker_command(settings: Settings, args: argparse.Namespace) -> int:
    return await events_cli.worker_command(settings, args, WORKER_SINKS)


WORKER = Verb("run the Kafka consumers", events_cli.add_worker_args, worker_command)
