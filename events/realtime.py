"""The realtime sink: viewer events → live room statistics and viewer history in Redis.

Exactly-once effects on an at-least-once stream. Per chunk of a consumer batch, Python sums what
the events change (counts per room and bucket, unique visitors, presence, recent visits: a
`WritePlan`), and one Lua script decides and applies it atomically, so two consumers racing on the
same partition during a rebalance cannot both apply an event:
  1. Kafka position: per topic-partition the script keeps the highest offset it applied
     (`rf:ev:wm:*`); a record at or below it is stale. A replay from offset 0, or a crash between
     "applied" and "offset committed", is a no-op at O(partitions) memory.
  2. Event id: ids applied in the last two hours are members of hourly sets (`rf:ev:seen:{hour}`,
     the current and two previous hours are checked with SMISMEMBER); they catch the same event
     sent twice at different offsets (a client retrying after a 503).
The script checks every event the plan was built from; if any is stale or already seen it writes
nothing and answers which ones, Python rebuilds the plan without them and tries again (staleness
and seen-ness only grow, so this converges, at most a few rounds, and only on replays and retries).
Events older than the longest window (plus the 5-minute future allowance) change no window and are
only marked seen. Key layout: events/keys.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from events.keys import FIVE_MIN_MS, MINUTE_MS, PLATFORM, PRESENCE_MS, TEN_S_MS
from events.schema import SWIPE_AWAY_MS

SEEN_HOUR_MS = 3600 * 1000
SEEN_HOURS = 3  # the current hour and the two before it: every id is remembered for 2 to 3 hours
CHUNK = 2000  # events per script call (Lua's unpack() takes up to ~8,000 values)
RECENT_CAP = 100
RECENT_TTL_S = 7 * 24 * 3600
HORIZON_MS = 3600 * 1000 + 300 * 1000  # the 1-hour window plus the 5-minute future allowance

HOUR_FIELD = {
    "impression": "impression", "enter": "enter", "leave": "leave", "like": "like", "comment": "comment",
    "follow": "follow", "share": "share", "add_to_cart": "cart", "purchase": "order",
    "deal_claim": "deal_claim",
}

# ARGV[1] JSON header {now, seen: [hour keys, newest first], seen_expire, tps: [[key, max offset]],
#                      ids: [event id per event], at: [tp index per event, 0 = none], offsets: [offset per event]}
# ARGV[2] JSON plan {ops: [[command, key, args...]], presence: [[key, adds, mixed]]}; two compact
#   commands: {'H', key, expire_at, field, n, ...} (HINCRBYs + EXPIREAT), {'C', key, expire_at, n}
# Returns {0, positions...} (1-based, nothing written) or {1, applied}.
_APPLY = """
local head = cjson.decode(ARGV[1])
local ids, at, offsets = head.ids, head.at, head.offsets
local n = #ids
local wm = {}
for i, tp in ipairs(head.tps) do
  wm[i] = tonumber(redis.call('GET', tp[1]) or '-1')
