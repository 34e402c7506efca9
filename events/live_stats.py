"""LiveStats: what the feed, the console and the alliance read about rooms and viewers right now.

Everything comes from the realtime sink's keys (events/keys.py) in one round trip: a read-only
Lua script sums the buckets of every window server-side, so 200 rooms cost one call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from events.keys import HOUR_FIELD, HOUR_FIELDS, PLATFORM, PRESENCE_MS, buckets, recent_key, room_prefix
from events.vocabulary import (
    ADD_TO_CART,
    COMMENT,
    DEAL_CLAIM,
    ENTER,
    FOLLOW,
    IMPRESSION,
    LEAVE,
    LIKE,
    PURCHASE,
    SHARE,
    SWIPE_AWAY_MS,
)
from roomfeed.lua import lua_script
from roomfeed.redis_lane import Pipe

_READ = lua_script(__file__, "live_stats_read.lua")

VIEWERS_NOW = lua_script(__file__, "viewers_now.lua")


@dataclass(frozen=True)
class RoomStats:
    viewers_now: int = 0
    enters_1m: int = 0
    enters_15m: int = 0
    enters_1h: int = 0
    impressions_1h: int = 0
    leaves_1h: int = 0
    swipe_aways_1h: int = 0
    dwell_ms_1h: int = 0
    likes_1h: int = 0
    comments_1h: int = 0
    follows_1h: int = 0
    shares_1h: int = 0
    carts_1h: int = 0
    orders_1h: int = 0
    deal_claims_1h: int = 0
    gmv_1h: float = 0.0
    unique_visitors_1h: int = 0

    @property
    def enter_rate(self) -> float:
        """Enters per impression."""
        return self.enters_1h / self.impressions_1h if self.impressions_1h else 0.0

    @property
    def swipe_away_rate(self) -> float:
        """Share of visits that ended with less than 3 s of dwell."""
        return self.swipe_aways_1h / self.leaves_1h if self.leaves_1h else 0.0

    @property
    def conversion_per_visit(self) -> float:
        return self.orders_1h / self.enters_1h if self.enters_1h else 0.0

    @property
    def conversion_per_visitor(self) -> float:
        return self.orders_1h / self.unique_visitors_1h if self.unique_visitors_1h else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            enter_rate=self.enter_rate,
            swipe_away_rate=self.swipe_away_rate,
            conversion_per_visit=self.conversion_per_visit,
            conversion_per_visitor=self.conversion_per_visitor,
        )
        return data


@dataclass(frozen=True)
class RecentVisit:
    room_id: str
    merchant_id: str | None
    dwell_ms: int
    ts: int

    @property
    def swiped_away(self) -> bool:
        return self.dwell_ms < SWIPE_AWAY_MS


# Field of the 5-minute hash → the RoomStats attribute that sums it over the hour.
_NAMES = {
    HOUR_FIELD[IMPRESSION]: "impressions_1h",
    HOUR_FIELD[ENTER]: "enters_1h",
    HOUR_FIELD[LEAVE]: "leaves_1h",
    HOUR_FIELD[LIKE]: "likes_1h",
    HOUR_FIELD[COMMENT]: "comments_1h",
    HOUR_FIELD[FOLLOW]: "follows_1h",
    HOUR_FIELD[SHARE]: "shares_1h",
    HOUR_FIELD[ADD_TO_CART]: "carts_1h",
    HOUR_FIELD[PURCHASE]: "orders_1h",
    HOUR_FIELD[DEAL_CLAIM]: "deal_claims_1h",
    "swipe_away": "swipe_aways_1h",
    "dwell_ms": "dwell_ms_1h",
    "gmv": "gmv_1h",
}


class LiveStats:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._read = redis.register_script(_READ)
        self._viewers_now = redis.register_script(VIEWERS_NOW)

    async def rooms(self, room_ids: Sequence[str], now_ms: int | None = None) -> dict[str, RoomStats]:
        """Stats of each room (zeros for a room nobody has touched in the last hour)."""
        ids = list(dict.fromkeys(room_ids))
        if not ids:
            return {}
        rows = await self._read_rooms(ids, now_ms)
        return dict(zip(ids, rows, strict=True))

    async def totals(self, now_ms: int | None = None) -> dict[str, Any]:
        """Platform-wide figures over the same windows (for /v1/ops/metrics)."""
        (stats,) = await self._read_rooms([PLATFORM], now_ms)
        return stats.as_dict()

    async def _read_rooms(self, ids: list[str], now_ms: int | None) -> list[RoomStats]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        window = orjson.dumps(buckets(now))
        raw = await self._read(
            keys=[room_prefix(room) for room in ids],
            args=[now, window, orjson.dumps(list(HOUR_FIELDS))],
        )
        assert PRESENCE_MS == 60_000  # the script's presence window
        out = []
        for row in raw:
            values: dict[str, Any] = {
                "viewers_now": int(row[0]),
                "enters_1m": int(row[1]),
                "enters_15m": int(row[2]),
            }
            for j, name in enumerate(HOUR_FIELDS):
                number = float(row[3 + j])
                values[_NAMES[name]] = number if name == "gmv" else int(number)
            values["unique_visitors_1h"] = int(row[-1])
            out.append(RoomStats(**values))
        return out

    async def viewer_recent(self, viewer_id: str, limit: int = 50) -> list[RecentVisit]:
        """The viewer's last visits (one per leave event), newest first."""
        raw = await self.redis.lrange(recent_key(viewer_id), 0, max(0, limit - 1))
        return recent_visits(cast(list[bytes], raw))

    def presence(self, room_ids: Sequence[str], now_ms: int | None = None) -> Presence:
        """Viewers in each room now (60 s presence), as a part of a round trip the caller makes."""
        return Presence(tuple(room_ids), now_ms if now_ms is not None else int(time.time() * 1000))

    async def viewers_now(self, room_ids: Sequence[str], now_ms: int | None = None) -> list[int]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        if not room_ids:
            return []
        reply = await self._viewers_now(
            keys=[room_prefix(r) + "now" for r in room_ids], args=[now - PRESENCE_MS]
        )
        return [int(x) for x in reply]


