"""The live-room index in Redis: which rooms are live right now, with the features the feed ranks.

Owns `LiveRoom`, `LiveSnapshot`, `LiveIndex` (the reader every feed request calls), `IndexWriter`
(applies one room change) and `rebuild_live_index` (the whole index from PostgreSQL). PostgreSQL is
the truth; this index is derived from it and can always be rebuilt.

Keys (all `rf:{rooms}:*`: one hash tag, so that on a Redis Cluster they share one slot and each
script below, which takes them all in KEYS, runs on the node that holds them):
- `live`       hash room_id → compact JSON of a LiveRoom, one field per live room
- `ver`        hash room_id → PostgreSQL `rooms.index_version` last applied (changes apply idempotently
               and never go backwards, whatever order they arrive in)
- `version`    counter bumped by every change to `live`; `changelog` zset room_id → the version at
               which it last changed; `floor` the oldest version the changelog still covers
- `epoch`      set by a rebuild only; a reader whose epoch differs reloads everything. A missing
               epoch means the index was never built (or Redis lost it): writers then rebuild.
- `replays`    zset room_id → ended_at of ended rooms with a replay_url; `replay` hash of their JSON

Reading: `LiveIndex.snapshot()` keeps an in-process copy tagged with (epoch, version). One Lua call
returns "unchanged" (one small round trip), the rooms changed since the copy's version (applied
incrementally), or "reload" when the copy is too old for the changelog.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from roomfeed.lua import lua_script
from roomfeed.redis_lane import Pipe

log = logging.getLogger("roomfeed.rooms")

PREFIX = "rf:{rooms}:"
KEY_LIVE = f"{PREFIX}live"
KEY_VER = f"{PREFIX}ver"
KEY_VERSION = f"{PREFIX}version"
KEY_CHANGELOG = f"{PREFIX}changelog"
KEY_FLOOR = f"{PREFIX}floor"
KEY_EPOCH = f"{PREFIX}epoch"
KEY_REPLAYS = f"{PREFIX}replays"
KEY_REPLAY = f"{PREFIX}replay"

# Changelog entries kept before the oldest are dropped (readers older than that reload fully).
CHANGELOG_MAX = 200_000
# Changes applied incrementally at most; beyond this a full reload is cheaper.
INCREMENTAL_MAX = 20_000
REPLAYS_MAX = 2_000
# Changes a reader lists in a round trip it already makes (`changes_after`); past that it reads afresh.
CHANGES_LISTED = 64

NOT_BUILT = -1


@dataclass(frozen=True)
class LiveChanges:
    """Part of a round trip (roomfeed.redis_lane.Part): room_id → the index version of its change
    after `version`; None when more changed than are listed (read the index afresh)."""

    version: int

    def queue(self, pipe: Pipe) -> None:
        pipe.execute_command(
            "ZRANGEBYSCORE",
            KEY_CHANGELOG,
            f"({self.version}",
            "+inf",
            "WITHSCORES",
            "LIMIT",
            0,
            CHANGES_LISTED + 1,
        )

    def read(self, replies: list[Any]) -> dict[str, int] | None:
        flat: list[Any] = []
        for item in replies[0]:
            flat.extend(item) if isinstance(item, (list, tuple)) else flat.append(item)
        if len(flat) > 2 * CHANGES_LISTED:
            return None
        return {_text(flat[i]): int(float(flat[i + 1])) for i in range(0, len(flat), 2)}


@dataclass(frozen=True, slots=True)
class LiveRoom:
    """One room as the feed, the scorer and ingest see it (same attribute names as RoomFeatures)."""

    room_id: str
    merchant_id: str
    title: str
    category: str
    tags: tuple[str, ...]
    price_band: str
    format: str
    host: str
    started_at: float
    stream_url: str
    status: str
    replay_url: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            [
                self.room_id,
                self.merchant_id,
                self.title,
                self.category,
                self.tags,
                self.price_band,
                self.format,
                self.host,
                self.started_at,
                self.stream_url,
                self.status,
                self.replay_url,
            ]
        )

    @staticmethod
    def from_values(values: list[Any]) -> LiveRoom:
        values[4] = tuple(values[4])
        return LiveRoom(*values)

    @staticmethod
    def decode(raw: bytes) -> LiveRoom:
        return LiveRoom.from_values(orjson.loads(raw))

    def as_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "merchant_id": self.merchant_id,
            "title": self.title,
            "category": self.category,
            "tags": list(self.tags),
            "price_band": self.price_band,
            "format": self.format,
            "host": self.host,
            "started_at": self.started_at,
            "stream_url": self.stream_url,
            "status": self.status,
            "replay_url": self.replay_url,
        }


def decode_many(raws: Iterable[bytes]) -> list[LiveRoom]:
    """Decode many rooms with one JSON parse (much cheaper than one parse per room)."""
    parsed = orjson.loads(b"[" + b",".join(raws) + b"]")
    return [LiveRoom.from_values(values) for values in parsed]


@dataclass(frozen=True)
class LiveSnapshot:
    """The live rooms at one index version. Immutable: hold it for the length of a request."""

    version: int
    rooms: tuple[LiveRoom, ...]
    by_id: Mapping[str, LiveRoom]
    epoch: str = ""
    _by_merchant: dict[str, LiveRoom] | None = field(default=None, repr=False, compare=False)

    def by_merchant(self) -> dict[str, LiveRoom]:
        """merchant_id → that merchant's most recently started live room (built once per snapshot)."""
        if self._by_merchant is None:
            found: dict[str, LiveRoom] = {}
            for room in self.rooms:
                seen = found.get(room.merchant_id)
                if seen is None or room.started_at > seen.started_at:
                    found[room.merchant_id] = room
            object.__setattr__(self, "_by_merchant", found)
        assert self._by_merchant is not None
        return self._by_merchant


