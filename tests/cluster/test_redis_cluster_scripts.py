"""Every domain's Redis scripts on a real Redis Cluster (3 masters with a replica each, REDIS_URL
redis+cluster://): the live index, deal gates, feed sessions and page claims, rate limits and the
alliance's boost tokens, grants and visit evidence. Each script's keys carry one hash tag, so the
cluster client sends it to the node that holds them all; a key on another slot would fail the call
with CROSSSLOT (or reach the wrong node), and these tests with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from alliance.clock import AllianceClock
from alliance.evidence import EvidenceBook, visit_key
from alliance.grants import TOKENS_KEY, GrantBook, TokenBucket, grant_key, pending_key
from alliance.scheduler import PLAN_KEY, TICK_KEY
from devtools.redis import RedisClusterServers
from events.vocabulary import ENTER, HEARTBEAT
from feed.pages import pages_key
from feed.sessions import SessionBook, served_key, session_key
from roomfeed.db import create_pool
from roomfeed.errors import Conflict, RateLimited
from roomfeed.ratelimit import KEY_PREFIX, Limit, RateLimiter
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings
from rooms.deals import DealBook, DealTerms, gate_key, holdings_key
from rooms.live_index import APPLY_KEYS, CHANGES_KEYS, IndexWriter, LiveIndex, LiveRoom, rebuild_live_index
from tests.support import PrivateServers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(base_settings: Settings) -> Iterator[RedisClusterServers]:
    servers = PrivateServers(base_settings)
    try:
        redis_cluster = servers.redis_cluster(masters=3, replicas_each=1)
        redis_cluster.start()
        redis_cluster.wait_ready()
        yield redis_cluster
    finally:
        servers.close()


@pytest.fixture
async def redis(cluster: RedisClusterServers, settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(replace(settings, redis_url=cluster.url()))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings, min_size=0)  # the app's pool (its JSON codecs)
    try:
        yield pool
    finally:
        await pool.close()


def _one_slot(keys: list[str]) -> bool:
    return len({key_slot(key.encode()) for key in keys}) == 1


def _room(room_id: str, status: str = "live") -> LiveRoom:
    return LiveRoom(
        room_id,
        "m_cluster",
        "a room",
        "beauty",
        ("tag",),
        "mid",
        "solo",
        "host",
        time.time(),
        "https://s",
        status,
    )


async def test_live_index_is_written_rebuilt_and_read_on_a_cluster(redis: Redis, pool: asyncpg.Pool) -> None:
    assert _one_slot(APPLY_KEYS) and _one_slot(CHANGES_KEYS)
    await rebuild_live_index(pool, redis)  # from PostgreSQL (the session's database: others' rooms)
    writer, reader = IndexWriter(redis), LiveIndex(redis)
    in_postgres = {room.room_id for room in (await reader.snapshot()).rooms}
    ours = {f"rc_live_{n}" for n in range(3)}
    for n in range(3):
        assert await writer.apply(_room(f"rc_live_{n}"), 1) > 0
    assert {room.room_id for room in (await reader.snapshot()).rooms} == in_postgres | ours
    assert await writer.apply(_room("rc_live_0", "ended"), 2) > 0
    assert await writer.apply(_room("rc_live_0"), 1) == 0  # an older change never goes backwards
    snapshot = await reader.snapshot()  # the reader's delta from the changelog
    assert {room.room_id for room in snapshot.rooms} == in_postgres | {"rc_live_1", "rc_live_2"}
    await rebuild_live_index(pool, redis)  # PostgreSQL is the truth: our rooms were never in it
    assert {room.room_id for room in (await reader.snapshot()).rooms} == in_postgres


async def test_a_deal_gate_never_lets_more_through_than_its_stock_on_a_cluster(
    redis: Redis, pool: asyncpg.Pool
) -> None:
    deals = [f"rc_deal_{n}" for n in range(6)]  # ids on several slots: each deal's keys on its own
    assert len({key_slot(gate_key(d).encode()) for d in deals}) > 1
    book = DealBook(pool, redis)
    for deal in deals:
        assert _one_slot([gate_key(deal), holdings_key(deal)])
        await redis.set(gate_key(deal), 3)
        terms = DealTerms(deal, "r", "m", per_viewer_limit=2, starts_at=0, ends_at=time.time() + 60)
        await book._take_tokens(terms, "viewer_a", 2)
        with pytest.raises(Conflict) as limit:
            await book._take_tokens(terms, "viewer_a", 1)
        assert limit.value.code == "limit_reached"
        await book._take_tokens(terms, "viewer_b", 1)
        with pytest.raises(Conflict) as sold:
            await book._take_tokens(terms, "viewer_c", 1)
        assert sold.value.code == "sold_out"
        await book._release(terms, "viewer_b", 1, stock=True)
        assert int(await redis.get(gate_key(deal)) or -1) == 1


async def test_sessions_claim_pages_on_a_cluster(redis: Redis, pool: asyncpg.Pool) -> None:
    book = SessionBook(redis, pool, lane=None)
    rooms = [f"rc_room_{n}" for n in range(10)]
    sessions = [f"rc_session_{n}" for n in range(4)]  # spread over the slots by their own tags
    assert len({key_slot(session_key(s).encode()) for s in sessions}) > 1
    for session_id in sessions:
        assert _one_slot([session_key(session_id), served_key(session_id), pages_key(session_id)])
        await book.create(session_id, "rc_viewer", {}, None)
        state = await book.load(session_id, "rc_viewer")
        assert state is not None
        counters = f"rf:feed:exp:rc:{session_id}"  # an experiment variant's hash: a slot of its own
        first = await book.claim(state, rooms, 4, counters)
        assert first.number == 0 and first.accepted == rooms[:4]
        second = await book.claim(state, rooms, 4, counters, mode="after", at=0)
        assert second.number == 1 and second.accepted == rooms[4:8]  # never a room served before
        stale = await book.claim(state, rooms, 4, mode="after", at=0)  # a retry of page 0's next
        assert stale.number == -1
        assert await redis.hget(counters, "impressions") == b"8"
        assert await redis.scard(served_key(session_id)) == 8
    await asyncio.gather(*book._pending)  # the sessions' PostgreSQL records, written in the background


async def test_rate_limits_charge_a_viewer_and_a_device_at_once_on_a_cluster(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    buckets = [
        ("v:rc_viewer", Limit(per_second=0.01, burst=2)),
        ("d:rc_phone", Limit(per_second=0.01, burst=3)),
    ]
    assert _one_slot([KEY_PREFIX + name for name, _ in buckets])
    await limiter.charge(buckets)
    await limiter.charge(buckets)
    with pytest.raises(RateLimited):
        await limiter.charge(buckets)
    assert not limiter.degraded  # Redis answered every time (a CROSSSLOT error would open the limiter)
    await limiter.charge([("v:rc_other_viewer", Limit(per_second=0.01, burst=2)), buckets[1]])
    with pytest.raises(RateLimited):  # the device's third token is gone: one phone, many viewers
        await limiter.charge([("v:rc_third_viewer", Limit(per_second=0.01, burst=2)), buckets[1]])


async def test_alliance_tokens_grants_and_evidence_on_a_cluster(redis: Redis) -> None:
    viewer, session = "rc_al_viewer", "rc_al_session"
    keys = [TOKENS_KEY, PLAN_KEY, TICK_KEY, grant_key(viewer, session, "r1"), pending_key("m1")]
    assert _one_slot([*keys, visit_key(viewer, "r1")])
    await redis.hset(TOKENS_KEY, mapping={"m1": 3, "m2": 0})
    placed = await TokenBucket(redis).take(viewer, session, [("m2", "r2"), ("m1", "r1")], limit=2)
    assert placed == [False, True]  # m2 has no token; m1's is spent and its grant left
    impression = {"event_id": "rc_imp_1", "viewer_id": viewer, "session_id": session, "room_id": "r1"}
    assert await GrantBook(redis).claim_many([impression]) == {"rc_imp_1": "m1"}
    assert await GrantBook(redis).claim_many([{**impression, "event_id": "rc_imp_2"}]) == {}  # once only
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": "rc_e1",
            "type": ENTER,
            "viewer_id": viewer,
            "room_id": "r1",
            "ts": now,
            "received_at": now,
        },
        {
            "event_id": "rc_e2",
            "type": HEARTBEAT,
            "viewer_id": viewer,
            "room_id": "r1",
            "ts": now + 20_000,
            "received_at": now + 20_000,
        },
    ]
    evidence = await EvidenceBook(redis, AllianceClock()).observe(events)
    assert evidence["rc_e2"].visit_id == "rc_e1" and evidence["rc_e2"].server_ms == 20_000
