"""Rooms and their lifecycle: scheduled → live → ended (→ replay), and the products shown in a room.

Owns `RoomBook`. Each transition is one conditional UPDATE in PostgreSQL (so two racing requests
cannot both move a room, and an invalid move answers 409 `invalid_transition`), committed with a
`room_changes` outbox row and a new `index_version`; then `RoomRelay.deliver` writes the live index
and the `room-lifecycle` event. The HTTP answer does not depend on Redis or Kafka being up: what
PostgreSQL committed is the room's state, and the relay catches the index and the topic up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
from redis.asyncio import Redis

from roomfeed.errors import Conflict, NotFound
from roomfeed.ids import new_id
from roomfeed.paging import keyset_page
from rooms.catalog import MerchantCatalog, require_known
from rooms.directory import RoomDirectory
from rooms.live_index import room_columns
from rooms.outbox import RoomRelay

ROOM_SELECT = (
    room_columns()
    + ", extract(epoch FROM scheduled_at)::float8 AS scheduled_at, extract(epoch FROM created_at)::float8 AS created_at"
)


def room_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "room_id": row["room_id"],
        "merchant_id": row["merchant_id"],
        "title": row["title"],
        "host": row["host"],
        "category": row["category"],
        "tags": list(row["tags"] or ()),
        "price_band": row["price_band"],
        "format": row["format"],
        "scheduled_at": row["scheduled_at"],
        "stream_url": row["stream_url"],
        "status": row["status"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "replay_url": row["replay_url"],
        "created_at": row["created_at"],
    }


async def rooms_of_merchant(
    pool: asyncpg.Pool, merchant_id: str, batch: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Every room of a merchant, oldest first (`roomfeed export`), read a batch at a time."""
    after: tuple[Any, str] | None = None
    while True:
        rows = await pool.fetch(
            f"SELECT {ROOM_SELECT}, created_at AS created FROM rooms WHERE merchant_id = $1 "  # noqa: S608
            "AND ($2::timestamptz IS NULL OR (created_at, room_id) > ($2, $3)) "
            "ORDER BY created_at, room_id LIMIT $4",
            merchant_id,
            after[0] if after else None,
            after[1] if after else "",
            batch,
        )
        for row in rows:
            yield room_json(row)
        if len(rows) < batch:
            return
        after = (rows[-1]["created"], rows[-1]["room_id"])


# Per transition: the status it starts from, what it needs of the room (constant SQL), what it does.
_TRANSITIONS: dict[str, tuple[str, str, str]] = {
    # A room goes live with a stream to play: its own, or the one the request names ($3).
    "live": (
        "scheduled",
        "status = 'scheduled' AND coalesce($3, stream_url) <> ''",
        "status = 'live', started_at = now(), stream_url = coalesce($3, stream_url)",
    ),
    "ended": (
        "live",
        "status = 'live'",
        "status = 'ended', ended_at = now(), replay_url = coalesce($3, replay_url)",
    ),
    "replay": ("ended", "status = 'ended'", "replay_url = $3"),
}


