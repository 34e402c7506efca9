-- ARGV: room_id, pg_version, live(1/0), payload, replay(1/0), ended_at, changelog_max, replays_max
if redis.call('EXISTS', 'rf:rooms:epoch') == 0 then return -1 end
local cur = redis.call('HGET', 'rf:rooms:ver', ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', 'rf:rooms:ver', ARGV[1], ARGV[2])
local changed
if ARGV[3] == '1' then
  redis.call('HSET', 'rf:rooms:live', ARGV[1], ARGV[4])
  changed = 1
else
  changed = redis.call('HDEL', 'rf:rooms:live', ARGV[1])
end
if ARGV[5] == '1' then
  redis.call('ZADD', 'rf:rooms:replays', ARGV[6], ARGV[1])
  redis.call('HSET', 'rf:rooms:replay', ARGV[1], ARGV[4])
  local extra = redis.call('ZCARD', 'rf:rooms:replays') - tonumber(ARGV[8])
  if extra > 0 then
    local old = redis.call('ZRANGE', 'rf:rooms:replays', 0, extra - 1)
    redis.call('ZREMRANGEBYRANK', 'rf:rooms:replays', 0, extra - 1)
    redis.call('HDEL', 'rf:rooms:replay', unpack(old))
  end
end
if changed == 0 then return 0 end
local v = redis.call('INCR', 'rf:rooms:version')
redis.call('ZADD', 'rf:rooms:changelog', v, ARGV[1])
local over = redis.call('ZCARD', 'rf:rooms:changelog') - tonumber(ARGV[7])
if over > 0 then
  local dropped = redis.call('ZRANGE', 'rf:rooms:changelog', over - 1, over - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', 'rf:rooms:changelog', 0, over - 1)
  redis.call('SET', 'rf:rooms:floor', dropped[2])
end
return v
