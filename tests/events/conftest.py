"""Fixtures of the events tests (the root conftest gives `migrated`, `pool` and `redis`): a running
in-process worker (realtime + archive SinkRunners) on the session's topics; the app, its
client and viewer tokens are the root conftest's (tests/app_fixtures.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from events.archive import ArchiveSink
from events.consumer import SinkRunner
from events.realtime import RealtimeSink
from roomfeed.redis_lane import RoundTrip
from roomfeed.settings import Settings


@contextlib.asynccontextmanager
async def running(runners: list[SinkRunner]) -> AsyncIterator[list[SinkRunner]]:
    tasks = []
    for runner in runners:
        await runner.start()
        tasks.append(asyncio.create_task(runner.run()))
    try:
        yield runners
    finally:
        for runner in runners:
            await runner.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# Package scope: the consumers stop when tests/events ends. Kept for the whole session, their group
# sessions expired while later synchronous tests held the event loop, and the outside CI's teardown
# then waited on aiokafka's stop (events/consumer.py STOP_TIMEOUT_S).
@pytest.fixture(scope="package")
async def worker(
    app_client: httpx.AsyncClient, migrated: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[list[SinkRunner]]:
    """The realtime and archive sinks consuming the session's viewer-events topic."""
    archive = ArchiveSink(pool)
    await archive.prepare()
    runners = [SinkRunner(migrated, RealtimeSink(redis)), SinkRunner(migrated, archive)]
    async with running(runners):
        yield runners


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached in {timeout}s; last answer: {last!r}")


def tag() -> str:
    return secrets.token_hex(4)


def make_event(
    kind: str, viewer: str, room: str, *, event_id: str | None = None, ts: int | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"ev_{secrets.token_hex(8)}",
        "type": kind,
        "viewer_id": viewer,
        "session_id": f"ses_{viewer}",
        "room_id": room,
        "ts": ts if ts is not None else int(time.time() * 1000),
        **extra,
    }


class _Unknown:
    """A lookup that knows no owner and asks nobody."""

    def queue(self, trip: RoundTrip) -> None:
        return None

    async def finish(self) -> dict[str, str]:
        return {}


class _NoOwners:
    """Ingest's room directory and session owners for tests of ingest and the sinks: no room's merchant
    and no session's viewer is known (events keep merchant_id null; no session is refused as another's)."""

    def lookup(self, room_ids: Iterable[str]) -> _Unknown:
        return _Unknown()

    def owners_lookup(self, session_ids: Iterable[str]) -> _Unknown:
        return _Unknown()


NO_OWNERS = _NoOwners()
