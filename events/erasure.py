"""Erasing a viewer from the events domain: its interaction log rows, its recent visits in Redis,
and the tombstone that keeps a replay of the topic from bringing them back (events.tombstones).
Event ids stay in `event_ids` (ids only): a replay of an erased event is a no-op for the archive."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis

from events.keys import recent_key


async def forget_viewer(conn: asyncpg.Connection, viewer_id: str, by: str) -> dict[str, int]:
    deleted = await conn.execute("DELETE FROM interactions WHERE viewer_id = $1", viewer_id)
    await conn.execute(
        """INSERT INTO erased_viewers (viewer_id, erased_by) VALUES ($1, $2)
           ON CONFLICT (viewer_id) DO UPDATE SET erased_at = now(), erased_by = EXCLUDED.erased_by""",
        viewer_id,
        by,
    )
    return {"interactions": int(deleted.split()[-1])}


async def forget_viewer_live(redis: Redis, viewer_id: str) -> int:
    return int(await redis.delete(recent_key(viewer_id)))
