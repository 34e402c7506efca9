"""The archive sink: viewer events → the `interactions` table in PostgreSQL, each event exactly once.

A batch is COPYed into a per-connection temp table, then one statement claims the batch's ids in
`event_ids` (ON CONFLICT DO NOTHING) and inserts into `interactions` only the rows whose id it just
claimed. Concurrent consumers on the same ids serialise on the `event_ids` primary key, so a
replay, a retry or a rebalance overlap never adds a second row. Day partitions are created ahead
(today and the next days) and on demand for older events still within the 7-day ingest window.
Partitions and remembered event ids older than the retention (`archive_retention_days`, 30 by
default) are dropped at start-up and every `PRUNE_EVERY_S` by whichever worker takes the prune lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from events.vocabulary import LEAVE

log = logging.getLogger("roomfeed.events.archive")

COLUMNS = (
    "event_id",
    "type",
    "viewer_id",
    "session_id",
    "room_id",
    "merchant_id",
    "ts",
    "dwell_ms",
    "amount",
    "payload",
    "device_id",
    "received_at",
)
# Everything else an event carries goes to `payload`; these travel only inside the worker.
_NOT_PAYLOAD = {*COLUMNS, "v", "_topic", "_partition", "_offset"}
DAYS_AHEAD = 2
PRUNE_EVERY_S = 6 * 3600.0
_PARTITION_LOCK = 72_000_200
_PRUNE_LOCK = 72_000_201

# payload travels as text: binary COPY has no jsonb encoder, and orjson has already encoded it.
# ts and received_at travel as the events' epoch milliseconds (bigint) and become timestamptz in the
# statement below, exactly (integer microseconds): a datetime object per time and event, and its
# encoding by the COPY, were a fifth of the archive worker's CPU (with the payload built only for the
# few types that have one: 9.1 -> 7.0 us per event, SinkRunner replaying 200,000 events, 3 pairs).
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS interactions_staging (
    event_id text, type text, viewer_id text, session_id text, room_id text, merchant_id text,
    ts bigint, dwell_ms integer, amount numeric(14, 2), payload text, device_id text,
    received_at bigint
) ON COMMIT DELETE ROWS
"""
_CLAIM_AND_INSERT = """
WITH fresh AS (
    INSERT INTO event_ids (event_id, ts)
    SELECT DISTINCT ON (event_id) event_id, timestamptz 'epoch' + ts * interval '1 millisecond'
    FROM interactions_staging ORDER BY event_id
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
INSERT INTO interactions (event_id, type, viewer_id, session_id, room_id, merchant_id, ts, dwell_ms,
                          amount, payload, device_id, received_at)
SELECT DISTINCT ON (s.event_id) s.event_id, s.type, s.viewer_id, s.session_id, s.room_id, s.merchant_id,
       timestamptz 'epoch' + s.ts * interval '1 millisecond', s.dwell_ms, s.amount, s.payload::jsonb,
       s.device_id, timestamptz 'epoch' + s.received_at * interval '1 millisecond'
FROM interactions_staging s JOIN fresh f ON f.event_id = s.event_id
ORDER BY s.event_id
"""


async def archive_rows(conn: asyncpg.Connection, rows: list[tuple[Any, ...]], *, more: bool = False) -> int:
    """COPY `rows` (`to_row`) into the staging table and archive those whose ids are new, in the
    caller's transaction (STAGING created on `conn`, the rows' day partitions in place); returns how
    many were new. `more`: further batches follow in the same transaction (the staging table is
    emptied after this one instead of at commit)."""
    await conn.copy_records_to_table("interactions_staging", records=rows, columns=COLUMNS)
    status = await conn.execute(_CLAIM_AND_INSERT)
    if more:
        await conn.execute("TRUNCATE interactions_staging")
    return int(status.rsplit(" ", 1)[-1])


_DAY_MS = 24 * 3600 * 1000
_EPOCH = dt.date(1970, 1, 1)


