"""The heat sink (consumer group `heat`): folds enters, impressions, dwell, orders and landings (enters
not from the feed) into every room's exponentially decayed counters, one Redis hash (layout in events/keys.py; the reader is
events.heat).

Exactly-once effects on an at-least-once stream: one Lua script (lua/heat_apply.lua) checks each
record's offset against its partition's watermark, folds the fresh ones in, and moves the
watermark, atomically, so a replay or a crash between "applied" and "committed" changes nothing.
(An event sent twice at two offsets by a retrying client counts twice here; heat is a ranking
signal, the exact windows and their event-id checks are the realtime sink's.) Entries a room has not
touched for `PRUNE_AFTER_S` are deleted in small HSCAN steps (lua/heat_prune.lua), so the hash holds
about the rooms of the last hours.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from events.keys import (
    CHANGED_KEY,
    EPOCH_KEY,
    HALF_LIFE_S,
    HEAT_KEY,
    SEQ_KEY,
    SIGNALS,
    heat_watermark_key,
)
from events.vocabulary import ENTER, ENTER_SOURCES, IMPRESSION, LEAVE, PURCHASE
from roomfeed.lua import lua_script

PRUNE_AFTER_S = 6 * 3600.0  # 24 half-lives: what is left is below 1e-7 of the peak
_KINDS = {ENTER: 0, IMPRESSION: 1, LEAVE: 2, PURCHASE: 3}  # event type → its signal in keys.SIGNALS
# An enter from a code or a deep link (`enter.source`, "feed" when absent) is a landing: counted in
# enters and in landings, so readers can take a room's own audience out of its feed rate.
LANDING = SIGNALS.index("landings")
FEED_SOURCE = ENTER_SOURCES[0]  # "feed"
APPLY = lua_script(__file__, "heat_apply.lua")
PRUNE = lua_script(__file__, "heat_prune.lua")


def _compact(batch: Sequence[dict[str, Any]]) -> tuple[list[str], list[int], list[list[Any]]]:
    """Watermark keys, max offset per key, and the events that change heat, as the script takes them."""
    positions: dict[tuple[str, int], int] = {}
    tops: list[int] = []
    rows: list[list[Any]] = []
    for event in batch:
        tp = (event.get("_topic") or "", int(event.get("_partition") or 0))
        at = positions.get(tp)
        offset = int(event.get("_offset", -1))
        if at is None:
            at = positions[tp] = len(positions)
            tops.append(offset)
        elif offset > tops[at]:
            tops[at] = offset
        kind = _KINDS.get(event.get("type", ""))
        if kind is None or not event.get("room_id"):
            continue
        if kind == 0 and event.get("source", FEED_SOURCE) != FEED_SOURCE:
            kind, amount = LANDING, 1.0
        elif kind == 2:
            amount = max(0, int(event.get("dwell_ms") or 0)) / 1000.0
            if amount == 0:
                continue
        else:
            amount = 1.0
        rows.append([at + 1, offset, event["room_id"], kind, amount, int(event["ts"])])
    return [heat_watermark_key(t, p) for t, p in positions], tops, rows


class RoomHeatSink:
    """Sink: folds enters, impressions, dwell, orders and landings into each room's decayed counters."""

    name = "heat"

    def __init__(self, redis: Redis, half_life_s: float = HALF_LIFE_S, prune_every_s: float = 60.0) -> None:
        self.redis = redis
        self.half_life_ms = half_life_s * 1000.0
        self.prune_every_s = prune_every_s
        self._apply = redis.register_script(APPLY)
        self._prune = redis.register_script(PRUNE)
        self._cursor = b"0"
        self._pruned_at = time.monotonic()

    async def write(self, batch: list[dict[str, Any]]) -> int:
        """Apply a consumer batch; returns how many events changed heat (0 for a replay)."""
        if not batch:
            return 0
        keys, tops, rows = _compact(batch)
        head = {"h": self.half_life_ms, "wm": keys, "top": tops}
        applied = int(
            await self._apply(
                keys=[HEAT_KEY, SEQ_KEY, CHANGED_KEY, EPOCH_KEY],
                args=[orjson.dumps(head), orjson.dumps(rows)],
            )
        )
        if time.monotonic() - self._pruned_at >= self.prune_every_s:
            await self.prune()
        return applied

    async def prune(self, now_ms: int | None = None, count: int = 1000) -> int:
        """One HSCAN step: delete rooms untouched for PRUNE_AFTER_S; returns how many."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        cursor, deleted = await self._prune(
            keys=[HEAT_KEY, CHANGED_KEY], args=[self._cursor, count, now - int(PRUNE_AFTER_S * 1000)]
        )
        self._cursor = cursor
        self._pruned_at = time.monotonic()
        return int(deleted)
