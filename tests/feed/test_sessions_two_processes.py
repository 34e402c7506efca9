"""One session served by two API processes (two SessionBooks, each with its own memory and Redis lane)
on real Redis and PostgreSQL: neither repeats a room the other served, and a process whose memory
already holds the whole served set is not sent it again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from feed.sessions import LocalSessions, SessionBook, served_key
from roomfeed.db import create_pool
from roomfeed.redis_lane import RedisLane
from roomfeed.settings import Settings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def books(migrated: Settings) -> AsyncIterator[list[SessionBook]]:
    pool = await create_pool(migrated, min_size=1)
    redis = Redis.from_url(migrated.redis_url)
    lanes = [RedisLane(migrated.redis_url), RedisLane(migrated.redis_url)]
    made = [SessionBook(redis, pool, LocalSessions(), lane=lane) for lane in lanes]
    yield made
    for book in made:
        await asyncio.gather(*list(book._pending), return_exceptions=True)
    for lane in lanes:
        await lane.close()
    await redis.aclose()
    await pool.close()


async def test_two_processes_share_a_session_without_repeats(books: list[SessionBook]) -> None:
    first, second = books
    session, viewer = f"ses_{secrets.token_hex(6)}", f"v{secrets.token_hex(4)}"
    rooms = [f"room_{i}" for i in range(40)]
    state, degraded = await first.create(session, viewer, {}, None)
    assert not degraded
    served: list[str] = []
    for page in range(8):
        book = (first, second)[page % 2]
        loaded = await book.load(session, viewer)
        assert loaded is not None
        state = loaded
        assert state.served == set(served)  # what the other process served is known here
        offer = [r for r in rooms if r not in state.served]
        accepted = (await book.claim(state, offer[:7], 5)).accepted
        assert len(accepted) == 5 and not set(accepted) & set(served)
        served += accepted

    # A stale offer (rooms the other process served) is refused by Redis, whatever the memory says.
    loaded = await first.load(session, viewer)
    assert loaded is not None
    state = loaded
    accepted = (await first.claim(state, served[:3] + ["room_new"], 4)).accepted
    assert accepted == ["room_new"]


async def test_a_process_holding_the_whole_set_gets_a_count_not_the_members(
    books: list[SessionBook], migrated: Settings
) -> None:
    first, _ = books
    session, viewer = f"ses_{secrets.token_hex(6)}", f"v{secrets.token_hex(4)}"
    state, _ = await first.create(session, viewer, {}, None)
    accepted = (await first.claim(state, [f"room_{i}" for i in range(10)], 10)).accepted
    assert len(accepted) == 10
    assert first.lane is not None
    pipe = first.lane.pipeline()
    from feed.sessions import _SERVED

    pipe.eval(_SERVED, 1, served_key(session), 10)
    pipe.eval(_SERVED, 1, served_key(session), 9)
    count, members = await pipe.execute()
    assert count == 10 and sorted(members) == sorted(r.encode() for r in accepted)
    # Another process adds a room behind this one's back: the counts differ, the members come back.
    redis = Redis.from_url(migrated.redis_url)
    await redis.sadd(served_key(session), "room_other")
    await redis.aclose()
    loaded = await first.load(session, viewer)
    assert loaded is not None
    state = loaded
    assert "room_other" in state.served and len(state.served) == 11
