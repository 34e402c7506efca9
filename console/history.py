"""The console's time series: periodic snapshots of the marketplace and of alliance accounts.

Owns the `console_samples` table. Live statistics in Redis are rolling windows (now, last hour);
a dashboard that shows the marketplace *over time* needs the past, so the API process samples
the numbers every `SAMPLE_SECONDS` (`MetricSampler`) and the console reads them back as series.
Several API workers sample at once safely: a sample's time is floored to the period and the
primary key (kind, subject, at) keeps the first writer. Samples older than `RETENTION` go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from roomfeed.leader import Leadership, always_lead
from roomfeed.tasks import cancel_and_wait

log = logging.getLogger("roomfeed.console.history")

SAMPLE_SECONDS = 10.0
RETENTION = timedelta(days=2)


def _floored(at: float, period: float) -> datetime:
    return datetime.fromtimestamp(at - at % period, tz=UTC)


class MetricHistory:
    def __init__(self, pool: asyncpg.Pool, period_s: float = SAMPLE_SECONDS) -> None:
        self.pool = pool
        self.period_s = period_s

    async def record(
        self, at: float, marketplace: dict[str, Any], accounts: Sequence[dict[str, Any]]
    ) -> bool:
        """Store one sample of the marketplace and of every alliance account; False if already sampled."""
        stamp = _floored(at, self.period_s)
        rows = [("marketplace", "", stamp, marketplace)]
        rows += [("alliance", a["merchant_id"], stamp, dict(a)) for a in accounts]
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """INSERT INTO console_samples (kind, subject, at, data) VALUES ($1, $2, $3, $4)
                   ON CONFLICT DO NOTHING RETURNING true""",
                *rows[0],
            )
            if not inserted:
                return False
            if len(rows) > 1:
                await conn.executemany(
                    """INSERT INTO console_samples (kind, subject, at, data) VALUES ($1, $2, $3, $4)
                       ON CONFLICT DO NOTHING""",
                    rows[1:],
                )
        return True

    async def marketplace(self, since: float) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT at, data FROM console_samples
               WHERE kind = 'marketplace' AND subject = '' AND at >= $1 ORDER BY at""",
            datetime.fromtimestamp(since, tz=UTC),
        )
        return [{**row["data"], "at": row["at"].timestamp()} for row in rows]

    async def alliance(self, since: float, merchant_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """merchant_id → [{at, earned, delivered, balance}], optionally one merchant only."""
        rows = await self.pool.fetch(
            """SELECT subject, at, data FROM console_samples
               WHERE kind = 'alliance' AND at >= $1 AND ($2::text IS NULL OR subject = $2)
               ORDER BY subject, at""",
            datetime.fromtimestamp(since, tz=UTC),
            merchant_id,
        )
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            data = row["data"]
            series.setdefault(row["subject"], []).append(
                {
                    "at": row["at"].timestamp(),
                    "earned": data.get("earned"),
                    "delivered": data.get("delivered"),
                    "balance": data.get("balance"),
                    "name": data.get("name"),
                }
            )
        return series

    async def forget_before(self, before: float) -> None:
        await self.pool.execute(
            "DELETE FROM console_samples WHERE at < $1", datetime.fromtimestamp(before, tz=UTC)
        )


class MetricSampler:
    """Background task: every period, snapshot the marketplace and record it."""

    def __init__(
        self,
        history: MetricHistory,
        snapshot: Callable[[], Awaitable[tuple[dict[str, Any], list[dict[str, Any]]]]],
    ) -> None:
        self.history = history
        self.snapshot = snapshot
        self._task: asyncio.Task[None] | None = None

    async def sample_once(self, now: float | None = None) -> bool:
        at = now if now is not None else time.time()
        marketplace, accounts = await self.snapshot()
        return await self.history.record(at, marketplace, accounts)

    async def _run(self, leadership: Leadership) -> None:
        period = self.history.period_s
        rounds = 0
        while True:
            # Sleep to the next period boundary so every worker samples the same instant.
            await asyncio.sleep(period - time.time() % period + 0.05)
            try:
                if not await leadership():  # once per cluster (roomfeed.leader)
                    continue
                await self.sample_once()
                rounds += 1
                if rounds % 360 == 1:
                    await self.history.forget_before(time.time() - RETENTION.total_seconds())
            except Exception as exc:  # PostgreSQL down: keep trying, the dashboard shows the gap
                log.warning("console sample failed: %s", exc)

    def start(self, leadership: Leadership = always_lead) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(leadership), name="console-sampler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