@dataclass(frozen=True)
class Presence:
    """Part of a round trip (roomfeed.redis_lane.Part): viewers in each room now (60 s presence)."""

    room_ids: tuple[str, ...]
    now_ms: int

    def queue(self, pipe: Pipe) -> None:
        keys = [room_prefix(r) + "now" for r in self.room_ids]
        pipe.eval(VIEWERS_NOW, len(keys), *keys, self.now_ms - PRESENCE_MS)

    def read(self, replies: list[Any]) -> list[int]:
        return [int(v) for v in replies[0]]


@dataclass(frozen=True)
class RecentVisits:
    """Part of a round trip (roomfeed.redis_lane.Part): the viewer's last visits, newest first, as
    `LiveStats.viewer_recent(viewer_id, limit)` returns them."""

    viewer_id: str
    limit: int = 50

    def queue(self, pipe: Pipe) -> None:
        pipe.lrange(recent_key(self.viewer_id), 0, max(0, self.limit - 1))

    def read(self, replies: list[Any]) -> list[RecentVisit]:
        return recent_visits(replies[0])


def recent_visits(raw: Sequence[bytes]) -> list[RecentVisit]:
    """The viewer's recent list as `LiveStats.viewer_recent` returns it (newest first)."""
    visits = []
    for item in raw:
        data = orjson.loads(item)
        visits.append(
            RecentVisit(
                room_id=data["room_id"],
                merchant_id=data.get("merchant_id") or None,
                dwell_ms=int(data["dwell_ms"]),
                ts=int(data["ts"]),
            )
        )
    return visits
