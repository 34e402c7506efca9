"""Which merchant (store, staff) a viewer is attributed to, and until when (table `attributions`).

A session started from an attribution code attributes its viewer to the code's merchant for the
attribution window of that merchant's alliances (the longest of them; 24 h when it has none).
The alliance consumer reads these rows to decide whose traffic a visit is. The latest
attribution also sits in Redis (`rf:al:attr:<viewer>`) for the feed's cheap reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from redis.asyncio import Redis

from alliance.clock import AllianceClock
from alliance.codes import Attribution

DEFAULT_WINDOW_H = 24


@dataclass(frozen=True)
class ViewerAttribution:
    viewer_id: str
    merchant_id: str
    store_id: str | None
    staff_id: str | None
    starts_at: float
    ends_at: float
    code: str | None = None


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class AttributionBook:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis | None = None, clock: AllianceClock | None = None
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.clock = clock or AllianceClock()

    async def window_hours(self, merchant_id: str) -> int:
        hours = await self.pool.fetchval(
            """SELECT max(a.attribution_window_h) FROM alliance_members m JOIN alliances a USING (alliance_id)
               WHERE m.merchant_id = $1 AND m.status = 'active'""",
            merchant_id,
        )
        return int(hours) if hours else DEFAULT_WINDOW_H

    async def attribute(
        self,
        viewer_id: str,
        session_id: str | None,
        attribution: Attribution,
        now: float,
        *,
        code: str | None = None,
        device_id: str | None = None,
        account_created_at: float | None = None,
    ) -> ViewerAttribution:
        """Attribute the viewer to `attribution` from `now` (epoch s) for the attribution window.

        `device_id` is the device of the request (its X-Device-ID header), `account_created_at`
        when the platform's token says when the account was made: what viewer trust reads.
        """
        hours = await self.window_hours(attribution.merchant_id)
        starts = _ts(now)
        ends = starts + timedelta(seconds=self.clock.wall(hours * 3600))
        created = _ts(account_created_at) if account_created_at is not None else None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO attributions (viewer_id, session_id, merchant_id, store_id, staff_id, code,
                                             device_id, starts_at, ends_at, account_created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
                viewer_id,
                session_id,
                attribution.merchant_id,
                attribution.store_id,
                attribution.staff_id,
                code,
                device_id,
                starts,
                ends,
                created,
            )
            # First sighting of this viewer id: what burst detection counts per device and per code.
            await conn.execute(
                """INSERT INTO alliance_viewers (viewer_id, device_id, code, first_seen_at, account_created_at)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (viewer_id) DO UPDATE
                   SET device_id = COALESCE(alliance_viewers.device_id, EXCLUDED.device_id),
                       code = COALESCE(alliance_viewers.code, EXCLUDED.code),
                       account_created_at = COALESCE(EXCLUDED.account_created_at, alliance_viewers.account_created_at)""",
                viewer_id,
                device_id,
                code,
                starts,
                created,
            )
        result = ViewerAttribution(
            viewer_id,
            attribution.merchant_id,
            attribution.store_id,
            attribution.staff_id,
            now,
            ends.timestamp(),
            code,
        )
        if self.redis is not None:
            await self.redis.set(
                f"rf:al:attr:{viewer_id}",
                orjson.dumps(result.__dict__),
                exat=max(int(ends.timestamp()), int(now) + 1),
            )
        return result

    async def current(self, viewer_id: str, at: float) -> ViewerAttribution | None:
        found = await attributions_at(self.pool, [viewer_id], at - 3600 * 24 * 30, at)
        chosen = latest_at(found.get(viewer_id, []), at)
        return chosen


async def attributions_at(
    conn: asyncpg.Connection | asyncpg.Pool, viewer_ids: list[str], since: float, until: float
) -> dict[str, list[ViewerAttribution]]:
    """Attributions of these viewers that overlap [since, until], newest first per viewer."""
    rows = await conn.fetch(
        """SELECT viewer_id, merchant_id, store_id, staff_id, starts_at, ends_at, code FROM attributions
           WHERE viewer_id = ANY($1::text[]) AND starts_at <= $3 AND ends_at > $2
           ORDER BY viewer_id, starts_at DESC""",
        viewer_ids,
        _ts(since),
        _ts(until),
    )
    found: dict[str, list[ViewerAttribution]] = {}
    for r in rows:
        found.setdefault(r["viewer_id"], []).append(
            ViewerAttribution(
                r["viewer_id"],
                r["merchant_id"],
                r["store_id"],
                r["staff_id"],
                r["starts_at"].timestamp(),
                r["ends_at"].timestamp(),
                r["code"],
            )
        )
    return found


def latest_at(candidates: list[ViewerAttribution], at: float) -> ViewerAttribution | None:
    """The attribution in force at `at`: the most recent one that started by then and has not ended."""
    for a in candidates:  # newest first
        if a.starts_at <= at < a.ends_at:
            return a
    return None
