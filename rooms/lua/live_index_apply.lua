-- KEYS: epoch, ver, live, replays, replay, version, changelog, floor (rooms.live_index.APPLY_KEYS:
-- all rf:{rooms}:*, one Redis Cluster slot)
-- ARGV: room_id, pg_version, live(1/0), payload, replay(1/0), ended_at, changelog_max, replays_max
local epoch, ver, live, replays, replay = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local version, changelog, floor = KEYS[6], KEYS[7], KEYS[8]
if redis.call('EXISTS', epoch) == 0 then return -1 end
local cur = redis.call('HGET', ver, ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', ver, ARGV[1], ARGV[2])
local changed
if ARGV[3] == '1' then
  redis.call('HSET', live, ARGV[1], ARGV[4])
  changed = 1
else
  changed = redis.call('HDEL', live, ARGV[1])
end
if ARGV[5] == '1' then
  redis.call('ZADD', replays, ARGV[6], ARGV[1])
  redis.call('HSET', replay, ARGV[1], ARGV[4])
  local extra = redis.call('ZCARD', replays) - tonumber(ARGV[8])
  if extra > 0 then
    local old = redis.call('ZRANGE', replays, 0, extra - 1)
    redis.call('ZREMRANGEBYRANK', replays, 0, extra - 1)
    redis.call('HDEL', replay, unpack(old))
  end
end
if changed == 0 then return 0 end
local v = redis.call('INCR', version)
redis.call('ZADD', changelog, v, ARGV[1])
local over = redis.call('ZCARD', changelog) - tonumber(ARGV[7])
if over > 0 then
  local dropped = redis.call('ZRANGE', changelog, over - 1, over - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', changelog, 0, over - 1)
  redis.call('SET', floor, dropped[2])
end
return v
