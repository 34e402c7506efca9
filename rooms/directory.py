"""Which merchant a room belongs to, for any room ever created (events ingest enriches every event with it).

Owns `RoomDirectory(pool, redis, lane)`. A room's merchant never changes: it is written to the Redis
hash `rf:rooms:merchant_of` when the room is created, and read through `roomfeed.owners` — process
memory (bounded), then that hash (filled from PostgreSQL on a miss), then PostgreSQL; rooms that
neither knows are answered as unknown for a few seconds without asking PostgreSQL again.
`lookup(room_ids)` rides a round trip the caller makes (ingest's, with the sessions' owners).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence

import asyncpg
from redis.asyncio import Redis

from roomfeed.owners import HashOwners, OwnerIndex, OwnerLookup
from roomfeed.redis_lane import RedisLane, round_trip

KEY_MERCHANT_OF = "rf:rooms:merchant_of"
_MERCHANT_OF_SQL = "SELECT room_id, merchant_id FROM rooms WHERE room_id = ANY($1::text[])"


def _merchants_of(room_ids: Sequence[str]) -> HashOwners:
    return HashOwners(KEY_MERCHANT_OF, room_ids)


class RoomDirectory:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, lane: RedisLane | None = None) -> None:
        self.pool = pool
        self.redis = redis
        self.lane = lane
        self.index = OwnerIndex(pool, _merchants_of, _MERCHANT_OF_SQL, backfill=self._write)

    def lookup(self, room_ids: Iterable[str]) -> OwnerLookup:
        """room_id → merchant_id in steps: queue it on a round trip, send it, then `finish()`."""
        return self.index.lookup(room_ids)

    async def merchant_of(self, room_ids: Iterable[str]) -> dict[str, str]:
        """room_id → merchant_id for the rooms that exist; unknown ids are left out."""
        return await self.index.owners(room_ids, round_trip(self.redis, self.lane))

    async def remember(self, pairs: Mapping[str, str]) -> None:
        """A room was created: its merchant, in this process and in Redis (before anyone sees its id)."""
        if not pairs:
            return
        self.index.keep(pairs)
        with contextlib.suppress(Exception):  # a cache: PostgreSQL answers next time
            await self._write(dict(pairs))

    async def _write(self, pairs: dict[str, str]) -> None:
        # redis-py types mapping as its own invariant Mapping of bytes/str/int/float unions
        await self.redis.hset(KEY_MERCHANT_OF, mapping=pairs)  # type: ignore[arg-type]
