"""The interaction log keeps `archive_retention_days` of day partitions: older ones are dropped (with the
event ids they remembered) at worker start-up and every few hours, by one worker at a time."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from events.archive import ArchiveSink, partition_name
from roomfeed.settings import MIN_ARCHIVE_RETENTION_DAYS, Settings


async def _partitions(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'interactions'"
    )
    return {r["relname"] for r in rows}


async def test_partitions_past_the_retention_are_dropped_at_start_and_then_periodically(
    pool: asyncpg.Pool,
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    old, kept = today - dt.timedelta(days=45), today - dt.timedelta(days=20)
    sink = ArchiveSink(pool, retention_days=30, prune_every_s=3600)
    await sink.ensure_partitions({old, kept})
    at = dt.datetime.combine(old, dt.time(), tzinfo=dt.UTC)
    await pool.execute(
        "INSERT INTO event_ids (event_id, ts, archived_at) VALUES ($1, $2, $2) ON CONFLICT DO NOTHING",
        "ret-old",
        at,
    )
    await sink.prepare()  # worker start-up
    names = await _partitions(pool)
    assert partition_name(old) not in names and partition_name(kept) in names
    assert await pool.fetchval("SELECT count(*) FROM event_ids WHERE event_id = 'ret-old'") == 0

    # While running: nothing until the period has passed, then the next batch prunes.
    await sink.ensure_partitions({old})
    sink._pruned_at -= 3601
    await sink.write([])  # an empty poll writes nothing and prunes nothing
    assert partition_name(old) in await _partitions(pool)
    await sink.write(
        [
            {
                "event_id": f"ret-new-{dt.datetime.now().timestamp()}",
                "type": "like",
                "viewer_id": "v",
                "session_id": "s",
                "room_id": "r",
                "ts": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
            }
        ]
    )
    assert partition_name(old) not in await _partitions(pool)


async def test_a_second_worker_does_not_prune_while_one_is(pool: asyncpg.Pool) -> None:
    first, second = ArchiveSink(pool), ArchiveSink(pool)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(72000201)")  # what a pruning worker holds
        try:
            assert await second.prune(30) == []
        finally:
            await conn.execute("SELECT pg_advisory_unlock(72000201)")
    assert isinstance(await first.prune(30), list)


def test_a_retention_shorter_than_a_replay_window_is_refused() -> None:
    with pytest.raises(ValueError, match="ARCHIVE_RETENTION_DAYS"):
        Settings(archive_retention_days=MIN_ARCHIVE_RETENTION_DAYS - 1)
    assert Settings().archive_retention_days >= 14  # the trainer's default window