EMPTY = LiveSnapshot(version=0, rooms=(), by_id={})

# The scripts' KEYS, in their order (the .lua files say what each is).
APPLY_KEYS = [KEY_EPOCH, KEY_VER, KEY_LIVE, KEY_REPLAYS, KEY_REPLAY, KEY_VERSION, KEY_CHANGELOG, KEY_FLOOR]
CHANGES_KEYS = [KEY_EPOCH, KEY_VERSION, KEY_FLOOR, KEY_CHANGELOG, KEY_LIVE]

_APPLY = lua_script(__file__, "live_index_apply.lua")

_CHANGES = lua_script(__file__, "live_index_changes.lua")
_SWAP = lua_script(__file__, "live_index_swap.lua")


class IndexWriter:
    """Applies one room's current state to the index; idempotent and order-safe by PG version."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._apply = redis.register_script(_APPLY)

    async def apply(self, room: LiveRoom, pg_version: int, ended_at: float | None = None) -> int:
        """Returns the new index version, 0 when nothing changed, NOT_BUILT when the index needs a rebuild."""
        live = room.status == "live"
        replay = room.status == "ended" and bool(room.replay_url)
        result = await self._apply(
            keys=APPLY_KEYS,
            args=[
                room.room_id,
                pg_version,
                "1" if live else "0",
                room.encode(),
                "1" if replay else "0",
                ended_at if ended_at is not None else time.time(),
                CHANGELOG_MAX,
                REPLAYS_MAX,
            ],
        )
        return int(result)


class LiveIndex:
    """The reader: `snapshot()` on every feed request, cheap when nothing changed."""

    def __init__(self, redis: Redis, *, max_staleness: float = 0.0) -> None:
        """`max_staleness` (seconds): serve the in-process copy without asking Redis when it was checked
        that recently. 0 (default) checks on every call; the feed may pass e.g. 0.05 so that under
        heavy churn a process rebuilds its copy at most 20 times a second whatever its request rate."""
        self.redis = redis
        self.max_staleness = max_staleness
        self._changes = redis.register_script(_CHANGES)
        self._current: LiveSnapshot = EMPTY
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def cached(self) -> LiveSnapshot:
        """The last snapshot read, without asking Redis (for degraded operation when Redis is down)."""
        return self._current

    async def snapshot(self) -> LiveSnapshot:
        asked_at = time.monotonic()
        if self.max_staleness and asked_at - self._checked_at < self.max_staleness:
            return self._current
        async with self._lock:
            if self._checked_at >= asked_at:
                # Read while this call waited for the lock: as fresh as a read of our own. (Callers
                # queued behind one read must not each read again in turn: under load that convoy
                # held requests for 100+ ms.)
                return self._current
            current = self._current
            reading_at = time.monotonic()
            try:
                reply = await self._changes(
                    keys=CHANGES_KEYS, args=[current.epoch, current.version, INCREMENTAL_MAX]
                )
            except (RedisError, OSError) as exc:
                # Redis is down or slow: a feed keeps serving the rooms it last saw rather than failing.
                if current is EMPTY:
                    raise  # nothing to serve: the caller decides (the feed degrades on Redis errors)
                log.warning(
                    "live index read failed, serving version %s from memory: %s", current.version, exc
                )
                return current
            self._checked_at = reading_at  # when the read started: what it saw is at least that fresh
            epoch = _text(reply[0])
            version = int(reply[1])
            kind = _text(reply[2])
            if kind == "same":
                return current
            if kind == "reload":
                self._current = await self._full_read()
                return self._current
            by_id = dict(current.by_id)
            pairs = reply[3:]
            for i in range(0, len(pairs), 2):
                room_id = _text(pairs[i])
                raw = pairs[i + 1]
                if raw is None:
                    by_id.pop(room_id, None)
                else:
                    by_id[room_id] = LiveRoom.decode(raw)
            self._current = LiveSnapshot(
                version=version, rooms=tuple(by_id.values()), by_id=by_id, epoch=epoch
            )
            return self._current

    @staticmethod
    def changes_after(version: int) -> LiveChanges:
        """The rooms changed after index version `version`, as a part of a round trip the caller
        makes (the feed reads it with the session, so a room whose end has returned is off the page
        without reading the index on every request)."""
        return LiveChanges(version)

    async def _full_read(self) -> LiveSnapshot:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(KEY_EPOCH)
            pipe.get(KEY_VERSION)
            pipe.hvals(KEY_LIVE)
            raw_epoch, raw_version, raws = await pipe.execute()
        if raw_epoch is None:
            return EMPTY
        rooms = decode_many(raws) if raws else []
        by_id = {room.room_id: room for room in rooms}
        return LiveSnapshot(
            version=int(raw_version or 0), rooms=tuple(by_id.values()), by_id=by_id, epoch=_text(raw_epoch)
        )

    async def cold_read(self) -> LiveSnapshot:
        """A full read of the index, ignoring the in-process copy (what a fresh process pays once)."""
        return await self._full_read()

    async def replays(self, limit: int = 20) -> list[LiveRoom]:
        """Recently ended rooms that have a replay_url, newest first."""
        ids: list[Any] = await self.redis.zrevrange(KEY_REPLAYS, 0, max(limit, 1) - 1)
        if not ids:
            return []
        raws: list[Any] = await self.redis.hmget(KEY_REPLAY, ids)
        return decode_many([raw for raw in raws if raw is not None])

    async def replays_after(self, after: str | None, limit: int) -> tuple[list[LiveRoom], bool] | None:
        """Up to `limit` replays, newest first, after the replay `after` (None: from the newest),
        and whether more follow; None when `after` is no longer among the replays kept."""
        start = 0
        if after is not None:
            rank: Any = await self.redis.zrevrank(KEY_REPLAYS, after)
            if rank is None:
                return None
            start = int(rank) + 1
        ids: list[Any] = await self.redis.zrevrange(KEY_REPLAYS, start, start + limit)
        more = len(ids) > limit
        ids = ids[:limit]
        if not ids:
            return [], False
        raws: list[Any] = await self.redis.hmget(KEY_REPLAY, ids)
        return decode_many([raw for raw in raws if raw is not None]), more

    async def live_room_of_merchant(self, merchant_id: str) -> LiveRoom | None:
        snapshot = await self.snapshot()
        return snapshot.by_merchant().get(merchant_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- from PostgreSQL ------------------------------------------------------------------------


def room_columns(alias: str = "") -> str:
    """The columns a LiveRoom (and the index writer) needs, optionally qualified by a table alias."""
    p = f"{alias}." if alias else ""
    return (
        f"{p}room_id, {p}merchant_id, {p}title, {p}category, {p}tags, {p}price_band, {p}format, {p}host, "
        f"extract(epoch FROM {p}started_at)::float8 AS started_at, {p}stream_url, {p}status, {p}replay_url, "
        f"extract(epoch FROM {p}ended_at)::float8 AS ended_at, {p}index_version"
    )


ROOM_COLUMNS = room_columns()


def live_room_of_row(row: Mapping[str, Any]) -> LiveRoom:
    return LiveRoom(
        room_id=row["room_id"],
        merchant_id=row["merchant_id"],
        title=row["title"],
        category=row["category"],
        tags=tuple(row["tags"] or ()),
        price_band=row["price_band"],
        format=row["format"],
        host=row["host"],
        started_at=float(row["started_at"] or 0.0),
        stream_url=row["stream_url"],
        status=row["status"],
        replay_url=row["replay_url"],
    )


async def rebuild_live_index(pool: asyncpg.Pool, redis: Redis) -> int:
    """Rebuild the whole index from PostgreSQL (live rooms and recent replays); returns live rooms.

    Written under temporary keys and swapped in by one script, under a new epoch, so readers see
    either the old index or the new one, and reload.
    """
    async with pool.acquire() as conn:
        live = await conn.fetch(f"SELECT {ROOM_COLUMNS} FROM rooms WHERE status = 'live'")  # noqa: S608
        replays = await conn.fetch(
            f"SELECT {ROOM_COLUMNS} FROM rooms WHERE status = 'ended' AND replay_url IS NOT NULL "  # noqa: S608
            "ORDER BY ended_at DESC LIMIT $1",
            REPLAYS_MAX,
        )
    tag = secrets.token_hex(4)
    tmp_live, tmp_ver, tmp_replays, tmp_replay = (
        f"{key}:rebuild:{tag}" for key in (KEY_LIVE, KEY_VER, KEY_REPLAYS, KEY_REPLAY)
    )
    chunk = 5_000
    for start in range(0, len(live), chunk):
        part = live[start : start + chunk]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(tmp_live, mapping={r["room_id"]: live_room_of_row(r).encode() for r in part})
            pipe.hset(tmp_ver, mapping={r["room_id"]: r["index_version"] for r in part})
            await pipe.execute()
    if replays:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(tmp_replays, {r["room_id"]: float(r["ended_at"] or 0.0) for r in replays})
            pipe.hset(tmp_replay, mapping={r["room_id"]: live_room_of_row(r).encode() for r in replays})
            pipe.hset(tmp_ver, mapping={r["room_id"]: r["index_version"] for r in replays})
            await pipe.execute()
    # One script swaps them in (atomic, as a MULTI was; redis-py's cluster pipeline refuses RENAME).
    # The changelog restarts empty under a new epoch: every reader reloads once, then follows
    # changes logged after the version it reloaded at.
    swap = redis.register_script(_SWAP)
    await swap(
        keys=[
            *(tmp_live, KEY_LIVE, tmp_ver, KEY_VER, tmp_replays, KEY_REPLAYS, tmp_replay, KEY_REPLAY),
            *(KEY_CHANGELOG, KEY_FLOOR, KEY_VERSION, KEY_EPOCH),
        ],
        args=[
            *("1" if filled else "0" for filled in (live, live or replays, replays, replays)),
            secrets.token_hex(8),
        ],
    )
    return len(live)
