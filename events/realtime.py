"""The realtime sink: viewer events → live room statistics and viewer history in Redis.

Exactly-once effects on an at-least-once stream. Per polled batch, Python sums what the events
change (counts per room and bucket, unique visitors, presence, recent visits: a `WritePlan`), and
one Lua script decides and applies it atomically, so two consumers racing on the same partition
during a rebalance cannot both apply an event:
  1. Kafka position: per topic-partition the script keeps the highest offset it applied
     (`rf:ev:wm:*`); a batch whose first offset of a partition is at or below it holds stale records.
     A replay from offset 0, or a crash between "applied" and "offset committed", is a no-op at
     O(partitions) memory.
  2. Event id: ids applied in the last two hours are members of hourly sets (`rf:ev:seen:{hour}`,
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
room_id, ts, dwell_ms, amount, merchant_id): records on the topic passed the full schema at ingest,
and a record failing it is dead-lettered with the full schema's reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from redis.asyncio import Redis

from events.keys import FIVE_MIN_MS, MINUTE_MS, PLATFORM, PRESENCE_MS, TEN_S_MS
from events.schema import SWIPE_AWAY_MS, TYPES, Rejection, validate_stored

SEEN_HOUR_MS = 3600 * 1000
SEEN_HOURS = 3  # the current hour and the two before it: every id is remembered for 2 to 3 hours
CHUNK = 4000  # events per script call when `write` is handed dicts
SLICE = 2000  # values per Redis command in the script (Lua's unpack() takes up to ~8,000)
RECENT_CAP = 100
RECENT_TTL_S = 7 * 24 * 3600
HORIZON_MS = 3600 * 1000 + 300 * 1000  # the 1-hour window plus the 5-minute future allowance

HOUR_FIELD = {
    "impression": "impression", "enter": "enter", "leave": "leave", "like": "like", "comment": "comment",
    "follow": "follow", "share": "share", "add_to_cart": "cart", "purchase": "order",
    "deal_claim": "deal_claim",
}

Event = dict[str, Any]
Polled = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
Refused = tuple[TopicPartition, ConsumerRecord[Any, Any], str]

# ARGV[1] JSON header {now, seen: [hour keys, newest first], seen_expire,
#                      marks: [[watermark key, first offset, last offset] per topic-partition]}
# ARGV[2] JSON [event id per event]
# ARGV[3] JSON plan {ops: [[command, key, args...]], presence: [[key, adds, folds]]}, no list longer
#   than SLICE values (the plan splits them); two compact
#   commands: {'H', key, expire_at, field, n, ...} (HINCRBYs + EXPIREAT), {'C', key, expire_at, n}
# Returns {0, watermark per topic-partition} (stale records; nothing written),
#         {1, positions...} (1-based, ids already seen; nothing written) or {2, applied}.
_APPLY = """
local SLICE = $SLICE
local head = cjson.decode(ARGV[1])
local marks, stale = {}, false
for i, tp in ipairs(head.marks) do
  marks[i] = tonumber(redis.call('GET', tp[1]) or '-1')
  if tp[2] <= marks[i] then stale = true end
end
if stale then
  table.insert(marks, 1, 0)
  return marks