end
local refused = {}
for i = 1, n do
  local tp = at[i]
  if tp > 0 and offsets[i] <= wm[tp] then refused[#refused + 1] = i end
end
if #refused == 0 and n > 0 then
  for _, key in ipairs(head.seen) do
    local member = redis.call('SMISMEMBER', key, unpack(ids))
    for i = 1, n do
      if member[i] == 1 then refused[#refused + 1] = i end
    end
  end
end
if #refused > 0 then
  table.insert(refused, 1, 0)
  return refused
end
for i, tp in ipairs(head.tps) do
  if tp[2] > wm[i] then redis.call('SET', tp[1], string.format('%d', tp[2])) end
end
if n > 0 then
  redis.call('SADD', head.seen[1], unpack(ids))
  redis.call('PEXPIREAT', head.seen[1], head.seen_expire)
end
local plan = cjson.decode(ARGV[2])
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
local presence_from = head.now - 60000
for _, p in ipairs(plan.presence) do
  local key, adds, mixed = p[1], p[2], p[3]
  local set, gone = {}, {}
  if #mixed > 0 then
    local names = {}
    for j = 1, #mixed do names[j] = mixed[j][1] end
    local scores = redis.call('ZMSCORE', key, unpack(names))
    for j = 1, #mixed do
      local x = scores[j] and tonumber(scores[j]) or nil
      for _, step in ipairs(mixed[j][2]) do
        if step >= 0 then
          if x == nil or step > x then x = step end
        elseif x ~= nil and x <= -step - 1 then
          x = nil
        end
      end
      if x == nil then gone[#gone + 1] = names[j] else
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
return {1, n}
"""


@dataclass
class WritePlan:
    """What a set of fresh events changes in Redis, summed per key (pure; no I/O)."""

    ops: list[list[str]] = field(default_factory=list)
    presence: list[list[Any]] = field(default_factory=list)

    def as_json(self) -> bytes:
        return orjson.dumps({"ops": self.ops, "presence": self.presence})


def plan_writes(events: list[dict[str, Any]], now_ms: int) -> WritePlan:
    """Sum the effects of `events` (all fresh, in offset order per partition) into Redis commands."""
    horizon = now_ms - HORIZON_MS
    presence_from = now_ms - PRESENCE_MS
    counts: dict[tuple[str, int, str], int] = defaultdict(int)  # (room, 5-min bucket, field)
    gmv: dict[tuple[str, int], float] = defaultdict(float)
    tens: dict[tuple[str, int], int] = defaultdict(int)
    minutes: dict[tuple[str, int], int] = defaultdict(int)
    visitors: dict[tuple[str, int], set[str]] = defaultdict(set)
    # room → viewer → steps: ts (a sign of presence) or -(ts + 1) (a leave at ts)
    presence: dict[str, dict[str, list[int]]] = defaultdict(dict)
    recent: dict[str, list[str]] = defaultdict(list)
    hour_field = HOUR_FIELD
    for e in events:
        kind = e["type"]
        room = e["room_id"]
        ts = e["ts"]
        if ts >= horizon:
            b5 = ts // FIVE_MIN_MS
            name = hour_field.get(kind)
            if name is not None:
                counts[(room, b5, name)] += 1
            if kind == "enter":
                tens[(room, ts // TEN_S_MS)] += 1
                minutes[(room, ts // MINUTE_MS)] += 1
                visitors[(room, b5)].add(e["viewer_id"])
            elif kind == "leave":
                dwell = e.get("dwell_ms") or 0
                counts[(room, b5, "dwell_ms")] += dwell
                if dwell < SWIPE_AWAY_MS:
                    counts[(room, b5, "swipe_away")] += 1
            elif kind == "purchase":
                gmv[(room, b5)] += float(e.get("amount") or 0)
        if kind != "impression" and ts >= presence_from:
            presence[room].setdefault(e["viewer_id"], []).append(-ts - 1 if kind == "leave" else ts)
        if kind == "leave":
            recent[e["viewer_id"]].append(orjson.dumps({
                "room_id": room, "merchant_id": e.get("merchant_id"), "dwell_ms": e.get("dwell_ms") or 0,
                "ts": ts,
            }).decode())

    # The platform ("*") is the sum of the rooms, added once per bucket rather than once per event.
    for (_room, b5, name), value in list(counts.items()):
        counts[(PLATFORM, b5, name)] += value
    for (_room, b5), value in list(gmv.items()):
        gmv[(PLATFORM, b5)] += value
    for table in (tens, minutes):
        for (_room, bucket), value in list(table.items()):
            table[(PLATFORM, bucket)] += value
    for (_room, b5), viewers in list(visitors.items()):
        visitors[(PLATFORM, b5)] |= viewers

    hashes: dict[tuple[str, int], list[str]] = defaultdict(list)
    for (room, b5, name), value in counts.items():
        hashes[(room, b5)] += [name, str(value)]
    # every purchase also counts an "order", so each gmv bucket has its hash entry (and expiry) here
    ops: list[list[str]] = []
    for (room, b5), pairs in hashes.items():
        key = f"rf:ev:r:{room}:b:{b5}"
        expire = str((b5 + 1) * 300 + 3660)
        if (room, b5) in gmv:
            ops.append(["HINCRBYFLOAT", key, "gmv", repr(gmv[(room, b5)])])
        ops.append(["H", key, expire, *pairs])
    for (room, t10), value in tens.items():
        ops.append(["C", f"rf:ev:r:{room}:s:{t10}", str((t10 + 1) * 10 + 120), str(value)])
    for (room, minute), value in minutes.items():
        ops.append(["C", f"rf:ev:r:{room}:m:{minute}", str((minute + 1) * 60 + 960), str(value)])
    for (room, b5), viewers in visitors.items():
        key = f"rf:ev:r:{room}:uv:{b5}"
        ops += [["PFADD", key, *sorted(viewers)], ["EXPIREAT", key, str((b5 + 1) * 300 + 3660)]]
    for viewer, visits in recent.items():
        key = f"rf:ev:v:{viewer}:recent"
        ops += [["LPUSH", key, *visits], ["LTRIM", key, "0", str(RECENT_CAP - 1)],
                ["EXPIRE", key, str(RECENT_TTL_S)]]

    rooms_presence: list[list[Any]] = []
    for room, viewers_steps in presence.items():
        adds: list[Any] = []
        mixed: list[Any] = []
        for viewer, steps in viewers_steps.items():
            if min(steps) >= 0:
                adds += [max(steps), viewer]
            else:
                mixed.append([viewer, steps])
        rooms_presence.append([f"rf:ev:r:{room}:now", adds, mixed])
    return WritePlan(ops, rooms_presence)


def seen_keys(now_ms: int) -> tuple[list[str], int]:
    """The hourly id sets to check (newest first, the one to add to) and when the newest expires (ms)."""
    hour = now_ms // SEEN_HOUR_MS
    return [f"rf:ev:seen:{hour - i}" for i in range(SEEN_HOURS)], (hour + SEEN_HOURS) * SEEN_HOUR_MS


class RealtimeSink:
    """Sink `realtime`: applies events to Redis at most once each (see module docstring)."""

    name = "realtime"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_APPLY)

    async def write(self, batch: list[dict[str, Any]], now_ms: int | None = None) -> int:
        """Apply a batch (in offset order per partition); returns how many events were new.

        Chunks go to Redis one after the other (a later chunk must not raise a watermark before
        an earlier one is applied), but the next chunk is summed while Redis applies the previous.
        """
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        applied = 0
        previous: asyncio.Task[int] | None = None
        try:
            for start in range(0, len(batch), CHUNK):
                prepared = _Chunk(batch[start : start + CHUNK], now)
                prepared.plan()
                if previous is not None:
                    applied += await previous
                previous = asyncio.ensure_future(self._apply(prepared))
            if previous is not None:
                applied += await previous
                previous = None
        finally:
            if previous is not None:
                previous.cancel()
        return applied

    async def _apply(self, chunk: _Chunk) -> int:
        while True:
            answer = await self._script(args=[chunk.head, chunk.body])
            if int(answer[0]) == 1:
                return int(answer[1])
            chunk.refuse(int(position) for position in answer[1:])
            chunk.plan()


class _Chunk:
    """A chunk of a batch, its Kafka positions, and the plan for the events still thought fresh."""

    def __init__(self, events: list[dict[str, Any]], now: int) -> None:
        self.events = events
        self.now = now
        self.tps: dict[str, int] = {}  # "rf:ev:wm:{topic}:{partition}" → highest offset in the chunk
        self.where: list[tuple[str, int] | None] = []
        self.candidates: list[int] = []
        ids: set[str] = set()
        names: dict[tuple[str, int], str] = {}
        tps, where, candidates = self.tps, self.where, self.candidates
        for i, event in enumerate(events):
            topic = event.get("_topic")
            if topic is not None:
                partition = event["_partition"]
                key = names.get((topic, partition))
                if key is None:
                    key = names[(topic, partition)] = f"rf:ev:wm:{topic}:{partition}"
                offset = event["_offset"]
                if offset > tps.get(key, -1):
                    tps[key] = offset
                where.append((key, offset))
            else:
                where.append(None)
            event_id = event["event_id"]
            if event_id not in ids:  # the same id twice in one chunk: the first one counts
                ids.add(event_id)
                candidates.append(i)
        self.tp_index = {key: n + 1 for n, key in enumerate(self.tps)}
        self.seen, expire_ms = seen_keys(now)
        self.seen_expire = str(expire_ms)
        self.head = self.body = b""

    def refuse(self, positions: Any) -> None:
        """Drop the candidates the script found stale or already seen (1-based positions)."""
        refused = {self.candidates[p - 1] for p in positions}
        self.candidates = [i for i in self.candidates if i not in refused]

    def plan(self) -> None:
        fresh = [self.events[i] for i in self.candidates]
        tp_of, offsets = [], []
        for i in self.candidates:
            position = self.where[i]
            if position is None:  # an event without a Kafka position (a direct call): its id alone decides
                tp_of.append(0)
                offsets.append(0)
            else:
                tp_of.append(self.tp_index[position[0]])
                offsets.append(position[1])
        self.head = orjson.dumps({"now": self.now, "seen": self.seen, "seen_expire": self.seen_expire,
                                  "tps": [[key, offset] for key, offset in self.tps.items()],
                                  "ids": [e["event_id"] for e in fresh], "at": tp_of, "offsets": offsets})
        self.body = plan_writes(fresh, self.now).as_json()
