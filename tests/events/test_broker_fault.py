"""The broker dies (kill -9) in the middle of a 20,000-event ingest and comes back: every event that
got a 202 is archived exactly once, and the Redis counters equal a recount from the archive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from events.archive import ArchiveSink
from events.consumer import SinkRunner
from events.live_stats import LiveStats
from events.realtime import RealtimeSink
from roomfeed.assembly import create_app
from roomfeed.auth import sign_viewer_token
from roomfeed.settings import Settings
from tests.events.conftest import eventually, make_event, running, tag
from tests.support import PrivateServers

TOTAL = 20_000
BATCH = 500
CLIENTS = 4
KINDS = ("impression", "enter", "like", "leave")


def batches(rooms: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    now = int(time.time() * 1000)
    for b in range(TOTAL // BATCH):
        viewer = f"fv{b}_{tag()}"
        events = []
        for i in range(BATCH):
            kind = KINDS[i % 4]
            extra: dict[str, Any] = {"dwell_ms": 500 * (i % 13)} if kind == "leave" else {}
            events.append(make_event(kind, viewer, rooms[(b + i) % len(rooms)], ts=now - 1000 + i, **extra))
        out.append((viewer, events))
    return out


@pytest.mark.slow
async def test_broker_kill_loses_no_accepted_event_and_counts_each_once(
    private_servers: PrivateServers, migrated: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    broker = private_servers.kafka()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(broker.wait_ready)
    own = replace(migrated, kafka_bootstrap=broker.bootstrap(), kafka_prefix=f"f{tag()}.", kafka_partitions=3)
    rooms = [f"room_f{tag()}" for _ in range(10)]
    work = batches(rooms)
    accepted: set[str] = set()
    statuses: list[int] = []
    killed = asyncio.Event()

    app = create_app(own, access_log=False)
    async with app.router.lifespan_context(app):
        assert await app.resources.wait_for_kafka(30)
        await app.services.events.topics_made()
        archive = ArchiveSink(pool)
        await archive.prepare()
        sinks = [SinkRunner(own, RealtimeSink(redis)), SinkRunner(own, archive)]
        transport = httpx.ASGITransport(app=app)
        async with (
            running(sinks),
            httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client,
        ):

            async def post_all(mine: list[tuple[str, list[dict[str, Any]]]]) -> None:
                for viewer, events in mine:
                    headers = {
                        "Authorization": f"Bearer {sign_viewer_token(own.viewer_token_secret, viewer)}"
                    }
                    while True:  # a client retries the same ids until it gets a 202
                        response = await client.post("/v1/events", json=events, headers=headers)
                        statuses.append(response.status_code)
                        if response.status_code == 202:
                            assert response.json()["accepted"] == BATCH
                            accepted.update(e["event_id"] for e in events)
                            break
                        assert response.status_code == 503, response.text
                        assert response.headers["retry-after"]
                        await asyncio.sleep(0.5)

            async def kill_and_restart() -> None:
                while len(accepted) < TOTAL * 0.4:
                    await asyncio.sleep(0.02)
                broker.kill()  # SIGKILL
                killed.set()
                await asyncio.sleep(4)
                await asyncio.to_thread(broker.start)
                await asyncio.to_thread(broker.wait_ready)

            chaos = asyncio.create_task(kill_and_restart())
            await asyncio.gather(*(post_all(work[i::CLIENTS]) for i in range(CLIENTS)))
            await chaos
            assert killed.is_set() and 503 in statuses, "the broker outage was not observed"
            assert len(accepted) == TOTAL

            async def archived() -> bool:
                count = await pool.fetchval(
                    "SELECT count(*) FROM interactions WHERE room_id = ANY($1)", rooms
                )
                return bool(count >= TOTAL)

            await eventually(archived, timeout=90)
            rows = await pool.fetch(
                "SELECT event_id, type, count(*) AS n FROM interactions WHERE room_id = ANY($1) "
                "GROUP BY event_id, type",
                rooms,
            )
            assert {r["event_id"] for r in rows} == accepted
            assert max(r["n"] for r in rows) == 1

            recount = await pool.fetchrow(
                "SELECT count(*) FILTER (WHERE type = 'enter') AS enters, "
                "count(*) FILTER (WHERE type = 'impression') AS impressions, "
                "count(*) FILTER (WHERE type = 'like') AS likes, "
                "count(*) FILTER (WHERE type = 'leave') AS leaves, "
                "count(*) FILTER (WHERE type = 'leave' AND dwell_ms < 3000) AS swipe_aways, "
                "coalesce(sum(dwell_ms), 0) AS dwell FROM interactions WHERE room_id = ANY($1)",
                rooms,
            )
            stats = LiveStats(redis)

            async def counted() -> dict[str, int] | None:
                per_room = (await stats.rooms(rooms)).values()
                totals = {
                    "enters": sum(s.enters_1h for s in per_room),
                    "impressions": sum(s.impressions_1h for s in per_room),
                    "likes": sum(s.likes_1h for s in per_room),
                    "leaves": sum(s.leaves_1h for s in per_room),
                    "swipe_aways": sum(s.swipe_aways_1h for s in per_room),
                    "dwell": sum(s.dwell_ms_1h for s in per_room),
                }
                return totals if totals == dict(recount) else None

            with contextlib.suppress(AssertionError):
                await eventually(counted, timeout=30)
            assert await counted() == dict(recount)
