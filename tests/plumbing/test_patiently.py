"""roomfeed.reach.patiently: a process that starts while its database restarts waits for it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from roomfeed.reach import patiently
from roomfeed.settings import Settings
from tests.support import free_port


async def test_waits_while_the_service_is_down_and_returns_what_the_attempt_gives() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
        return "connected"

    assert await patiently(attempt, Settings(), asyncio.Event(), max_delay=0.01) == "connected"
    assert calls == 3


async def test_a_failure_that_is_not_an_outage_is_raised_at_once() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await patiently(attempt, Settings(), asyncio.Event())
    assert calls == 1


async def test_stop_ends_the_wait_with_none_on_a_real_closed_port() -> None:
    settings = Settings(database_url=f"postgresql://roomfeed@127.0.0.1:{free_port()}/roomfeed")
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    got = await patiently(lambda: asyncpg.connect(settings.database_url, timeout=1), settings, stop)
    assert got is None and stop.is_set()
