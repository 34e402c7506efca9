"""Room heat: exponentially decayed per-room counters for every room, in one Redis hash.

Owns the `heat` sink (its own consumer group) and `RoomHeat`, the reader the feed refreshes once a
second. `LiveStats.rooms` answers exact sliding windows but costs ~35 Redis operations per room;
ranking 10,000 live rooms needs a popularity signal for all of them in one cheap read. Heat keeps,
per room, decayed sums of enters, impressions, dwell seconds and orders (half-life 15 minutes)
as they stood at the room's last event, and the reader decays them to "now" (computed at read).

Keys (events owns `rf:{ev}:*`, one cluster slot: events/keys.py):
  rf:{ev}:heat               hash room_id → 40 bytes, little-endian float64 x5:
                             enters, impressions, dwell_s, orders, as of ts_ms (the 5th value)
  rf:{ev}:heat:wm:{topic}:{p} highest Kafka offset applied per partition
  rf:{ev}:heat:seq           change counter: every room update takes the next number
  rf:{ev}:heat:epoch         when the counter started (set with it): a new one means readers rescan
  rf:{ev}:heat:changed       sorted set room_id → number of its last update

Readers that refresh every second (the feed, in every API process) keep the whole table in
memory (`HeatTable`) and each second read only the rooms changed since their last number: a
full HGETALL of 10,000 rooms costs ~8 ms of the reader's event loop (its replies parsed, ids
decoded, re-aligned), once a second a stall every API process felt in its p99.

Exactly-once effects on an at-least-once stream: one Lua script checks each record's offset
against its partition's watermark, folds the fresh ones in, and moves the watermark, atomically, so
a replay or a crash between "applied" and "committed" changes nothing. (An event sent twice at two
offsets by a retrying client counts twice here; heat is a ranking signal, the exact windows and
their event-id checks are the realtime sink's.) Entries a room has not touched for `PRUNE_AFTER_S`
are deleted by the sink in small HSCAN steps, so the hash holds about the rooms of the last hours.
The same module offers the feed's per-request reads of the realtime sink's keys as parts of a
round trip (`Presence`, `RecentVisits`: roomfeed.redis_lane.Part), so the feed folds them into the
round trips it already makes instead of adding its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson
from redis.asyncio import Redis

from events.keys import PREFIX, PRESENCE_MS, recent_key, room_prefix
from events.live_stats import RecentVisit
from events.vocabulary import ENTER, IMPRESSION, LEAVE, PURCHASE
from roomfeed.redis_lane import Pipe

HEAT_KEY = f"{PREFIX}heat"
SEQ_KEY = f"{PREFIX}heat:seq"
EPOCH_KEY = f"{PREFIX}heat:epoch"
CHANGED_KEY = f"{PREFIX}heat:changed"
HALF_LIFE_S = 15 * 60.0
PRUNE_AFTER_S = 6 * 3600.0  # 24 half-lives: what is left is below 1e-7 of the peak
SIGNALS = ("enters", "impressions", "dwell_s", "orders")
_RECORD = np.dtype("<f8")
_WIDTH = len(SIGNALS) + 1  # the signals, then ts_ms
_KINDS = {ENTER: 0, IMPRESSION: 1, LEAVE: 2, PURCHASE: 3}  # event type → its signal in SIGNALS


def watermark_key(topic: str, partition: int) -> str:
    return f"{PREFIX}heat:wm:{topic}:{partition}"


# KEYS[1] heat hash, KEYS[2] change counter, KEYS[3] changed set, KEYS[4] epoch. ARGV[1] JSON {h: half-life ms, wm: [key...], top: [max offset per tp]},
# ARGV[2] JSON [[tp index (1-based), offset, room, signal (0-3), amount, ts_ms], ...].
# Returns the number of events folded in.
_APPLY = """
local head = cjson.decode(ARGV[1])
local events = cjson.decode(ARGV[2])
local h = head.h
local marks = {}
for i, key in ipairs(head.wm) do marks[i] = tonumber(redis.call('GET', key) or '-1') end
local rooms, order = {}, {}
local applied = 0
for _, e in ipairs(events) do
  if e[2] > marks[e[1]] then
    local r = rooms[e[3]]
    if r == nil then r = {}; rooms[e[3]] = r; order[#order + 1] = e[3] end
    r[#r + 1] = e
    applied = applied + 1
  end
end
if #order > 0 then
  local stored = redis.call('HMGET', KEYS[1], unpack(order))
  local updates = {}
  for i, room in ipairs(order) do
    local v = {0, 0, 0, 0}
    local ref = 0
    if stored[i] then
      local a, b, c, d, ts = struct.unpack('<ddddd', stored[i])
      v = {a, b, c, d}
      ref = ts
    end
    local latest = ref
    for _, e in ipairs(rooms[room]) do if e[6] > latest then latest = e[6] end end
    if latest > ref and ref > 0 then
      local f = math.pow(0.5, (latest - ref) / h)
      for j = 1, 4 do v[j] = v[j] * f end
    end
    for _, e in ipairs(rooms[room]) do
      local k = e[4] + 1
      v[k] = v[k] + e[5] * math.pow(0.5, (latest - e[6]) / h)
    end
    updates[#updates + 1] = room
    updates[#updates + 1] = struct.pack('<ddddd', v[1], v[2], v[3], v[4], latest)
  end
  redis.call('HSET', KEYS[1], unpack(updates))
  if redis.call('EXISTS', KEYS[4]) == 0 then  -- a first write, or after the keys were lost or rebuilt
    redis.replicate_commands()
    local t = redis.call('TIME')
    redis.call('SET', KEYS[4], t[1] .. '.' .. t[2])
    redis.call('DEL', KEYS[2])
  end
  local last = redis.call('INCRBY', KEYS[2], #order)
  local numbered = {}
  for i, room in ipairs(order) do
    numbered[#numbered + 1] = last - #order + i
    numbered[#numbered + 1] = room
  end
  redis.call('ZADD', KEYS[3], unpack(numbered))
end
for i, key in ipairs(head.wm) do
  if head.top[i] > marks[i] then redis.call('SET', key, string.format('%d', head.top[i])) end
end
return applied
"""

# KEYS[1] heat hash, KEYS[2] changed set. ARGV: cursor, count, oldest ts_ms kept. Returns {next cursor, deleted}.
_PRUNE = """
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local fields = reply[2]
local old = {}
for i = 1, #fields, 2 do
  local _, _, _, _, ts = struct.unpack('<ddddd', fields[i + 1])
  if ts < tonumber(ARGV[3]) then old[#old + 1] = fields[i] end
end
if #old > 0 then
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
return {reply[1], #old}
"""

# KEYS[1] heat hash, KEYS[2] change counter, KEYS[3] changed set, KEYS[4] epoch. ARGV: after (a
# change number), limit. Returns {counter now, last number returned, epoch, room, record, ...}: the rooms whose last change is numbered
# above `after`, in change order, at most `limit` (the caller asks again from the last one's number).
_CHANGED = """
local now = tonumber(redis.call('GET', KEYS[2]) or '0')
local rows = redis.call('ZRANGE', KEYS[3], '(' .. ARGV[1], '+inf', 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]), 'WITHSCORES')
local rooms = {}
for i = 1, #rows, 2 do rooms[#rooms + 1] = rows[i] end
local out = {now, #rows > 0 and rows[#rows] or ARGV[1], redis.call('GET', KEYS[4]) or ''}
if #rooms > 0 then
  local records = redis.call('HMGET', KEYS[1], unpack(rooms))
  for i, room in ipairs(rooms) do
    out[#out + 1] = room
    out[#out + 1] = records[i] or ''
  end
end
return out
"""

# KEYS: presence sets of the rooms. ARGV[1]: from (ms). Returns viewers seen since then, per room.
_VIEWERS_NOW = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZCOUNT', KEYS[i], ARGV[1], '+inf') end
return out
"""


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
        if kind == 2:
            amount = max(0, int(event.get("dwell_ms") or 0)) / 1000.0
            if amount == 0:
                continue
        else:
            amount = 1.0
        rows.append([at + 1, offset, event["room_id"], kind, amount, int(event["ts"])])
    return [watermark_key(t, p) for t, p in positions], tops, rows


class RoomHeatSink:
    """Sink: folds enters, impressions, dwell and orders into each room's decayed counters."""

    name = "heat"

    def __init__(self, redis: Redis, half_life_s: float = HALF_LIFE_S, prune_every_s: float = 60.0) -> None:
        self.redis = redis
        self.half_life_ms = half_life_s * 1000.0
        self.prune_every_s = prune_every_s
        self._apply = redis.register_script(_APPLY)
        self._prune = redis.register_script(_PRUNE)
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


@dataclass(frozen=True)
class HeatSnapshot:
    """Every room's heat decayed to `now`: `values[i]` (SIGNALS order) belongs to `room_ids[i]`.

    `index` (room id → row) and `layout` come from a `HeatTable`: the index is shared with the
    table (it may have grown since: rows past `values` are unknown here), and `layout` changes
    whenever a room is added or the rows are rebuilt, so callers can keep alignments while it holds.
    """

    now: float
    room_ids: list[str]
    values: np.ndarray  # (n, 4) float64
    index: dict[str, int] | None = None
    layout: int = 0

    def positions(self, room_ids: Sequence[str]) -> np.ndarray:
        """The row of each of `room_ids`, -1 for rooms with no heat."""
        where = self.index if self.index is not None else {r: i for i, r in enumerate(self.room_ids)}
        pick = np.fromiter((where.get(r, -1) for r in room_ids), dtype=np.int64, count=len(room_ids))
        pick[pick >= len(self.values)] = -1
        return pick

    def aligned(self, room_ids: Sequence[str], positions: np.ndarray | None = None) -> np.ndarray:
        """(len(room_ids), 4) heat of the given rooms, zeros for rooms with no heat (`positions`:
        this snapshot's `positions(room_ids)`, when the caller kept them)."""
        out = np.zeros((len(room_ids), len(SIGNALS)), dtype=np.float64)
        if not len(self.values):
            return out
        pick = self.positions(room_ids) if positions is None else positions
        found = pick >= 0
        out[found] = self.values[pick[found]]
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
        self._records = np.zeros((0, _WIDTH), dtype=np.float64)
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
                if len(record) == _WIDTH * 8:
                    ids.append(room.decode())
                    blobs.append(record)
            if int(cursor) == 0:
                break
        records = np.frombuffer(b"".join(blobs), dtype=_RECORD).reshape(len(ids), _WIDTH).copy()
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
        if len(record) != _WIDTH * 8:  # pruned between the two reads of the script: nothing to keep
            return
        row = self._row.get(room)
        if row is None:
            row = len(self._ids)
            if row == len(self._records):
                grown = np.zeros((max(64, 2 * row), _WIDTH), dtype=np.float64)
                grown[:row] = self._records[:row]
                self._records = grown
            self._ids.append(room)
            self._row[room] = row
            self.layout += 1
        self._records[row] = np.frombuffer(record, dtype=_RECORD)


class RoomHeat:
    """The reader: all rooms' heat in one HGETALL, decoded with numpy (no per-value parsing);
    `HeatTable(reader)` for a copy kept current by reading changes only."""

    def __init__(self, redis: Redis, half_life_s: float = HALF_LIFE_S) -> None:
        self.redis = redis
        self.half_life_s = half_life_s
        self._viewers_now = redis.register_script(_VIEWERS_NOW)
        self._changed = redis.register_script(_CHANGED)

    async def snapshot(self, now: float | None = None) -> HeatSnapshot:
        at = time.time() if now is None else now
        raw: dict[bytes, bytes] = await self.redis.hgetall(HEAT_KEY)  # type: ignore[assignment]  # bytes: no decode_responses
        return decode(raw, at, self.half_life_s)

    def presence(self, room_ids: Sequence[str], now_ms: int | None = None) -> Presence:
        """Viewers in each room now, as a part of a round trip the caller makes."""
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
        pipe.eval(_VIEWERS_NOW, len(keys), *keys, self.now_ms - PRESENCE_MS)

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


def decode(raw: dict[bytes, bytes], now: float, half_life_s: float = HALF_LIFE_S) -> HeatSnapshot:
    """HGETALL's reply → a snapshot decayed to `now` (seconds)."""
    if not raw:
        return HeatSnapshot(now, [], np.zeros((0, len(SIGNALS)), dtype=np.float64))
    ids = [k.decode() for k in raw]
    records = np.frombuffer(b"".join(raw.values()), dtype=_RECORD).reshape(len(ids), _WIDTH)
    age_s = np.maximum(now - records[:, -1] / 1000.0, 0.0)
    values = records[:, :-1] * np.power(0.5, age_s / half_life_s)[:, None]
    return HeatSnapshot(now, ids, values)
