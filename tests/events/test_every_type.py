"""Every event type of the vocabulary, built from its declared fields, goes through ingest, the
realtime, archive and alliance sinks and the dataset builder on the real broker: adding a type to
events/vocabulary.py is all it takes for it to travel (the places that count it choose to)."""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis

from alliance.consumer import AllianceSink
from events.consumer import SinkRunner
from events.keys import FIVE_MIN_MS, HOUR_FIELD, room_prefix
from events.vocabulary import CODE, FIELDS, SERVER_TYPES, TYPES, example_fields
from ranking.dataset import ARCHIVE_TYPES, from_events, load_archive
from roomfeed.app import Api
from roomfeed.assembly import Services
from roomfeed.settings import Settings
from tests.events.conftest import eventually, make_event, running, tag


async def test_every_event_type_reaches_ingest_the_sinks_and_the_dataset(
    app: Api[Services],
    app_client: httpx.AsyncClient,
    viewer_token: Callable[[str], str],
    worker: list[SinkRunner],
    migrated: Settings,
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    viewer, room = f"v{tag()}", f"room_{tag()}"
    now = int(time.time() * 1000)
    events = {
        kind: {**make_event(kind, viewer, room, ts=now - 1000 + i), **example_fields(kind)}
        for i, kind in enumerate(TYPES)
    }
    posted = [e for kind, e in events.items() if kind not in SERVER_TYPES]
    response = await app_client.post(
        "/v1/events",
        json=[*posted, *(events[kind] for kind in sorted(SERVER_TYPES))],
        headers={"Authorization": f"Bearer {viewer_token(viewer)}"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(posted)  # what roomfeed itself records, an app cannot post
    assert {r["error"]["code"] for r in response.json()["rejected"]} == {"server_only"}
    # ... the feed puts those on the topic itself (as feed.impressions does), keyed by viewer.
    ingest = app.services.events.ingest
    await ingest.publish([{**events[kind], "merchant_id": None, "received_at": now} for kind in SERVER_TYPES])

    alliance = SinkRunner(migrated, AllianceSink(pool, redis), group=f"alliance-every-type-{tag()}")
    async with running([alliance]):
        # archive: one row per type, every declared field kept (as a column or in the payload)
        rows = await eventually(
            lambda: _rows_when(pool, room, len(TYPES)),
            timeout=30,
        )
        by_type = {row["type"]: row for row in rows}
        assert set(by_type) == set(TYPES)
        for kind, event in events.items():
            row = by_type[kind]
            assert row["event_id"] == event["event_id"]
            payload = orjson.loads(row["payload"])
            for field in FIELDS[kind]:
                stored = row[field.name] if field.name in ("dwell_ms", "amount") else payload[field.name]
                assert stored == field.example, (kind, field.name, stored)

        # realtime: every id deduped, every counted type counted once in the room's hour buckets
        seen_keys = [key async for key in redis.scan_iter(match="rf:{ev}:seen:*")]
        for event in events.values():
            assert any([await redis.sismember(key, event["event_id"]) for key in seen_keys]), event["type"]
        b5 = now // FIVE_MIN_MS
        hashes = [await redis.hgetall(f"{room_prefix(room)}b:{b}") for b in (b5 - 1, b5)]
        for kind in TYPES:
            if kind in HOUR_FIELD:
                field_name = HOUR_FIELD[kind].encode()
                assert sum(int(h.get(field_name, 0)) for h in hashes) == 1, kind

        # alliance: the sink read the batch (it remembers the viewer it first saw)
        await eventually(
            lambda: pool.fetchval("SELECT count(*) = 1 FROM alliance_viewers WHERE viewer_id = $1", viewer)
        )

    # the dataset builder: every archived type gets its vocabulary code, by name
    log = from_events(dict(row) for row in rows)
    assert sorted(int(code) for code in log.type) == sorted(CODE[kind] for kind in TYPES)
    assert [TYPES[int(code)] for code in log.type] == [row["type"] for row in sorted(rows, key=_ts)]
    window = await load_archive(pool, now - 60_000, now + 60_000)
    mine = window.select(window.room == window.room_ids.index(room))
    assert sorted(TYPES[int(code)] for code in mine.type) == sorted(ARCHIVE_TYPES)


def _ts(row: asyncpg.Record) -> int:
    return int(row["ts"])


async def _rows_when(pool: asyncpg.Pool, room: str, count: int) -> list[asyncpg.Record] | None:
    rows = await pool.fetch(
        """SELECT event_id, type, viewer_id, session_id, room_id, merchant_id,
                  (extract(epoch FROM ts) * 1000)::bigint AS ts, dwell_ms, amount::float8 AS amount,
                  payload::text AS payload
           FROM interactions WHERE room_id = $1""",
        room,
    )
    return rows if len(rows) >= count else None
