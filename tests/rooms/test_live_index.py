"""The live-room index: incremental reads, rebuilds, and agreement with PostgreSQL after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from roomfeed.app import Api
from roomfeed.assembly import Services
from roomfeed.settings import REPO_ROOT, Settings
from rooms.live_index import KEY_EPOCH, KEY_LIVE, IndexWriter, LiveIndex, LiveRoom, rebuild_live_index
from rooms.outbox import RoomRelay
from tests.rooms.conftest import MerchantAccount
from tests.rooms.test_rooms_routes import make_room


async def live_in_postgres(pool: asyncpg.Pool) -> set[str]:
    return {r["room_id"] for r in await pool.fetch("SELECT room_id FROM rooms WHERE status = 'live'")}


async def test_snapshot_is_one_round_trip_when_nothing_changed_and_incremental_otherwise(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, redis: Redis
) -> None:
    index = LiveIndex(redis)
    first = await index.snapshot()
    assert await index.snapshot() is first  # unchanged: the same in-process copy
    rid = (await make_room(app_client, merchant, title="Incremental"))["room_id"]
    await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    second = await index.snapshot()
    assert second.version > first.version and rid in second.by_id and rid not in first.by_id
    assert len(second.rooms) == len(second.by_id)
    await app_client.post(f"/v1/rooms/{rid}/end", headers=merchant.headers)
    third = await index.snapshot()
    assert rid not in third.by_id and len(third.rooms) == len(second.rooms) - 1


async def test_writes_apply_in_version_order_whatever_order_they_arrive(redis: Redis) -> None:
    writer, index = IndexWriter(redis), LiveIndex(redis)
    room = LiveRoom("room_order", "mer_x", "t", "beauty", (), "mid", "one_to_many", "", 1.0, "", "live")
    await writer.apply(room, 10_000_002)
    ended = LiveRoom("room_order", "mer_x", "t", "beauty", (), "mid", "one_to_many", "", 1.0, "", "ended")
    await writer.apply(ended, 10_000_003)
    assert await writer.apply(room, 10_000_002) == 0  # a late retry of the older change is ignored
    assert "room_order" not in (await index.snapshot()).by_id


async def test_rebuild_from_postgresql_agrees_and_readers_reload(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, pool: asyncpg.Pool, redis: Redis
) -> None:
    for i in range(3):
        rid = (await make_room(app_client, merchant, title=f"Rebuild {i}"))["room_id"]
        await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    index = LiveIndex(redis)
    before = await index.snapshot()
    await redis.hdel(KEY_LIVE, rid)  # drift the index by hand
    count = await rebuild_live_index(pool, redis)
    after = await index.snapshot()
    assert after.epoch != before.epoch
    assert set(after.by_id) == await live_in_postgres(pool) and count == len(after.by_id)


async def test_index_lost_by_redis_is_rebuilt_by_the_relay(
    app: Api[Services],
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    rid = (await make_room(app_client, merchant, title="Survives a flush"))["room_id"]
    await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    await redis.delete(KEY_EPOCH, KEY_LIVE)
    relay: RoomRelay = app.services.rooms.relay
    await relay.run_once(settle_seconds=0)
    assert set((await LiveIndex(redis).snapshot()).by_id) == await live_in_postgres(pool)


_CRASH_BETWEEN_WRITES = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from roomfeed.db import create_pool
    from roomfeed.redis_client import create_redis
    from roomfeed.settings import Settings
    from rooms.live_index import IndexWriter
    from rooms.lifecycle import RoomBook
    from rooms.outbox import RoomRelay

    class NoKafka:
        async def send(self, topic, key, value):
            return False

    async def die(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # PostgreSQL has committed; Redis is never written

    async def main():
        settings = Settings.from_env()
        pool, redis = await create_pool(settings), create_redis(settings)
        rooms = RoomBook(pool, redis, RoomRelay(pool, redis, NoKafka()))
        IndexWriter.apply = die
        await rooms.{verb}(sys.argv[1], sys.argv[2])

    asyncio.run(main())
    """
)