end
local ids = cjson.decode(ARGV[2])
local n = #ids
local refused = {1}
for _, key in ipairs(head.seen) do
  for first = 1, n, SLICE do  -- slices: unpack() takes up to ~8,000 values
    local last = math.min(first + SLICE - 1, n)
    local member = redis.call('SMISMEMBER', key, unpack(ids, first, last))
    for i = first, last do
      if member[i - first + 1] == 1 then refused[#refused + 1] = i end
    end
  end
end
if #refused > 1 then return refused end
for _, tp in ipairs(head.marks) do
  redis.call('SET', tp[1], string.format('%d', tp[3]))
end
for first = 1, n, SLICE do
  redis.call('SADD', head.seen[1], unpack(ids, first, math.min(first + SLICE - 1, n)))
end
if n > 0 then redis.call('PEXPIREAT', head.seen[1], head.seen_expire) end
local plan = cjson.decode(ARGV[3])
for _, op in ipairs(plan.ops) do
  local kind = op[1]
  if kind == 'H' then  -- {'H', hash key, expire at (s), field, n, field, n, ...}
    for j = 4, #op, 2 do redis.call('HINCRBY', op[2], op[j], op[j + 1]) end
    redis.call('EXPIREAT', op[2], op[3])
  elseif kind == 'C' then  -- {'C', counter key, expire at (s), n}
    redis.call('INCRBY', op[2], op[4])
    redis.call('EXPIREAT', op[2], op[3])
  else
    redis.call(unpack(op))
  end
end
-- presence: adds {ts, viewer, ...} for viewers with only signs of presence; folds
-- {viewer, leave, sign, ...} for viewers who also left: with x their current score (-1: absent),
-- the new score is max(x, sign) if x > leave, else sign; below 0 they are gone.
local presence_from = head.now - 60000
for _, p in ipairs(plan.presence) do
  local key, adds, folds = p[1], p[2], p[3]
  local set, gone = {}, {}
  if #folds > 0 then
    local names = {}
    for j = 1, #folds, 3 do names[#names + 1] = folds[j] end
    local scores = redis.call('ZMSCORE', key, unpack(names))
    for j = 1, #names do
      local x = scores[j] and tonumber(scores[j]) or -1
      local leave, sign = folds[3 * j - 1], folds[3 * j]
      if x <= leave or sign > x then x = sign end
      if x < 0 then gone[#gone + 1] = names[j] else
        set[#set + 1] = string.format('%d', x)
        set[#set + 1] = names[j]
      end
    end
  end
  if #gone > 0 then redis.call('ZREM', key, unpack(gone)) end
  if #set > 0 then redis.call('ZADD', key, unpack(set)) end
  if #adds > 0 then redis.call('ZADD', key, 'GT', unpack(adds)) end
  if #adds > 0 or #set > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', presence_from)
    redis.call('EXPIRE', key, 120)
  end
end
return {2, n}
""".replace("$SLICE", str(SLICE))


class WritePlan:
    """What a run of events changes in Redis, summed per key (pure; no I/O), and their ids in order."""

    __slots__ = ("ids", "ops", "presence")

    def __init__(self, ids: list[str], ops: list[list[str]], presence: list[list[Any]]) -> None:
        self.ids = ids
        self.ops = ops
        self.presence = presence

    def as_json(self) -> bytes:
        return orjson.dumps({"ops": self.ops, "presence": self.presence})


def plan_writes(events: Iterable[Event], now_ms: int) -> WritePlan:
    """Sum the effects of `events` (all fresh, in offset order per partition) into Redis commands.

    One loop over the events with a dict update or two per event; everything per key (names,
    expiries, the platform's sums) is worked out afterwards, once per key.
    """
    horizon = now_ms - HORIZON_MS
    presence_from = now_ms - PRESENCE_MS
    ids: list[str] = []
    counts: dict[tuple[str, int, str], int] = {}  # (room, 5-min bucket, type) → events
    tens: dict[tuple[str, int], int] = {}  # (room, 10-s bucket) → enters
    minutes: dict[tuple[str, int], int] = {}  # (room, minute) → enters
    visitors: dict[tuple[str, int], set[str]] = {}  # (room, 5-min bucket) → viewers who entered
    dwell: dict[tuple[str, int], list[int]] = {}  # (room, 5-min bucket) → [dwell ms, swipe-aways]
    gmv: dict[tuple[str, int], float] = {}
    recent: dict[str, list[str]] = {}  # viewer → visits (JSON), oldest first
    # Presence per (room, viewer), folded in order: the latest sign of presence (ts, -1 after a leave
    # that came later) and the latest leave that was not followed by a later sign.
    signs: dict[tuple[str, str], int] = {}
    leaves: dict[tuple[str, str], int] = {}
    add_id = ids.append
    for e in events:
        add_id(e["event_id"])
        ts = e["ts"]
        if ts < horizon:
            continue
        kind, room = e["type"], e["room_id"]
        b5 = ts // FIVE_MIN_MS
        key = (room, b5, kind)
        counts[key] = counts.get(key, 0) + 1
        if kind == "impression":
            continue
        if kind == "enter":
            bucket = (room, ts // TEN_S_MS)
            tens[bucket] = tens.get(bucket, 0) + 1
            bucket = (room, ts // MINUTE_MS)
            minutes[bucket] = minutes.get(bucket, 0) + 1
            bucket = (room, b5)
            entered = visitors.get(bucket)
            if entered is None:
                visitors[bucket] = {e["viewer_id"]}
            else:
                entered.add(e["viewer_id"])
        elif kind == "leave":
            bucket = (room, b5)
            ms = e["dwell_ms"]
            sums = dwell.get(bucket)
            if sums is None:
                sums = dwell[bucket] = [0, 0]
            sums[0] += ms
            if ms < SWIPE_AWAY_MS:
                sums[1] += 1
            visit = orjson.dumps({"room_id": room, "merchant_id": e.get("merchant_id"), "dwell_ms": ms, "ts": ts})
            recent.setdefault(e["viewer_id"], []).append(visit.decode())
            if ts >= presence_from:
                who = (room, e["viewer_id"])
                if signs.get(who, -1) <= ts:
                    signs[who] = -1
                    if ts > leaves.get(who, -1):
                        leaves[who] = ts
            continue
        elif kind == "purchase":
            bucket = (room, b5)
            gmv[bucket] = gmv.get(bucket, 0.0) + float(e["amount"])
        if ts >= presence_from:
            who = (room, e["viewer_id"])
            if ts > signs.get(who, -1):
                signs[who] = ts
    return WritePlan(ids, _ops(counts, tens, minutes, visitors, dwell, gmv, recent), _presence(signs, leaves))


def _ops(
    counts: dict[tuple[str, int, str], int],
    tens: dict[tuple[str, int], int],
    minutes: dict[tuple[str, int], int],
    visitors: dict[tuple[str, int], set[str]],
    dwell: dict[tuple[str, int], list[int]],
    gmv: dict[tuple[str, int], float],
    recent: dict[str, list[str]],
) -> list[list[str]]:
    """The Redis commands of the summed effects; the platform ("*") is the sum of the rooms."""
    hashes: dict[tuple[str, int], dict[str, int]] = {}
    for (room, b5, kind), n in counts.items():
        name = HOUR_FIELD.get(kind)
        if name is not None:
            for where in ((room, b5), (PLATFORM, b5)):
                fields = hashes.setdefault(where, {})
                fields[name] = fields.get(name, 0) + n
    for (room, b5), (ms, swipes) in dwell.items():
        for where in ((room, b5), (PLATFORM, b5)):
            fields = hashes.setdefault(where, {})
            fields["dwell_ms"] = fields.get("dwell_ms", 0) + ms
            if swipes:
                fields["swipe_away"] = fields.get("swipe_away", 0) + swipes
    for table in (tens, minutes, gmv):
        for (_room, bucket), value in list(table.items()):
            table[(PLATFORM, bucket)] = table.get((PLATFORM, bucket), 0) + value  # type: ignore[assignment]
    for (_room, b5), viewers in list(visitors.items()):
        visitors.setdefault((PLATFORM, b5), set()).update(viewers)

    ops: list[list[str]] = []
    # every purchase also counts an "order", so each gmv bucket has its hash entry (and expiry) here
    for (room, b5), fields in hashes.items():
        key = f"rf:ev:r:{room}:b:{b5}"
        if (room, b5) in gmv:
            ops.append(["HINCRBYFLOAT", key, "gmv", repr(gmv[(room, b5)])])
        op = ["H", key, str((b5 + 1) * 300 + 3660)]
        for name, n in fields.items():
            op += [name, str(n)]
        ops.append(op)
    for (room, t10), n in tens.items():
        ops.append(["C", f"rf:ev:r:{room}:s:{t10}", str((t10 + 1) * 10 + 120), str(n)])
    for (room, minute), n in minutes.items():
        ops.append(["C", f"rf:ev:r:{room}:m:{minute}", str((minute + 1) * 60 + 960), str(n)])
    for (room, b5), viewers in visitors.items():
        key = f"rf:ev:r:{room}:uv:{b5}"
        members = sorted(viewers)
        ops += [["PFADD", key, *members[i : i + SLICE]] for i in range(0, len(members), SLICE)]
        ops.append(["EXPIREAT", key, str((b5 + 1) * 300 + 3660)])
    for viewer, visits in recent.items():
        key = f"rf:ev:v:{viewer}:recent"
        ops += [["LPUSH", key, *visits[i : i + SLICE]] for i in range(0, len(visits), SLICE)]
        ops += [["LTRIM", key, "0", str(RECENT_CAP - 1)], ["EXPIRE", key, str(RECENT_TTL_S)]]
    return ops


def _presence(signs: dict[tuple[str, str], int], leaves: dict[tuple[str, str], int]) -> list[list[Any]]:
    """Per room: [key, adds (ts, viewer, ...), folds (viewer, leave, sign, ...)] for the script."""
    rooms: dict[str, tuple[list[Any], list[Any]]] = {}
    for (room, viewer), sign in signs.items():
        adds, folds = rooms.get(room) or rooms.setdefault(room, ([], []))
        leave = leaves.get((room, viewer))
        if leave is None:
            adds += (sign, viewer)
        else:
            folds += (viewer, leave, sign)
    step = SLICE // 6 * 6  # whole pairs and triples
    return [[f"rf:ev:r:{room}:now", adds[i : i + step], folds[i : i + step]]
            for room, (adds, folds) in rooms.items() for i in range(0, max(len(adds), len(folds)), step)]


def seen_keys(now_ms: int) -> tuple[list[str], int]:
    """The hourly id sets to check (newest first, the one to add to) and when the newest expires (ms)."""
    hour = now_ms // SEEN_HOUR_MS
    return [f"rf:ev:seen:{hour - i}" for i in range(SEEN_HOURS)], (hour + SEEN_HOURS) * SEEN_HOUR_MS


_LEAVE, _PURCHASE = "leave", "purchase"
_KNOWN = frozenset(TYPES)


def _readable(event: Any) -> bool:
    """Whether the fields this sink reads have the types it needs (KeyError/TypeError: no)."""
    kind = event["type"]
    return (
        type(event["event_id"]) is str and type(event["room_id"]) is str and type(event["viewer_id"]) is str
        and type(event["ts"]) is int and kind in _KNOWN
        and (kind != _LEAVE or (type(event["dwell_ms"]) is int and type(event.get("merchant_id", "")) in (str, type(None))))
        and (kind != _PURCHASE or type(event["amount"]) in (int, float))
    )


def _why(value: bytes | None) -> str:
    """The reason a record is refused: the full schema's, which names the first bad field."""
    try:
        raw = orjson.loads(value)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError) as exc:
        return f"not JSON: {exc}"
    checked = validate_stored(raw)
    if type(checked) is Rejection:
        return checked.message
    return "a field the realtime sink reads has the wrong type"


class _Chunk:
    """Events about to be applied: their Kafka positions, and the plan of the ones still thought fresh.

    Built from polled records (fast path: decoded and summed in one pass, no dict kept per event) or
    from event dicts; `events()` gives the dicts with their positions when a plan must be redone.
    """

    def __init__(self, now: int, records: Polled | None = None, events: list[Event] | None = None) -> None:
        self.now = now
        self.records = records
        self._events = events
        self.seen, expire_ms = seen_keys(now)
        self.seen_expire = str(expire_ms)
        self.refused: list[Refused] = []
        if records is not None:
            self.marks = {_mark(tp.topic, tp.partition): [rs[0].offset, rs[-1].offset] for tp, rs in records.items() if rs}
            self.plan = plan_writes(self._read(records), now)
            if len(set(self.plan.ids)) < len(self.plan.ids):
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

    def _read(self, polled: Polled) -> Iterator[Event]:
        """The events of the polled records that this sink can read; the others go to `refused`."""
        loads, readable, refused = orjson.loads, _readable, self.refused
        for tp, records in polled.items():
            for record in records:
                try:
                    event = loads(record.value)
                    if readable(event):
                        yield event
                        continue
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    pass
                refused.append((tp, record, _why(record.value)))

    def events(self) -> list[Event]:
        """Every readable event of the chunk, with `_topic`, `_partition`, `_offset`."""
        if self._events is None:
            assert self.records is not None
            self._events = []
            for tp, records in self.records.items():
                for record in records:
                    try:
                        event = orjson.loads(record.value)
                        if not _readable(event):
                            continue
                    except (orjson.JSONDecodeError, TypeError, KeyError):
                        continue
                    event["_topic"], event["_partition"], event["_offset"] = tp.topic, tp.partition, record.offset
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
        self._replan([e for e in self.events() if "_topic" not in e
                      or e["_offset"] > applied[_mark(e["_topic"], e["_partition"])]])
        for key, span in list(self.marks.items()):
            if span[1] <= applied[key]:
                del self.marks[key]  # nothing left to apply there
            else:
                span[0] = applied[key] + 1

    def refuse_seen(self, positions: Iterable[int]) -> None:
        """Drop the events whose ids the script found already applied (1-based positions)."""
        seen = {self.plan.ids[p - 1] for p in positions}
        self._replan([e for e in self.events() if e["event_id"] not in seen])

    def head(self) -> bytes:
        return orjson.dumps({"now": self.now, "seen": self.seen, "seen_expire": self.seen_expire,
                             "marks": [[key, *span] for key, span in self.marks.items()]})


def _mark(topic: str, partition: int) -> str:
    return f"rf:ev:wm:{topic}:{partition}"


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
            answer = await self._script(args=[chunk.head(), orjson.dumps(chunk.plan.ids), chunk.plan.as_json()])
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
