"""Ingest's lookups of who owns a session and which merchant owns a room (roomfeed.owners): one Redis
round trip for both, PostgreSQL only for what Redis did not know, unknown ids remembered briefly.
Real PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis

from feed.sessions import SessionBook, session_key
from roomfeed.owners import UNKNOWN_FOR_S
from roomfeed.redis_lane import RedisLane, RoundTrip, round_trip
from roomfeed.settings import Settings
from rooms.directory import RoomDirectory
from tests.support import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def lane(migrated: Settings) -> AsyncIterator[RedisLane]:
    lane = RedisLane(migrated.redis_url)
    yield lane
    await lane.close()


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


async def ingest_asks(sessions: SessionBook, session_ids: list[str], trip: RoundTrip) -> dict[str, str]:
    """Who owns these sessions, asked the way ingest asks (events.ingest.Ingest._look_up): the lookup
    queued on the batch's round trip, the trip sent when it holds anything, then `finish()`; a trip that
    fails leaves PostgreSQL to answer for all of them."""
    lookup = sessions.owners_lookup(session_ids)
    lookup.queue(trip)
    if len(trip):
        with contextlib.suppress(Exception):
            await trip.send()
    return await lookup.finish()


async def _session_in_postgres(pool: asyncpg.Pool, session_id: str, viewer_id: str) -> None:
    await pool.execute(
        "INSERT INTO feed_sessions (session_id, viewer_id, entry) VALUES ($1, $2, '{}'::jsonb)",
        session_id,
        viewer_id,
    )


async def test_sessions_and_rooms_share_one_round_trip(
    pool: asyncpg.Pool, redis: Redis, lane: RedisLane
) -> None:
    sessions = SessionBook(redis, pool, lane=lane)
    rooms = RoomDirectory(pool, redis, lane)
    in_redis, in_postgres = _id("ses"), _id("ses")
    await redis.hset(session_key(in_redis), mapping={"viewer_id": "v-redis"})
    await _session_in_postgres(pool, in_postgres, "v-pg")
    room = _id("room")
    await RoomDirectory(pool, redis).remember({room: "m-1"})  # created by another process

    trip = round_trip(redis, lane)
    owners = sessions.owners_lookup([in_redis, in_postgres, "ses_nobody"])
    merchants = rooms.lookup([room, "room_nobody"])
    owners.queue(trip)
    merchants.queue(trip)
    assert len(trip) == 3 + 1  # one HGET per session, one HMGET for every room
    await trip.send()
    assert await owners.finish() == {in_redis: "v-redis", in_postgres: "v-pg"}
    assert await merchants.finish() == {room: "m-1"}

    # Known owners are kept in process memory: the next batch sends nothing to Redis.
    again = round_trip(redis, lane)
    known = sessions.owners_lookup([in_redis, in_postgres])
    known.queue(again)
    rooms.lookup([room]).queue(again)
    assert len(again) == 0
    assert await known.finish() == {in_redis: "v-redis", in_postgres: "v-pg"}


async def test_a_room_created_after_it_was_named_unknown_is_found_at_once(
    pool: asyncpg.Pool, redis: Redis, lane: RedisLane
) -> None:
    directory = RoomDirectory(pool, redis, lane)
    room = _id("room")
    assert await directory.merchant_of([room]) == {}
    assert room in directory.index.unknown  # neither Redis nor PostgreSQL knew it
    await RoomDirectory(pool, redis).remember({room: "m-2"})  # another process creates it
    assert await directory.merchant_of([room]) == {room: "m-2"}  # Redis is still asked first
    assert room not in directory.index.unknown


async def test_unknown_ids_skip_postgres_only_for_a_while(
    pool: asyncpg.Pool, redis: Redis, lane: RedisLane
) -> None:
    now = [1000.0]
    sessions = SessionBook(redis, pool, lane=lane)
    sessions._owners.clock = lambda: now[0]
    sid = _id("ses")
    assert await ingest_asks(sessions, [sid], round_trip(redis, lane)) == {}
    # Written to PostgreSQL only (its Redis write missed, as when Redis was down at its creation):
    # the id stays unknown while it is remembered as such, and is found once that lapses.
    await _session_in_postgres(pool, sid, "v-late")
    assert await ingest_asks(sessions, [sid], round_trip(redis, lane)) == {}
    now[0] += UNKNOWN_FOR_S + 0.1
    assert await ingest_asks(sessions, [sid], round_trip(redis, lane)) == {sid: "v-late"}


async def test_with_redis_down_postgres_answers_and_nothing_is_remembered_as_unknown(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    down = RedisLane(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2)
    try:
        sessions = SessionBook(redis, pool, lane=down)
        known, late = _id("ses"), _id("ses")
        await _session_in_postgres(pool, known, "v-1")
        assert await ingest_asks(sessions, [known, late], round_trip(redis, down)) == {known: "v-1"}
        assert not sessions._owners.unknown  # Redis did not answer: "unknown" proves nothing
        await _session_in_postgres(pool, late, "v-2")
        assert await ingest_asks(sessions, [late], round_trip(redis, down)) == {late: "v-2"}
    finally:
        await down.close()
