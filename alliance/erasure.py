"""Erasing a viewer from the alliance: its attributions and first sighting go; the visits that
earned (or did not earn) exposure stay as ledger evidence under a pseudonym, with no device; its
attributed order entries keep their amounts for the merchants' books, without the viewer."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis


async def forget_viewer(conn: asyncpg.Connection, viewer_id: str, pseudonym: str) -> dict[str, int]:
    attributions = await conn.execute("DELETE FROM attributions WHERE viewer_id = $1", viewer_id)
    await conn.execute("DELETE FROM alliance_viewers WHERE viewer_id = $1", viewer_id)
    visits = await conn.execute(
        "UPDATE alliance_visits SET viewer_id = $2, device_id = $2 WHERE viewer_id = $1", viewer_id, pseudonym
    )
    orders = await conn.execute(
        "UPDATE attributed_order_entries SET viewer_id = NULL WHERE viewer_id = $1", viewer_id
    )
    return {
        "attributions": int(attributions.split()[-1]),
        "visits_anonymised": int(visits.split()[-1]),
        "attributed_order_entries_anonymised": int(orders.split()[-1]),
    }


async def forget_viewer_live(redis: Redis, viewer_id: str) -> int:
    keys = [f"rf:al:attr:{viewer_id}"]
    async for key in redis.scan_iter(match=f"rf:al:start:{viewer_id}:*", count=1000):
        keys.append(key)
    return int(await redis.delete(*keys))