def to_row(event: dict[str, Any]) -> tuple[Any, ...]:
    """The staging table's row of an event (COLUMNS order; times in epoch milliseconds)."""
    amount = event.get("amount")
    dwell = event.get("dwell_ms")
    extra = event.keys() - _NOT_PAYLOAD  # most types carry nothing beyond the columns
    return (
        event["event_id"],
        event["type"],
        event["viewer_id"],
        event["session_id"],
        event["room_id"],
        event.get("merchant_id"),
        event["ts"],
        dwell if event["type"] == LEAVE else None,
        Decimal(str(amount)).quantize(Decimal("0.01")) if amount is not None else None,
        orjson.dumps({k: event[k] for k in extra}).decode() if extra else "{}",
        event.get("device_id"),
        event.get("received_at") or event["ts"],
    )


def days_of(rows: list[tuple[Any, ...]]) -> set[dt.date]:
    """The (UTC) days of the rows' event times: the day partitions they go to."""
    return {_EPOCH + dt.timedelta(days=day) for day in {row[6] // _DAY_MS for row in rows}}


def partition_name(day: dt.date) -> str:
    return f"interactions_{day:%Y%m%d}"


class ArchiveSink:
    """Sink `archive`: batched, idempotent writes of the interaction log."""

    name = "archive"

    def __init__(
        self, pool: asyncpg.Pool, retention_days: int = 30, prune_every_s: float = PRUNE_EVERY_S
    ) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self.prune_every_s = prune_every_s
        self._days: set[dt.date] = set()
        self._pruned_at = time.monotonic()  # prepare() prunes at start-up; write() every prune_every_s after

    async def prepare(self, today: dt.date | None = None) -> None:
        """Create today's partition and the next DAYS_AHEAD ones; drop what is past the retention."""
        start = today or dt.datetime.now(dt.UTC).date()
        await self.ensure_partitions({start + dt.timedelta(days=i) for i in range(DAYS_AHEAD + 1)})
        await self._prune_if_due(force=True)

    async def _prune_if_due(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._pruned_at < self.prune_every_s:
            return
        self._pruned_at = time.monotonic()
        try:
            dropped = await self.prune(self.retention_days)
        except Exception as exc:  # the log keeps growing a little longer; archiving goes on
            log.warning("pruning the interaction log failed: %s", exc)
            return
        if dropped:
            log.info(
                "interaction log pruned",
                extra={"fields": {"dropped": dropped, "keep_days": self.retention_days}},
            )

    async def ensure_partitions(self, days: set[dt.date]) -> None:
        missing = sorted(days - self._days)
        if not missing:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            # Several workers may meet the same new day at once; one creates it.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            for day in missing:
                lower = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
                upper = lower + dt.timedelta(days=1)
                # DDL takes no parameters; the name and bounds come from a date object, not input.
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF interactions "
                    f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
                )
        self._days.update(missing)

    async def write(self, batch: list[dict[str, Any]]) -> int:
        """Archive a batch; returns how many events were new."""
        if not batch:
            return 0
        rows = [to_row(e) for e in batch]
        await self.ensure_partitions(days_of(rows))
        async with self.pool.acquire() as conn:
            await conn.execute(STAGING)
            async with conn.transaction():
                written = await archive_rows(conn, rows)
        await self._prune_if_due()
        return written

    async def prune(self, keep_days: int, today: dt.date | None = None) -> list[str]:
        """Drop day partitions and forget event ids older than `keep_days` (past any replay of ingest);
        returns the partitions dropped (none when another worker holds the prune lock)."""
        cutoff = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=keep_days)
        dropped = []
        async with self.pool.acquire() as conn:
            # Statements commit one by one (a drop holds the parent table's lock only for itself);
            # a session lock keeps two workers from pruning at once.
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _PRUNE_LOCK):
                return []
            try:
                names = await conn.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'interactions'"
                )
                for record in names:
                    name = record["relname"]
                    try:
                        day = dt.datetime.strptime(name.removeprefix("interactions_"), "%Y%m%d").date()
                    except ValueError:
                        continue
                    if day < cutoff:
                        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                        self._days.discard(day)
                        dropped.append(name)
                await conn.execute(
                    "DELETE FROM event_ids WHERE archived_at < $1",
                    dt.datetime.combine(cutoff, dt.time(), tzinfo=dt.UTC),
                )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _PRUNE_LOCK)
        return dropped
