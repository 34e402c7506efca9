"""Owners set once and never changed (a room's merchant, a feed session's viewer), looked up in the
steps a hot path shares: process memory, one part of the caller's Redis round trip, then PostgreSQL.

A domain that owns such a mapping builds an `OwnerIndex` over its own Redis layout (a `Part` that
reads the owners of some ids) and its own SQL, and hands out `lookup(ids)`: the ids process memory
does not know ride whatever round trip the caller makes (`queue(trip)`), and `finish()` asks
PostgreSQL only for what Redis did not know. Events ingest makes one Redis round trip for a
batch's sessions and rooms this way instead of one per owner, and no pool call when they are known.

Ids that PostgreSQL did not know either are remembered as unknown for `unknown_for_s`: a client
that names made-up rooms or sessions again and again costs no PostgreSQL query each time (before,
every batch naming an unknown room was a pool round trip). Redis is still asked every time, and
an owner is written to Redis when its thing is created, before the id is handed to anyone, so a
thing created meanwhile is found at once. Only when Redis also missed the creation (it was down
then) can an "unknown" be stale, for at most `unknown_for_s`; and ids are remembered as unknown
only when Redis did answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from roomfeed.redis_lane import Part, Pipe, Reply, RoundTrip

log = logging.getLogger("roomfeed.owners")

# Owners kept in process memory by default, and ids remembered as unknown (bounds: cleared when full).
KNOWN_MAX = 200_000
UNKNOWN_MAX = 100_000
# How long an id neither Redis nor PostgreSQL knew is answered as unknown without PostgreSQL.
UNKNOWN_FOR_S = 10.0


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OwnerIndex:
    """id → owner for one kind of thing, in three steps (memory, Redis, PostgreSQL).

    `reads(ids)` is the Redis part that answers each id's owner or None, in the order asked; `sql`
    takes the ids as `$1::text[]` and returns rows of (id, owner); `backfill` (optional) is told
    the owners PostgreSQL found that Redis did not have."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        reads: Callable[[Sequence[str]], Part[list[str | None]]],
        sql: str,
        *,
        backfill: Callable[[dict[str, str]], Awaitable[None]] | None = None,
        known_max: int = KNOWN_MAX,
        unknown_for_s: float = UNKNOWN_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.reads = reads
        self.sql = sql
        self.backfill = backfill
        self.known_max = known_max
        self.unknown_for_s = unknown_for_s
        self.clock = clock
        self.known: dict[str, str] = {}
        self.unknown: dict[str, float] = {}  # id → until when it is answered as unknown

    def lookup(self, ids: Iterable[str]) -> OwnerLookup:
        known = self.known
        found: dict[str, str] = {}
        missing: list[str] = []
        for id_ in dict.fromkeys(ids):
            owner = known.get(id_)
            if owner is None:
                missing.append(id_)
            else:
                found[id_] = owner
        return OwnerLookup(self, found, missing)

    def keep(self, pairs: Mapping[str, str]) -> None:
        """Remember owners in process memory (they never change)."""
        if not pairs:
            return
        if len(self.known) + len(pairs) > self.known_max:
            self.known.clear()
        self.known.update(pairs)
        unknown = self.unknown
        if unknown:
            for id_ in pairs:
                unknown.pop(id_, None)

    def _still_unknown(self, ids: list[str]) -> tuple[list[str], list[str]]:
        """(ids remembered as unknown, ids to ask PostgreSQL)."""
        if not self.unknown:
            return [], ids
        now = self.clock()
        unknown = self.unknown
        remembered, ask = [], []
        for id_ in ids:
            until = unknown.get(id_)
            if until is not None and until > now:
                remembered.append(id_)
            else:
                ask.append(id_)
        return remembered, ask

    def _remember_unknown(self, ids: Iterable[str]) -> None:
        unknown = self.unknown
        until = self.clock() + self.unknown_for_s
        for id_ in ids:
            if len(unknown) >= UNKNOWN_MAX:
                unknown.clear()
            unknown[id_] = until

    async def owners(self, ids: Iterable[str], trip: RoundTrip) -> dict[str, str]:
        """Owners of `ids` (unknown ones left out) on a round trip of its own, made here."""
        lookup = self.lookup(ids)
        lookup.queue(trip)
        if len(lookup.missing):
            try:
                await trip.send()
            except Exception as exc:  # PostgreSQL answers for all of them
                log.warning("owners not read from Redis: %s", exc)
        return await lookup.finish()


class OwnerLookup:
    """The owners of some ids: those process memory knew (`found`), the rest (`missing`) asked of
    Redis in a round trip the caller makes (`queue`) and of PostgreSQL in `finish`."""

    def __init__(self, index: OwnerIndex, found: dict[str, str], missing: list[str]) -> None:
        self.index = index
        self.found = found
        self.missing = missing
        self._reply: Reply[list[str | None]] | None = None
        self._trip: RoundTrip | None = None

    def queue(self, trip: RoundTrip) -> None:
        """Ask Redis for the ids process memory did not know, in `trip` (nothing when none)."""
        if self.missing:
            self._trip = trip
            self._reply = trip.add(self.index.reads(self.missing))

    async def finish(self) -> dict[str, str]:
        """id → owner for the ids that exist (unknown ones are left out). Reads the Redis part when
        the trip was made; asks PostgreSQL for what Redis did not know (all of it when the trip
        failed), except ids remembered as unknown."""
        index, found, missing = self.index, self.found, self.missing
        if not missing:
            return found
        redis_answered = self._trip is not None and self._trip.made and self._reply is not None
        if redis_answered:
            assert self._reply is not None
            from_redis: dict[str, str] = {}
            rest: list[str] = []
            for id_, owner in zip(missing, self._reply.value, strict=True):
                if owner is None:
                    rest.append(id_)
                else:
                    from_redis[id_] = owner
            index.keep(from_redis)
            found.update(from_redis)
            _, rest = index._still_unknown(rest)
        else:
            rest = missing
        if not rest:
            return found
        rows = await index.pool.fetch(index.sql, rest)
        from_pg = {row[0]: row[1] for row in rows}
        found.update(from_pg)
        index.keep(from_pg)
        if redis_answered:
            index._remember_unknown(id_ for id_ in rest if id_ not in from_pg)
        if from_pg and index.backfill is not None:
            try:
                await index.backfill(from_pg)
            except Exception as exc:  # a cache: PostgreSQL answers next time
                log.warning("owners not written back to Redis: %s", exc)
        return found


class HashOwners:
    """Part: the owners of some ids kept as fields of one Redis hash (HMGET key id...)."""

    __slots__ = ("key", "ids")

    def __init__(self, key: str, ids: Sequence[str]) -> None:
        self.key = key
        self.ids = ids

    def queue(self, pipe: Pipe) -> None:
        pipe.execute_command("HMGET", self.key, *self.ids)

    def read(self, replies: list[Any]) -> list[str | None]:
        return [None if value is None else text(value) for value in replies[0]]


class FieldOwners:
    """Part: the owners of some ids kept in one field of each id's own Redis hash (HGET key(id) field)."""

    __slots__ = ("key_of", "field", "ids")

    def __init__(self, key_of: Callable[[str], str], field: str, ids: Sequence[str]) -> None:
        self.key_of = key_of
        self.field = field
        self.ids = ids

    def queue(self, pipe: Pipe) -> None:
        for id_ in self.ids:
            pipe.hget(self.key_of(id_), self.field)

    def read(self, replies: list[Any]) -> list[str | None]:
        return [None if value is None else text(value) for value in replies]
