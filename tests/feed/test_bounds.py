"""The feed's in-process memory stays bounded however many viewers come: the session copy and the
blocks copy are LRUs of a documented size, viewers without blocks cost no entry, and the impression
buffer drops the oldest beyond its capacity. Real PostgreSQL and Redis behind `SessionBook`."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from feed.impressions import ImpressionPublisher
from feed.sessions import (
    BLOCKS_CAPACITY,
    SESSION_CAPACITY,
    LocalBlocks,
    LocalSessions,
    SessionBook,
    SessionState,
)
from roomfeed.db import create_pool
from roomfeed.redis_lane import RedisLane
from roomfeed.settings import Settings

pytestmark = pytest.mark.timeout(120)

VIEWERS = 50_000


@pytest.fixture
async def book(settings: Settings) -> AsyncIterator[SessionBook]:
    pool = await create_pool(settings, min_size=2)
    redis = Redis.from_url(settings.redis_url)
    lane = RedisLane(settings.redis_url)
    sessions = SessionBook(redis, pool, LocalSessions(capacity=1_000, blocks_capacity=500), lane=lane)
    yield sessions
    await asyncio.gather(*list(sessions._pending), return_exceptions=True)
    await lane.close()
    await redis.aclose()
    await pool.close()


def test_the_documented_bounds_keep_a_process_flat() -> None:
    assert LocalSessions().capacity == SESSION_CAPACITY <= 5_000  # ~9 KB a session with 100 served rooms
    assert LocalSessions().blocks.capacity == BLOCKS_CAPACITY <= 20_000


def test_fifty_thousand_viewers_starting_sessions_stay_within_the_local_bounds() -> None:
    local = LocalSessions()
    every = 3  # one viewer in 3 has blocked a merchant: more blockers than the bound
    for i in range(VIEWERS):
        viewer = f"v{i}"
        local.put(SessionState(f"s{i}", viewer, served={f"r{i}", f"r{i + 1}"}))
        local.blocks.replace(viewer, {f"m{i}"} if i % every == 0 else set())
    assert len(local) == SESSION_CAPACITY
    assert len(local.blocks) == min(BLOCKS_CAPACITY, len(range(0, VIEWERS, every)))
    # The most recent are the ones kept: the last session and the last blocker are still answered.
    assert local.get(f"s{VIEWERS - 1}") is not None and local.get("s0") is None
    last_blocker = (VIEWERS - 1) // every * every
    assert local.blocks.of(f"v{last_blocker}") == {f"m{last_blocker}"}
    assert local.blocks.of("v0") == frozenset()


def test_a_viewer_without_blocks_takes_no_entry() -> None:
    blocks = LocalBlocks(capacity=3)
    blocks.replace("v1", set())
    assert len(blocks) == 0 and blocks.of("v1") == frozenset()
    blocks.add("v1", "m1")
    blocks.discard("v1", "m1")
    assert len(blocks) == 0


def test_blocks_lru_keeps_the_recently_seen_viewers() -> None:
    blocks = LocalBlocks(capacity=2)
    blocks.add("a", "m1")
    blocks.add("b", "m2")
    assert blocks.of("a") == {"m1"}  # a is now the most recent
    blocks.add("c", "m3")
    assert blocks.of("b") == frozenset() and blocks.of("a") == {"m1"} and blocks.of("c") == {"m3"}


async def test_session_book_starting_many_sessions_keeps_its_local_copy_bounded(book: SessionBook) -> None:
    """Through the real create/load/block path (PostgreSQL reads, Redis writes): more viewers than
    either bound, a few with blocks; memory ends at the bounds and blocks still apply."""
    tag = secrets.token_hex(3)
    viewers = [f"bounds_{tag}_{i}" for i in range(3_000)]
    blockers = viewers[::5]
    for viewer in blockers:
        await book.block(viewer, f"m_{viewer}")
    assert len(book.local.blocks) == 500

    semaphore = asyncio.Semaphore(32)

    async def start(viewer: str) -> None:
        async with semaphore:
            _, degraded = await book.create(f"ses_{viewer}", viewer, {}, None)
            assert degraded is False

    await asyncio.gather(*(start(v) for v in viewers))
    assert len(book.local) == 1_000
    assert len(book.local.blocks) <= 500
    # Every viewer's blocks still reach the feed: from PostgreSQL at session start, Redis on load.
    viewer = blockers[0]
    state = await book.load(f"ses_{viewer}", viewer)
    assert state is not None and state.blocked == {f"m_{viewer}"}


async def test_impression_buffer_drops_the_oldest_beyond_its_capacity() -> None:
    publisher = ImpressionPublisher(resources=None, topic="unused", capacity=1_000)
    for page in range(VIEWERS // 10):
        publisher.publish([{"viewer_id": f"v{page}", "n": i} for i in range(10)])
    assert len(publisher.queue) == 1_000
    assert publisher.queue[-1] == {"viewer_id": f"v{VIEWERS // 10 - 1}", "n": 9}
