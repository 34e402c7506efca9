"""The realtime sink: viewer events → live room statistics and viewer history in Redis.

Exactly-once effects on an at-least-once stream, decided inside one Lua script per chunk (Redis
runs it atomically, so two consumers racing on the same partition during a rebalance cannot both
apply an event):
  1. Kafka position: per topic-partition the script keeps the highest offset it applied
     (`rf:ev:wm:*`). A record at or below it is skipped. This makes a replay from offset 0, or a
     crash between "applied" and "offset committed", a no-op at O(partitions) memory.
  2. Event id: `SET rf:ev:seen:{id} NX` (2 h) skips the same event sent twice (a client retrying
     after a 503 produces a second record with the same id at a new offset).
Events older than the longest window (plus the 5-minute future allowance) change no window and are
only marked seen. Key layout: events/keys.py.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from events.keys import FIVE_MIN_MS, MINUTE_MS, TEN_S_MS
from events.schema import SWIPE_AWAY_MS

DEDUP_MS = 2 * 3600 * 1000
CHUNK = 500
RECENT_CAP = 100
RECENT_TTL_S = 7 * 24 * 3600

# ARGV[1] now_ms, ARGV[2] JSON list of
# [tp, offset, event_id, type, room_id, viewer_id, merchant_id, ts(str), t10, minute, b5, dwell, amount]
_APPLY = """
local now = tonumber(ARGV[1])
local events = cjson.decode(ARGV[2])
local dedup_ms = tonumber(ARGV[3])
local swipe_ms = tonumber(ARGV[4])
local recent_cap = tonumber(ARGV[5])
local recent_ttl = tonumber(ARGV[6])
local horizon = now - 3600000 - 300000
local presence_from = now - 60000
local marks = {}
local applied = 0
local hour_field = {impression='impression', enter='enter', leave='leave', like='like',
  comment='comment', follow='follow', share='share', add_to_cart='cart', purchase='order',
  deal_claim='deal_claim'}

local function count(room, e, kind, dwell, amount)
  local p = 'rf:ev:r:' .. room .. ':'
  local b5 = e[11]
  local hkey = p .. 'b:' .. b5
  local field = hour_field[kind]
  if field then redis.call('HINCRBY', hkey, field, 1) end
  if kind == 'leave' then
    redis.call('HINCRBY', hkey, 'dwell_ms', dwell)
    if dwell < swipe_ms then redis.call('HINCRBY', hkey, 'swipe_away', 1) end
  elseif kind == 'purchase' then
    redis.call('HINCRBYFLOAT', hkey, 'gmv', amount)
  end
  redis.call('EXPIREAT', hkey, (b5 + 1) * 300 + 3660)
  if kind == 'enter' then
    local t10, minute = e[9], e[10]
    local k10 = p .. 's:' .. t10
    redis.call('INCR', k10)
    redis.call('EXPIREAT', k10, (t10 + 1) * 10 + 120)
    local km = p .. 'm:' .. minute
    redis.call('INCR', km)
    redis.call('EXPIREAT', km, (minute + 1) * 60 + 960)
    local uv = p .. 'uv:' .. b5
    redis.call('PFADD', uv, e[6])
    redis.call('EXPIREAT', uv, (b5 + 1) * 300 + 3660)
  end
end

for i = 1, #events do
  local e = events[i]
  local tp, offset = e[1], e[2]
  local fresh = true
  if tp ~= '' then
    if marks[tp] == nil then
      marks[tp] = tonumber(redis.call('GET', 'rf:ev:wm:' .. tp) or '-1')
    end
    if offset <= marks[tp] then fresh = false else marks[tp] = offset end
  end
  if fresh and redis.call('SET', 'rf:ev:seen:' .. e[3], '1', 'NX', 'PX', dedup_ms) then
    applied = applied + 1
    local kind, room, viewer = e[4], e[5], e[6]
    local ts = tonumber(e[8])
    local dwell, amount = e[12], e[13]
    if ts >= horizon then
      count(room, e, kind, dwell, amount)
      count('*', e, kind, dwell, amount)
    end
    if ts >= presence_from then
      local nowkey = 'rf:ev:r:' .. room .. ':now'
      if kind == 'leave' then
        local seen = redis.call('ZSCORE', nowkey, viewer)
        if seen and tonumber(seen) <= ts then redis.call('ZREM', nowkey, viewer) end
      elseif kind ~= 'impression' then
        redis.call('ZADD', nowkey, 'GT', ts, viewer)
        redis.call('ZREMRANGEBYSCORE', nowkey, '-inf', presence_from)
        redis.call('EXPIRE', nowkey, 120)
      end
    end
    if kind == 'leave' then
      local rkey = 'rf:ev:v:' .. viewer .. ':recent'
      local visit = {room_id=room, merchant_id=e[7], dwell_ms=dwell, ts=e[8]}
      redis.call('LPUSH', rkey, cjson.encode(visit))
      redis.call('LTRIM', rkey, 0, recent_cap - 1)
      redis.call('EXPIRE', rkey, recent_ttl)
    end
  end
end
for tp, offset in pairs(marks) do
  redis.call('SET', 'rf:ev:wm:' .. tp, string.format('%d', offset))
end
return applied
"""


class RealtimeSink:
    """Sink `realtime`: applies events to Redis at most once each (see module docstring)."""

    name = "realtime"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_APPLY)

    async def write(self, batch: list[dict[str, Any]], now_ms: int | None = None) -> int:
        """Apply a batch (in offset order per partition); returns how many events were new."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        applied = 0
        for start in range(0, len(batch), CHUNK):
            packed = [_pack(e) for e in batch[start : start + CHUNK]]
            applied += int(
                await self._script(
                    args=[now, orjson.dumps(packed), DEDUP_MS, SWIPE_AWAY_MS, RECENT_CAP, RECENT_TTL_S]
                )
            )
        return applied


def _pack(event: dict[str, Any]) -> list[Any]:
    ts = int(event["ts"])
    topic = event.get("_topic")
    tp = f"{topic}:{event['_partition']}" if topic is not None else ""
    return [
        tp,
        int(event.get("_offset", -1)),
        event["event_id"],
        event["type"],
        event["room_id"],
        event["viewer_id"],
        event.get("merchant_id") or "",
        str(ts),
        ts // TEN_S_MS,
        ts // MINUTE_MS,
        ts // FIVE_MIN_MS,
        int(event.get("dwell_ms") or 0),
        float(event.get("amount") or 0),
    ]