def crash_between_writes(settings: Settings, verb: str, merchant_id: str, room_id: str) -> int:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    script = _CRASH_BETWEEN_WRITES.replace("{verb}", verb)
    done = subprocess.run(
        [sys.executable, "-c", script, merchant_id, room_id], env=env, cwd=Path(REPO_ROOT), timeout=60
    )
    return done.returncode


async def test_crash_between_postgresql_and_redis_is_repaired_on_restart(
    settings: Settings,
    app: Api[Services],
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    app_relay: RoomRelay = app.services.rooms.relay
    await app_relay.stop()  # so that only the "restarted" relay below repairs
    try:
        await _crash_and_repair(settings, app_client, merchant, pool, redis)
    finally:
        app_relay.start()


async def _crash_and_repair(
    settings: Settings,
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    going_live = (await make_room(app_client, merchant, title="Crash on go-live"))["room_id"]
    ending = (await make_room(app_client, merchant, title="Crash on end"))["room_id"]
    await app_client.post(f"/v1/rooms/{ending}/live", headers=merchant.headers)

    rc1, rc2 = await asyncio.gather(
        asyncio.to_thread(crash_between_writes, settings, "go_live", merchant.merchant_id, going_live),
        asyncio.to_thread(crash_between_writes, settings, "end", merchant.merchant_id, ending),
    )
    assert rc1 == rc2 == -9
    index = LiveIndex(redis)
    drifted = await index.snapshot()
    assert going_live not in drifted.by_id and ending in drifted.by_id  # PostgreSQL moved on, Redis did not
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM room_changes WHERE room_id = ANY($1) AND NOT indexed", [going_live, ending]
        )
        == 2
    )

    # "Restart": a fresh process's relay finishes the outbox.
    class NoKafka:
        async def send(self, topic: str, key: str, value: object) -> bool:
            return False

    await RoomRelay(pool, redis, NoKafka()).run_once(settle_seconds=0)
    repaired = await index.snapshot()
    assert going_live in repaired.by_id and ending not in repaired.by_id
    assert set(repaired.by_id) == await live_in_postgres(pool)


async def test_feed_keeps_its_last_snapshot_when_redis_goes_down(
    private_servers: Any, pool: asyncpg.Pool, app_client: httpx.AsyncClient, merchant: MerchantAccount
) -> None:
    rid = (await make_room(app_client, merchant, title="Outlives Redis"))["room_id"]
    await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    server = private_servers.redis()
    await asyncio.to_thread(server.start)
    client = Redis.from_url(server.url(), socket_timeout=1.0, socket_connect_timeout=0.5)
    # Poll PING ourselves: RedisServer.wait_ready can misread a just-spawned redis as dead.
    for _ in range(150):
        with contextlib.suppress(RedisError, OSError):
            if await client.ping():
                break
        await asyncio.sleep(0.1)
    try:
        await rebuild_live_index(pool, client)
        index = LiveIndex(client)
        before = await index.snapshot()
        assert rid in before.by_id
        server.kill()
        assert await index.snapshot() is before
        with pytest.raises((RedisError, OSError)):
            await LiveIndex(client).snapshot()  # a process that never read it has nothing to serve
    finally:
        await client.aclose()


async def test_rebuild_verb_rebuilds_the_index_from_postgresql(
    settings: Settings,
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    rid = (await make_room(app_client, merchant, title="Rebuilt by the CLI"))["room_id"]
    await app_client.post(f"/v1/rooms/{rid}/live", headers=merchant.headers)
    await redis.hdel(KEY_LIVE, rid)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "roomfeed.cli", "rebuild"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "live room(s)" in done.stdout
    assert set((await LiveIndex(redis).snapshot()).by_id) == await live_in_postgres(pool)
