"""Room heat, read: every room's decayed counters (the heat sink's hash, events.heat_sink), for the
feed's popularity signal.

`LiveStats.rooms` answers exact sliding windows but costs ~35 Redis operations per room; ranking
10,000 live rooms needs a popularity signal for all of them in one cheap read. Heat keeps, per room,
decayed sums of enters, impressions, dwell seconds, orders and landings (enters not from the feed;
events.heat_sink) (half-life 15 minutes) as they stood
at the room's last event, and `RoomHeat` decays them to "now" when it reads (layout in events/keys.py).

Readers that refresh every second (the feed, in every API process) keep the whole table in
memory (`HeatTable`) and each second read only the rooms changed since their last number
(lua/heat_changed.lua): a full HGETALL of 10,000 rooms costs ~8 ms of the reader's event loop (its
replies parsed, ids decoded, re-aligned), once a second a stall every API process felt in its p99.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis

from events.keys import (
    CHANGED_KEY,
    EPOCH_KEY,
    HALF_LIFE_S,
    HEAT_KEY,
    HEAT_RECORD,
    HEAT_WIDTH,
    SEQ_KEY,
    SIGNALS,
)
from roomfeed.lua import lua_script

CHANGED = lua_script(__file__, "heat_changed.lua")


@dataclass(frozen=True)
class HeatSnapshot:
    """Every room's heat decayed to `now`: `values[i]` (SIGNALS order) belongs to `room_ids[i]`.

    `index` (room id → row) and `layout` come from a `HeatTable`: the index is shared with the
    table (it may have grown since: rows past `values` are unknown here), and `layout` changes
    whenever a room is added or the rows are rebuilt, so callers can keep alignments while it holds.
    """

    now: float
    room_ids: list[str]
    values: np.ndarray  # (n, len(SIGNALS)) float64
    index: dict[str, int] | None = None
    layout: int = 0

    def positions(self, room_ids: Sequence[str]) -> np.ndarray:
        """The row of each of `room_ids`, -1 for rooms with no heat."""
        where = self.index if self.index is not None else {r: i for i, r in enumerate(self.room_ids)}
        pick = np.fromiter((where.get(r, -1) for r in room_ids), dtype=np.int64, count=len(room_ids))
        pick[pick >= len(self.values)] = -1
        return pick

    def aligned(self, room_ids: Sequence[str], positions: np.ndarray | None = None) -> np.ndarray:
        """(len(room_ids), len(SIGNALS)) heat of the given rooms, zeros for rooms with no heat (`positions`:
        this snapshot's `positions(room_ids)`, when the caller kept them)."""
        if not len(self.values):
            return np.zeros((len(room_ids), len(SIGNALS)), dtype=np.float64)
        pick = self.positions(room_ids) if positions is None else positions
        # One gather from the values with a row of zeros behind them (-1 picks it): a boolean-masked
        # assignment of every room's row cost ~5 ms a refresh at 100,000 rooms.
        padded = np.concatenate([self.values, np.zeros((1, self.values.shape[1]))])
        out: np.ndarray = padded[pick]
        return out


class HeatTable:
    """Every room's heat in this process, brought up to date each refresh with only the rooms that
    changed since the last one (the sink numbers every update: `SEQ_KEY`, `CHANGED_KEY`, `EPOCH_KEY`).

    The first refresh, and one every `rescan_every_s`, reads the whole hash in HSCAN steps of
    `batch` rooms (the event loop runs between steps) and drops rooms the sink pruned; a new epoch
    (the keys were lost or rebuilt: the counter started again) also triggers one.
    """

    def __init__(self, heat: RoomHeat, batch: int = 2000, rescan_every_s: float = 600.0) -> None:
        self.heat = heat
        self.batch = batch
        self.rescan_every_s = rescan_every_s
        self.layout = 0
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._records = np.zeros((0, HEAT_WIDTH), dtype=np.float64)
        self._after: int | None = None  # the last change number read
        self._epoch = b""
        self._scanned_at = 0.0

    async def refresh(self, now: float | None = None) -> HeatSnapshot:
        due = self._after is None or time.monotonic() - self._scanned_at >= self.rescan_every_s
        if due or not await self._read_changes():  # a new epoch: Redis lost its data or it was rebuilt
            await self._rescan()
        at = time.time() if now is None else now
        records = self._records[: len(self._ids)]
        age_s = np.maximum(at - records[:, -1] / 1000.0, 0.0)
        values = records[:, :-1] * np.power(0.5, age_s / self.heat.half_life_s)[:, None]
        return HeatSnapshot(at, self._ids[: len(values)], values, self._row, self.layout)

    async def _rescan(self) -> None:
        redis = self.heat.redis
        async with redis.pipeline(
            transaction=True
        ) as pipe:  # first: changes during the scan are read again next time
            pipe.get(SEQ_KEY)
            pipe.get(EPOCH_KEY)
            counter_raw, epoch = await pipe.execute()
        counter = int(counter_raw or 0)
        ids: list[str] = []
        blobs: list[bytes] = []
        cursor: Any = 0
        while True:
            cursor, found = await redis.hscan(HEAT_KEY, cursor, count=self.batch)
            for room, record in cast(dict[bytes, bytes], found).items():
                if len(record) == HEAT_WIDTH * 8:
                    ids.append(room.decode())
                    blobs.append(record)
            if int(cursor) == 0:
                break
        records = np.frombuffer(b"".join(blobs), dtype=HEAT_RECORD).reshape(len(ids), HEAT_WIDTH).copy()
        self._ids, self._row, self._records = ids, {r: i for i, r in enumerate(ids)}, records
        self._after, self._epoch, self._scanned_at = counter, epoch or b"", time.monotonic()
        self.layout += 1

    async def _read_changes(self) -> bool:
        """Fold in the rooms changed since the last read; False when the epoch changed (rescan)."""
        assert self._after is not None
        after = self._after
        while True:
            reply = await self.heat._changed(
                keys=[HEAT_KEY, SEQ_KEY, CHANGED_KEY, EPOCH_KEY], args=[after, self.batch]
            )
            counter = int(reply[0])
            if reply[2] != self._epoch or counter < self._after:
                return False
            pairs = reply[3:]
            for i in range(0, len(pairs), 2):
                self._put(pairs[i].decode(), pairs[i + 1])
            if len(pairs) // 2 < self.batch:
                self._after = counter
                return True
            after = int(float(reply[1]))

    def _put(self, room: str, record: bytes) -> None:
        if len(record) != HEAT_WIDTH * 8:  # pruned between the two reads of the script: nothing to keep
            return
        row = self._row.get(room)
        if row is None:
            row = len(self._ids)
            if row == len(self._records):
                grown = np.zeros((max(64, 2 * row), HEAT_WIDTH), dtype=np.float64)
                grown[:row] = self._records[:row]
                self._records = grown
            self._ids.append(room)
            self._row[room] = row
            self.layout += 1
        self._records[row] = np.frombuffer(record, dtype=HEAT_RECORD)


class RoomHeat:
    """The reader: all rooms' heat in one HGETALL, decoded with numpy (no per-value parsing);
    `HeatTable(reader)` for a copy kept current by reading changes only."""

    def __init__(self, redis: Redis, half_life_s: float = HALF_LIFE_S) -> None:
        self.redis = redis
        self.half_life_s = half_life_s
        self._changed = redis.register_script(CHANGED)

    async def snapshot(self, now: float | None = None) -> HeatSnapshot:
        at = time.time() if now is None else now
        raw: dict[bytes, bytes] = await self.redis.hgetall(HEAT_KEY)  # type: ignore[assignment]  # bytes: no decode_responses
        return decode(raw, at, self.half_life_s)


def decode(raw: dict[bytes, bytes], now: float, half_life_s: float = HALF_LIFE_S) -> HeatSnapshot:
    """HGETALL's reply → a snapshot decayed to `now` (seconds)."""
    if not raw:
        return HeatSnapshot(now, [], np.zeros((0, len(SIGNALS)), dtype=np.float64))
    ids = [k.decode() for k in raw]
    records = np.frombuffer(b"".join(raw.values()), dtype=HEAT_RECORD).reshape(len(ids), HEAT_WIDTH)
    age_s = np.maximum(now - records[:, -1] / 1000.0, 0.0)
    values = records[:, :-1] * np.power(0.5, age_s / half_life_s)[:, None]
    return HeatSnapshot(now, ids, values)