class RoomBook:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, relay: RoomRelay, directory: RoomDirectory | None = None
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.relay = relay
        self.directory = directory or RoomDirectory(pool, redis)
        self.catalog = MerchantCatalog(pool)

    async def create(
        self,
        merchant_id: str,
        *,
        title: str,
        category: str,
        host: str = "",
        tags: list[str] | None = None,
        price_band: str = "mid",
        format: str = "one_to_many",
        scheduled_at: float | None = None,
        stream_url: str = "",
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                INSERT INTO rooms (room_id, merchant_id, title, host, category, tags, price_band, format,
                                   scheduled_at, stream_url)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9), $10)
                RETURNING {ROOM_SELECT}
                """,  # noqa: S608
                new_id("room"),
                merchant_id,
                title,
                host,
                category,
                list(dict.fromkeys(tags or [])),
                price_band,
                format,
                scheduled_at,
                stream_url,
            )
            change_id = await self._record_change(conn, row)
        await self.directory.remember({row["room_id"]: merchant_id})
        await self.relay.deliver(change_id, row, "scheduled", int(time.time() * 1000))
        return room_json(row)

    async def go_live(self, merchant_id: str, room_id: str, stream_url: str | None = None) -> dict[str, Any]:
        """scheduled → live, with `stream_url` when given (else the room's own); 409
        `stream_url_required` when the room has none: viewers would get a room they cannot play."""
        return await self._transition(merchant_id, room_id, "live", stream_url)

    async def end(self, merchant_id: str, room_id: str, replay_url: str | None = None) -> dict[str, Any]:
        return await self._transition(merchant_id, room_id, "ended", replay_url)

    async def set_replay(self, merchant_id: str, room_id: str, replay_url: str) -> dict[str, Any]:
        return await self._transition(merchant_id, room_id, "replay", replay_url)

    async def _transition(
        self, merchant_id: str, room_id: str, to: str, replay_url: str | None = None
    ) -> dict[str, Any]:
        start, needs, assignment = _TRANSITIONS[to]
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                UPDATE rooms SET {assignment}, index_version = nextval('room_index_version')
                 WHERE room_id = $1 AND merchant_id = $2 AND {needs}
                RETURNING {ROOM_SELECT}
                """,  # noqa: S608 -- only constants are formatted in; values are parameters
                room_id,
                merchant_id,
                *([replay_url] if "$3" in assignment else []),
            )
            if row is None:
                status = await conn.fetchval(
                    "SELECT status FROM rooms WHERE room_id = $1 AND merchant_id = $2", room_id, merchant_id
                )
                if status is None:
                    raise NotFound("no such room")
                if to == "live" and status == start:
                    raise Conflict(
                        "the room has no stream_url: give it one to go live",
                        code="stream_url_required",
                        fields={"stream_url": "is required to go live"},
                    )
                verb = {"live": "go live", "ended": "end", "replay": "get a replay"}[to]
                raise Conflict(
                    f"the room is {status}; only a {start} room can {verb}",
                    code="invalid_transition",
                    fields={"status": status},
                )
            if to == "ended":
                # The room's flash deals close with it (one not started yet closes unstarted).
                await conn.execute(
                    "UPDATE deals SET ends_at = now(), starts_at = least(starts_at, now() - interval '1 ms') "
                    "WHERE room_id = $1 AND ends_at > now()",
                    room_id,
                )
            change_id = await self._record_change(conn, row)
        await self.relay.deliver(change_id, row, row["status"], int(time.time() * 1000))
        return room_json(row)

    async def _record_change(self, conn: asyncpg.Connection, row: Mapping[str, Any]) -> int:
        return int(
            await conn.fetchval(
                "INSERT INTO room_changes (room_id, status, version) VALUES ($1, $2, $3) RETURNING change_id",
                row["room_id"],
                row["status"],
                row["index_version"],
            )
        )

    async def get(self, merchant_id: str, room_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {ROOM_SELECT} FROM rooms WHERE room_id = $1 AND merchant_id = $2",  # noqa: S608
            room_id,
            merchant_id,
        )
        if row is None:
            raise NotFound("no such room")
        return room_json(row)

    async def of_merchant(
        self, merchant_id: str, status: str | None = None, limit: int = 100, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The merchant's rooms, newest first: a page after the cursor `after` and the next one's."""
        rows, following = await keyset_page(
            self.pool,
            f"SELECT {ROOM_SELECT}, rooms.created_at AS created_key FROM rooms"  # noqa: S608
            " WHERE merchant_id = $1 AND ($2::text IS NULL OR status = $2)"
            " AND ($3::timestamptz IS NULL OR rooms.created_at < $3"
            " OR (rooms.created_at = $3 AND room_id > $4::text))"
            " ORDER BY rooms.created_at DESC, room_id LIMIT $5",
            (merchant_id, status),
            after=after,
            limit=limit,
            key=("created_key", "room_id"),
        )
        return [room_json(r) for r in rows], following

    async def add_products(
        self, merchant_id: str, room_id: str, product_ids: list[str]
    ) -> list[dict[str, Any]]:
        product_ids = list(dict.fromkeys(product_ids))
        await self.get(merchant_id, room_id)  # 404 for another merchant's room
        require_known(await self.catalog.own_products(merchant_id, product_ids), product_ids, "product_ids")
        async with self.pool.acquire() as conn, conn.transaction():
            start = await conn.fetchval(
                "SELECT coalesce(max(position) + 1, 0) FROM room_products WHERE room_id = $1", room_id
            )
            await conn.executemany(
                "INSERT INTO room_products (room_id, product_id, position) VALUES ($1, $2, $3) "
                "ON CONFLICT (room_id, product_id) DO NOTHING",
                [(room_id, pid, start + i) for i, pid in enumerate(product_ids)],
            )
        return await self.products(merchant_id, room_id)

    async def products(self, merchant_id: str, room_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT p.product_id, p.title, p.price, p.currency, rp.position
              FROM room_products rp JOIN products p ON p.product_id = rp.product_id
              JOIN rooms r ON r.room_id = rp.room_id
             WHERE rp.room_id = $1 AND r.merchant_id = $2 ORDER BY rp.position
            """,
            room_id,
            merchant_id,
        )
        return [
            {
                "product_id": r["product_id"],
                "title": r["title"],
                "price": float(r["price"]),
                "currency": r["currency"],
                "position": r["position"],
            }
            for r in rows
        ]
