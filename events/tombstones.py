"""Tombstones of erased viewers: consumers drop what a replay of the topic would bring back.

A viewer erased at time T (`erased_viewers`) has every record keyed by its id and produced before T
dropped before any sink sees it (the Kafka key is the viewer id and the record timestamp is the
produce time, so the check needs no decoding). The set is read from PostgreSQL at start and every
REFRESH_S; an empty set costs one dict lookup per poll.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

REFRESH_S = 10.0


class Tombstones:
    def __init__(self, pool: asyncpg.Pool | None) -> None:
        self.pool = pool
        self._erased: dict[bytes, int] = {}  # viewer id (the record key) → erased_at ms
        self._read_at = -REFRESH_S

    async def refresh(self, force: bool = False) -> None:
        if self.pool is None or (not force and time.monotonic() - self._read_at < REFRESH_S):
            return
        self._read_at = time.monotonic()
        rows = await self.pool.fetch(
            "SELECT viewer_id, (extract(epoch FROM erased_at) * 1000)::bigint AS at FROM erased_viewers"
        )
        self._erased = {r["viewer_id"].encode(): int(r["at"]) for r in rows}

    def __bool__(self) -> bool:
        return bool(self._erased)

    def erased(self, record: Any) -> bool:
        """Was this record (a Kafka ConsumerRecord) produced for a viewer before its erasure?"""
        at = self._erased.get(record.key) if record.key is not None else None
        return at is not None and record.timestamp <= at
