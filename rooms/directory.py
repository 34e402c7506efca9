"""Which merchant a room belongs to, for any room ever created (events ingest enriches every event with it).

Owns `RoomDirectory(pool, redis)`. A room's merchant never changes, so answers are cached without
expiry: in-process (bounded), then the Redis hash `rf:rooms:merchant_of` (written when a room is
created, filled from PostgreSQL on a miss), then PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

import asyncpg
from redis.asyncio import Redis

KEY_MERCHANT_OF = "rf:rooms:merchant_of"
LOCAL_MAX = 200_000


class RoomDirectory:
    def __init__(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self.pool = pool
        self.redis = redis
        self._local: dict[str, str] = {}

    async def merchant_of(self, room_ids: Iterable[str]) -> dict[str, str]:
        """room_id → merchant_id for the rooms that exist; unknown ids are left out."""
        wanted = list(dict.fromkeys(room_ids))
        found = {r: self._local[r] for r in wanted if r in self._local}
        missing = [r for r in wanted if r not in found]
        if missing:
            raws = await self.redis.hmget(KEY_MERCHANT_OF, missing)
            from_redis = {r: _text(m) for r, m in zip(missing, raws, strict=True) if m is not None}
            found.update(from_redis)
            self._keep(from_redis)
            missing = [r for r in missing if r not in from_redis]
        if missing:
            rows = await self.pool.fetch(
                "SELECT room_id, merchant_id FROM rooms WHERE room_id = ANY($1::text[])", missing
            )
            from_pg = {r["room_id"]: r["merchant_id"] for r in rows}
            found.update(from_pg)
            await self.remember(from_pg)
        return found

    async def remember(self, pairs: Mapping[str, str]) -> None:
        if not pairs:
            return
        self._keep(pairs)
        with contextlib.suppress(Exception):  # a cache: PostgreSQL answers next time
            await self.redis.hset(KEY_MERCHANT_OF, mapping=dict(pairs))  # type: ignore[arg-type]

    def _keep(self, pairs: Mapping[str, str]) -> None:
        if len(self._local) + len(pairs) > LOCAL_MAX:
            self._local.clear()
        self._local.update(pairs)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
