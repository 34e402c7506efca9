"""The realtime sink: viewer events → live room statistics and viewer history in Redis.

Exactly-once effects on an at-least-once stream. Per polled batch, Python sums what the events
change (counts per room and bucket, unique visitors, presence, recent visits: a `WritePlan`), and
one Lua script decides and applies it atomically, so two consumers racing on the same partition
during a rebalance cannot both apply an event:
  1. Kafka position: per topic-partition the script keeps the highest offset it applied
     (`rf:{ev}:wm:*`); a batch whose first offset of a partition is at or below it holds stale records.
     A replay from offset 0, or a crash between "applied" and "offset committed", is a no-op at
     O(partitions) memory.
  2. Event id: ids applied in the last two hours are members of hourly sets (`rf:{ev}:seen:HOUR`,
     the current and two previous hours are checked with SMISMEMBER); they catch the same event
     sent twice at different offsets (a client retrying after a 503).
If anything is stale or already seen the script writes nothing and answers either the watermarks
(Python drops the records at or below them) or the positions of the seen ids; Python rebuilds the
plan without them and tries again (staleness and seen-ness only grow, so this converges, at most a
few rounds, and only on replays and retries). Events older than the longest window (plus the
5-minute future allowance) change no window and are only marked seen. Key layout: events/keys.py.

Speed: the sink reads the polled records itself (`read`, called by SinkRunner while the previous
batch is applied), decoding, checking and summing each record in one pass without keeping a dict
per event; only a batch the script refuses is decoded again, into dicts, to be planned without the
refused events. The check is of the fields this sink reads (types of event_id, type, viewer_id,
room_id, ts, dwell_ms, amount, merchant_id), as it sums: records on the topic passed the full schema
at ingest. A poll with a record that fails it is decoded again record by record, and that record is
dead-lettered with the full schema's reason (a record wrong only in fields this sink does not read
is applied here and dead-lettered by the archive sink).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from itertools import chain, repeat
from operator import attrgetter, floordiv
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from redis.asyncio import Redis

from events.keys import (
    FIVE_MIN_MS,
    HOUR_FIELD,
    MINUTE_MS,
    PLATFORM,
    PREFIX,
    PRESENCE_MS,
    TEN_S_MS,
    mark_key,
    seen_key,
)
from events.schema import Rejection, validate_stored
from events.vocabulary import ENTER, IMPRESSION, LEAVE, PURCHASE, SERVED, SWIPE_AWAY_MS, TYPES

SEEN_HOUR_MS = 3600 * 1000
SEEN_HOURS = 3  # the current hour and the two before it: every id is remembered for 2 to 3 hours
CHUNK = 4000  # events per script call when `write` is handed dicts
SLICE = 2000  # values per Redis command in the script (Lua's unpack() takes up to ~8,000)
RECENT_CAP = 100
RECENT_TTL_S = 7 * 24 * 3600
HORIZON_MS = 3600 * 1000 + 300 * 1000  # the 1-hour window plus the 5-minute future allowance


Event = dict[str, Any]
Polled = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
Refused = tuple[TopicPartition, ConsumerRecord[Any, Any], str]

# KEYS: the id sets of the last SEEN_HOURS hours (newest first), then one watermark key per
#   topic-partition of the batch; every key the script names itself (rooms, viewers) carries the
#   same hash tag (events/keys.py PREFIX), so the whole script runs on one Redis Cluster slot.
# ARGV[1] JSON header {now, seen_expire, marks: [[first offset, last offset] per watermark key]}
# ARGV[2] JSON [event id per event]
# ARGV[3] JSON plan, per table of sums its columns: one array per key part, then the values (see
#   WritePlan.as_json); the script names the keys, adds the platform ("*") and sets the expiries.
# Returns {0, watermark per topic-partition} (stale records; nothing written),
#         {1, positions...} (1-based, ids already seen; nothing written) or {2, applied}.
# Numbers go to Redis commands as they are: Redis 7 writes a Lua number with up to 17 significant
# digits, so integers (ms timestamps, counts) arrive exact.
_APPLY = """
local SLICE = $SLICE
local FIELD = cjson.decode('$FIELDS')
local function sliced(command, key, values, flag)  -- unpack() takes up to ~8,000 values
  for first = 1, #values, SLICE do
    local last = math.min(first + SLICE - 1, #values)
    if flag then redis.call(command, key, flag, unpack(values, first, last))
    else redis.call(command, key, unpack(values, first, last)) end
  end
end
local head = cjson.decode(ARGV[1])
local SEEN = {}
for i = 1, $SEEN_HOURS do SEEN[i] = KEYS[i] end
local marks, stale = {}, false
for i, tp in ipairs(head.marks) do
  marks[i] = tonumber(redis.call('GET', KEYS[$SEEN_HOURS + i]) or '-1')
  if tp[1] <= marks[i] then stale = true end
end
if stale then
  table.insert(marks, 1, 0)
  return marks
end
local ids = cjson.decode(ARGV[2])
local n = #ids
local refused = {1}
for _, key in ipairs(SEEN) do
  for first = 1, n, SLICE do
    local last = math.min(first + SLICE - 1, n)
    local member = redis.call('SMISMEMBER', key, unpack(ids, first, last))
    for i = first, last do
      if member[i - first + 1] == 1 then refused[#refused + 1] = i end
    end
  end
end
if #refused > 1 then return refused end
for i, tp in ipairs(head.marks) do
  redis.call('SET', KEYS[$SEEN_HOURS + i], string.format('%d', tp[2]))
end
sliced('SADD', SEEN[1], ids)
if n > 0 then redis.call('PEXPIREAT', SEEN[1], head.seen_expire) end

local plan = cjson.decode(ARGV[3])
for _, columns in pairs(plan) do columns.n = columns[1] and #columns[1] or 0 end  -- rows
-- 5-minute hashes of every count, per room and for the platform
local hashes = {}
local function count(room, b5, field, value)
  local key = '$PREFIXr:' .. room .. ':b:' .. b5
  local hash = hashes[key]
  if hash == nil then
    hash = {(b5 + 1) * 300 + 3660, {}}
    hashes[key] = hash
  end
  hash[2][field] = (hash[2][field] or 0) + value
end
local t = plan.hour  -- room, b5, type; events
for i = 1, t.n do
  local field = FIELD[t[3][i]]
  if field then
    count(t[1][i], t[2][i], field, t[4][i])
    count('*', t[2][i], field, t[4][i])
  end
end
for name, field in pairs({dwell = 'dwell_ms', swipes = 'swipe_away'}) do
  t = plan[name]  -- room, b5; sum
  for i = 1, t.n do
    count(t[1][i], t[2][i], field, t[3][i])
    count('*', t[2][i], field, t[3][i])
  end
end
t = plan.gmv  -- room or '*', b5; amount (its hash is there: a purchase is an order)
for i = 1, t.n do
  redis.call('HINCRBYFLOAT', '$PREFIXr:' .. t[1][i] .. ':b:' .. t[2][i], 'gmv', t[3][i])
end
for key, hash in pairs(hashes) do
  for field, value in pairs(hash[2]) do redis.call('HINCRBY', key, field, value) end
  redis.call('EXPIREAT', key, hash[1])
end
-- enter counters per 10 s and per minute
for _, counter in ipairs({{plan.tens, 's', 10, 120}, {plan.minutes, 'm', 60, 960}}) do
  local sums, kind, span, keep = {}, counter[2], counter[3], counter[4]
  t = counter[1]  -- room, bucket; enters
  for i = 1, t.n do
    local key, bucket = '$PREFIXr:' .. t[1][i] .. ':' .. kind .. ':' .. t[2][i], t[2][i]
    sums[bucket] = (sums[bucket] or 0) + t[3][i]
    redis.call('INCRBY', key, t[3][i])
    redis.call('EXPIREAT', key, (bucket + 1) * span + keep)
  end
  for bucket, value in pairs(sums) do
    redis.call('INCRBY', '$PREFIXr:*:' .. kind .. ':' .. bucket, value)
    redis.call('EXPIREAT', '$PREFIXr:*:' .. kind .. ':' .. bucket, (bucket + 1) * span + keep)
  end
end
-- unique visitors (HyperLogLogs), per room and for the platform
local visitors = {}
local function visit(room, b5, viewer)
  local key = '$PREFIXr:' .. room .. ':uv:' .. b5
  local hll = visitors[key]
  if hll == nil then
    hll = {(b5 + 1) * 300 + 3660}
    visitors[key] = hll
  end
  hll[#hll + 1] = viewer
end
t = plan.visitors  -- room, b5, viewer
for i = 1, t.n do
  visit(t[1][i], t[2][i], t[3][i])
  visit('*', t[2][i], t[3][i])
end
for key, hll in pairs(visitors) do
  local expire = table.remove(hll, 1)
  sliced('PFADD', key, hll)
  redis.call('EXPIREAT', key, expire)
end
-- recent visits per viewer, newest first
t = plan.recent  -- viewer; visits (JSON, oldest first)
for i = 1, t.n do
  local key = '$PREFIXv:' .. t[1][i] .. ':recent'
  sliced('LPUSH', key, t[2][i])
  redis.call('LTRIM', key, 0, $RECENT_LAST)
  redis.call('EXPIRE', key, $RECENT_TTL)
end
-- presence: viewers with only signs of presence are added at their latest sign (ZADD GT); for a
-- viewer who also left, with x the current score (-1: absent), the new score is max(x, sign) if
-- x > leave, else sign; below 0 the viewer is gone.
local rooms = {}
local function room_of(room)
  local r = rooms[room]
  if r == nil then
    r = {adds = {}, folds = {}, left = {}}
    rooms[room] = r
  end
  return r
end
t = plan.leaves  -- room, viewer; ts
for i = 1, t.n do room_of(t[1][i]).left[t[2][i]] = t[3][i] end
t = plan.signs  -- room, viewer; ts or -1
for i = 1, t.n do
  local r, viewer = room_of(t[1][i]), t[2][i]
  local leave = r.left[viewer]
  if leave == nil then
    r.adds[#r.adds + 1] = t[3][i]
    r.adds[#r.adds + 1] = viewer
  else
    r.folds[#r.folds + 1] = {viewer, leave, t[3][i]}
  end
end
local presence_from = head.now - $PRESENCE_MS
for room, r in pairs(rooms) do
  local key = '$PREFIXr:' .. room .. ':now'
  local set, gone = {}, {}
  for first = 1, #r.folds, SLICE do
    local last = math.min(first + SLICE - 1, #r.folds)
    local names = {}
    for j = first, last do names[#names + 1] = r.folds[j][1] end
    local scores = redis.call('ZMSCORE', key, unpack(names))
    for j = first, last do
      local fold = r.folds[j]
      local x = scores[j - first + 1] and tonumber(scores[j - first + 1]) or -1
      if x <= fold[2] or fold[3] > x then x = fold[3] end
      if x < 0 then gone[#gone + 1] = fold[1] else
        set[#set + 1] = x
        set[#set + 1] = fold[1]
      end
    end
  end
  sliced('ZREM', key, gone)
  sliced('ZADD', key, set)
  sliced('ZADD', key, r.adds, 'GT')
  if #r.adds > 0 or #set > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', presence_from)
    redis.call('EXPIRE', key, 120)
  end
end
return {2, n}
"""
for name, value in {
    "$SLICE": SLICE,
    "$FIELDS": orjson.dumps(HOUR_FIELD).decode(),
    "$RECENT_LAST": RECENT_CAP - 1,
    "$RECENT_TTL": RECENT_TTL_S,
    "$PRESENCE_MS": PRESENCE_MS,
    "$SEEN_HOURS": SEEN_HOURS,
    "$PREFIX": PREFIX,
}.items():
    _APPLY = _APPLY.replace(name, str(value))


class Unreadable(ValueError):
    """An event whose fields this sink reads do not have the types it needs."""


class WritePlan:
    """What a run of events changes in Redis, summed per key (pure; no I/O), and their ids in order."""

    __slots__ = ("ids", "_sums")

    def __init__(self, ids: list[str], sums: dict[str, Any]) -> None:
        self.ids = ids
        self._sums = sums

    def as_json(self) -> bytes:
        """Each table as columns (key parts, then values), built and serialised in C (zip, orjson):
        no Python step per key, and no Lua table per entry when the script decodes it."""
        return orjson.dumps({name: _columns(table) for name, table in self._sums.items()})

    def __getitem__(self, name: str) -> dict[Any, Any]:
        return self._sums[name]  # type: ignore[no-any-return]


def _columns(table: dict[Any, Any]) -> list[Any]:
    """A table of sums as columns: one per key part (keys are tuples, or single strings), then the values."""
    if not table:
        return []
    keys = list(zip(*table, strict=True)) if type(next(iter(table))) is tuple else [list(table)]
    return [*keys, list(table.values())]


_KNOWN = frozenset(TYPES)


def plan_writes(events: Iterable[Event], now_ms: int) -> WritePlan:
    """Sum the effects of `events` (all fresh, in offset order per partition) per Redis key.

    One loop over the events with a dict update or two per event, checking the type of every field
    it reads (raises Unreadable, or KeyError/TypeError for a missing field or a non-object); naming
    keys, platform sums and expiries happen in the script, once per key.
    """
    horizon = now_ms - HORIZON_MS
    presence_from = now_ms - PRESENCE_MS
    ids: list[str] = []
    counts: dict[tuple[str, int, str], int] = {}  # (room, 5-min bucket, type) → events
    entered: list[tuple[str, int, str]] = []  # (room, ts, viewer) per enter, bucketed at the end in C
    dwell: dict[tuple[str, int], int] = {}  # (room, 5-min bucket) → dwell ms
    swipes: dict[tuple[str, int], int] = {}  # (room, 5-min bucket) → leaves with less than SWIPE_AWAY_MS
    gmv: dict[tuple[str, int], float] = {}
    recent: dict[str, list[str]] = {}  # viewer → visits (JSON), oldest first
    # Presence per (room, viewer), folded in order: the latest sign of presence (ts, -1 after a leave
    # that came later) and the latest leave that was not followed by a later sign.
    signs: dict[tuple[str, str], int] = {}
    leaves: dict[tuple[str, str], int] = {}
    add_id, add_enter, known = ids.append, entered.append, _KNOWN
    for e in events:
        event_id, kind, room, ts = e["event_id"], e["type"], e["room_id"], e["ts"]
        if type(event_id) is not str or type(room) is not str or type(ts) is not int or kind not in known:
            raise Unreadable(event_id)
        add_id(event_id)
        if ts < horizon:
            continue
        b5 = ts // FIVE_MIN_MS
        key = (room, b5, kind)
        counts[key] = counts.get(key, 0) + 1
        if kind in (IMPRESSION, SERVED):
            continue  # what was shown (or only served) is no sign of the viewer's presence
        viewer = e["viewer_id"]
        if type(viewer) is not str:
            raise Unreadable(event_id)
        if kind == ENTER:
            add_enter((room, ts, viewer))
        elif kind == LEAVE:
            ms, merchant = e["dwell_ms"], e.get("merchant_id")
            if type(ms) is not int or not (merchant is None or type(merchant) is str):
                raise Unreadable(event_id)
            bucket = (room, b5)
            dwell[bucket] = dwell.get(bucket, 0) + ms
            if ms < SWIPE_AWAY_MS:
                swipes[bucket] = swipes.get(bucket, 0) + 1
            visit = orjson.dumps({"room_id": room, "merchant_id": merchant, "dwell_ms": ms, "ts": ts})
            recent.setdefault(viewer, []).append(visit.decode())
            if ts >= presence_from:
                who = (room, viewer)
                if signs.get(who, -1) <= ts:
                    signs[who] = -1
                    if ts > leaves.get(who, -1):
                        leaves[who] = ts
            continue
        elif kind == PURCHASE:
            amount = e["amount"]
            if type(amount) is not int and type(amount) is not float:
                raise Unreadable(event_id)
            for where in ((room, b5), (PLATFORM, b5)):
                gmv[where] = gmv.get(where, 0.0) + amount
        if ts >= presence_from:
            who = (room, viewer)
            if ts > signs.get(who, -1):
                signs[who] = ts
    rooms, times, viewers = zip(*entered, strict=True) if entered else ((), (), ())
    return WritePlan(
        ids,
        {
            "hour": counts,
            "tens": Counter(zip(rooms, map(floordiv, times, repeat(TEN_S_MS)), strict=True)),
            "minutes": Counter(zip(rooms, map(floordiv, times, repeat(MINUTE_MS)), strict=True)),
            "visitors": dict.fromkeys(
                zip(rooms, map(floordiv, times, repeat(FIVE_MIN_MS)), viewers, strict=True)
            ),
            "dwell": dwell,
            "swipes": swipes,
            "gmv": {where: repr(float(amount)) for where, amount in gmv.items()},
            "recent": recent,
            "signs": signs,
            "leaves": leaves,
        },
    )


def seen_keys(now_ms: int) -> tuple[list[str], int]:
    """The hourly id sets to check (newest first, the one to add to) and when the newest expires (ms)."""
    hour = now_ms // SEEN_HOUR_MS
    return [seen_key(hour - i) for i in range(SEEN_HOURS)], (hour + SEEN_HOURS) * SEEN_HOUR_MS


def _why(value: bytes | None) -> str:
    """Why this sink cannot read a record: the full schema's reason (it names the first bad field)."""
    try:
        raw = orjson.loads(value)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError) as exc:
        return f"not JSON: {exc}"
    checked = validate_stored(raw)
    if type(checked) is Rejection:
        return checked.message
    return "a field the realtime sink reads has the wrong type"


# What decoding and summing raise on a record this sink cannot read.
_UNREADABLE = (Unreadable, KeyError, TypeError, orjson.JSONDecodeError)


class _Chunk:
    """Events about to be applied: their Kafka positions, and the plan of the ones still thought fresh.

    Built from polled records or from event dicts. From records, the fast path decodes and sums in
    one pass (no dict kept per event); a poll with a record the sink cannot read, or with an id
    twice, takes the careful path: every record decoded and checked on its own (`events()`).
    `events()` also gives the dicts with their positions when a plan must be redone.
    """

    def __init__(self, now: int, records: Polled | None = None, events: list[Event] | None = None) -> None:
        self.now = now
        self.records = records
        self._events = events
        self.seen, expire_ms = seen_keys(now)
        self.seen_expire = str(expire_ms)
        self.refused: list[Refused] = []
        if records is not None:
            # The watermark covers every polled record, dead-lettered ones included.
            self.marks = {
                _mark(tp.topic, tp.partition): [rs[0].offset, rs[-1].offset]
                for tp, rs in records.items()
                if rs
            }
            try:
                values = map(_value, chain.from_iterable(records.values()))
                self.plan = plan_writes(map(orjson.loads, values), now)
                if len(set(self.plan.ids)) == len(self.plan.ids):
                    return
            except _UNREADABLE:
                pass
            self._replan(self.events())
        else:
            assert events is not None
            self.marks = {}
            for event in events:
                topic = event.get("_topic")
                if topic is not None:
                    offset = event["_offset"]
                    span = self.marks.setdefault(_mark(topic, event["_partition"]), [offset, offset])
                    span[0], span[1] = min(span[0], offset), max(span[1], offset)
            self._replan(events)

    def __len__(self) -> int:
        return len(self.plan.ids)

    def events(self) -> list[Event]:
        """Every readable event of the chunk, with `_topic`, `_partition`, `_offset`; records this
        sink cannot read (alone, they fail decoding or summing) go to `refused`, with the reason."""
        if self._events is None:
            assert self.records is not None
            self._events = []
            for tp, records in self.records.items():
                for record in records:
                    try:
                        event = orjson.loads(record.value)
                        plan_writes([event], self.now)
                    except _UNREADABLE:
                        self.refused.append((tp, record, _why(record.value)))
                        continue
                    event["_topic"], event["_partition"], event["_offset"] = (
                        tp.topic,
                        tp.partition,
                        record.offset,
                    )
                    self._events.append(event)
        return self._events

    def _replan(self, events: list[Event]) -> None:
        """Plan `events`, the first of each id only (the same id twice in one chunk counts once)."""
        ids: set[str] = set()
        fresh = []
        for event in events:
            if event["event_id"] not in ids:
                ids.add(event["event_id"])
                fresh.append(event)
        self._events = fresh
        self.plan = plan_writes(fresh, self.now)

    def refuse_stale(self, marks: list[int]) -> None:
        """Drop the events at or below their partition's watermark (in `marks` order)."""
        applied = {key: mark for key, mark in zip(self.marks, marks, strict=True)}
        self._replan(
            [
                e
                for e in self.events()
                if "_topic" not in e or e["_offset"] > applied[_mark(e["_topic"], e["_partition"])]
            ]
        )
        for key, span in list(self.marks.items()):
            if span[1] <= applied[key]:
                del self.marks[key]  # nothing left to apply there
            else:
                span[0] = applied[key] + 1

    def refuse_seen(self, positions: Iterable[int]) -> None:
        """Drop the events whose ids the script found already applied (1-based positions)."""
        seen = {self.plan.ids[p - 1] for p in positions}
        self._replan([e for e in self.events() if e["event_id"] not in seen])

    def keys(self) -> list[str]:
        """The script's KEYS: the id sets, then the watermark of each topic-partition in `head()` order."""
        return [*self.seen, *self.marks]

    def head(self) -> bytes:
        return orjson.dumps(
            {"now": self.now, "seen_expire": self.seen_expire, "marks": list(self.marks.values())}
        )


_value = attrgetter("value")


_mark = mark_key


class RealtimeSink:
    """Sink `realtime`: applies events to Redis at most once each (see module docstring)."""

    name = "realtime"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_APPLY)

    def read(self, polled: Polled, now_ms: int | None = None) -> tuple[_Chunk, list[Refused]]:
        """Decode, check and sum a polled batch (CPU only; SinkRunner runs it while Redis applies
        the previous batch); returns the chunk to `apply` and the records to dead-letter."""
        chunk = _Chunk(now_ms if now_ms is not None else int(time.time() * 1000), records=polled)
        return chunk, chunk.refused

    async def apply(self, chunk: _Chunk) -> int:
        """Apply a chunk; returns how many of its events were new."""
        while True:
            answer = await self._script(
                keys=chunk.keys(), args=[chunk.head(), orjson.dumps(chunk.plan.ids), chunk.plan.as_json()]
            )
            outcome = int(answer[0])
            if outcome == 2:
                return int(answer[1])
            if outcome == 0:
                chunk.refuse_stale([int(mark) for mark in answer[1:]])
            else:
                chunk.refuse_seen(int(position) for position in answer[1:])

    async def write(self, batch: list[Event], now_ms: int | None = None) -> int:
        """Apply event dicts (in offset order per partition; with `_topic`, `_partition`, `_offset`
        when they come from Kafka); returns how many were new."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        applied = 0
        for start in range(0, len(batch), CHUNK):
            applied += await self.apply(_Chunk(now, events=batch[start : start + CHUNK]))
        return applied
