"""Erasing a viewer from the rooms domain: its verified orders stay in the merchants' books without
the viewer; deal claims and consult bookings keep their units and slots under a pseudonym."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis

from rooms.deals import holdings_key


async def forget_viewer(
    conn: asyncpg.Connection, viewer_id: str, pseudonym: str
) -> tuple[dict[str, int], list[str]]:
    """Returns the counts and the deals the viewer held units of (their Redis mirrors)."""
    orders = await conn.execute("UPDATE orders SET viewer_id = NULL WHERE viewer_id = $1", viewer_id)
    deals = [
        r["deal_id"]
        for r in await conn.fetch(
            "UPDATE deal_viewer_claims SET viewer_id = $2 WHERE viewer_id = $1 RETURNING deal_id",
            viewer_id,
            pseudonym,
        )
    ]
    claims = await conn.execute(
        "UPDATE deal_claims SET viewer_id = $2 WHERE viewer_id = $1", viewer_id, pseudonym
    )
    bookings = await conn.execute(
        "UPDATE bookings SET viewer_id = $2 WHERE viewer_id = $1", viewer_id, pseudonym
    )
    return {
        "orders_anonymised": int(orders.split()[-1]),
        "deal_claims_anonymised": int(claims.split()[-1]),
        "bookings_anonymised": int(bookings.split()[-1]),
    }, deals


async def forget_viewer_live(redis: Redis, viewer_id: str, deal_ids: list[str]) -> int:
    removed = 0
    for deal_id in deal_ids:
        removed += int(await redis.hdel(holdings_key(deal_id), viewer_id))
    return removed
