"""Past interactions into the interaction log (`roomfeed import`, bulk/): the archive sink's own COPY
path, idempotent by event id, a whole file in one transaction.

An imported event passes the same schema as at ingest (`events.schema.validate`), without the 7-day
ingest window (history is older than that by nature) but within what the archive keeps
(`archive_retention_days`: older day partitions are dropped, so an older event would vanish) and not
in the future. Imported events go to PostgreSQL only: not to Kafka, so neither the realtime sink (live
room stats, presence) nor the alliance sink (contribution credit) ever counts them as live; the
trainer and everything that reads the archive see them like any other event.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import asyncpg

from events.archive import DAYS_AHEAD, STAGING, ArchiveSink, archive_rows, to_row
from events.schema import MAX_AHEAD_MS, Event, Rejection, validate

DAY_MS = 24 * 3600 * 1000


def oldest_kept_ms(retention_days: int, now_ms: int | None = None) -> int:
    """The earliest event time the archive still keeps (the start of its oldest day partition)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    today = dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC).date()
    first = dt.datetime.combine(today - dt.timedelta(days=retention_days), dt.time(), tzinfo=dt.UTC)
    return int(first.timestamp() * 1000)


def read_past_event(raw: Any, now_ms: int, oldest_ms: int, retention_days: int) -> Event | Rejection:
    """The normalised event, or why it cannot be imported (the first bad field, as ingest says it)."""
    event = validate(raw, now_ms, check_time=False)
    if isinstance(event, Rejection):
        return event
    if event["ts"] > now_ms + MAX_AHEAD_MS:
        return Rejection("validation_failed", "ts is more than 5 minutes in the future", "ts")
    if event["ts"] < oldest_ms:
        return Rejection(
            "validation_failed",
            f"ts is older than the archive keeps ({retention_days} days: ROOMFEED_ARCHIVE_RETENTION_DAYS)",
            "ts",
        )
    return event


class ArchiveBackfill:
    """One file's events into the archive: `open()`, `write(batch)`..., then `commit()` or `rollback()`."""

    def __init__(self, pool: asyncpg.Pool, retention_days: int) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self._conn: Any = None
        self._transaction: Any = None

    async def open(self, now_ms: int | None = None) -> None:
        """Every day partition the archive keeps exists first (created in their own transaction, so the
        long import transaction takes no DDL lock a live archive consumer would wait on)."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        today = dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC).date()
        days = {today + dt.timedelta(days=d) for d in range(-self.retention_days, DAYS_AHEAD + 1)}
        await ArchiveSink(self.pool, self.retention_days).ensure_partitions(days)
        self._conn = await self.pool.acquire()
        await self._conn.execute(STAGING)
        self._transaction = self._conn.transaction()
        await self._transaction.start()

    async def write(self, events: list[Event]) -> int:
        """Archive events (merchant_id filled in); returns how many were new. Visible only after commit."""
        if not events:
            return 0
        return await archive_rows(self._conn, [to_row(e) for e in events], more=True)

    async def commit(self) -> None:
        try:
            await self._transaction.commit()
        finally:
            await self._release()

    async def rollback(self) -> None:
        try:
            if self._transaction is not None:
                await self._transaction.rollback()
        finally:
            await self._release()

    async def _release(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._transaction = self._conn, None, None
            await self.pool.release(conn)
