-- The scheduler's tick (alliance/scheduler.py): add to each indebted merchant's token bucket,
-- capped, and drop the buckets of merchants no longer owed anything. KEYS[1]: the buckets (hash
-- merchant → tokens). ARGV: per merchant, its id, the tokens to add and the cap.
local key = KEYS[1]
local keep = {}
for i = 1, #ARGV, 3 do
  local m, add, cap = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local held = redis.call('HGET', key, m)
  -- A merchant newly owed exposure starts with one token: its first owed impression goes out at
  -- once, the rest at the paced rate (the cap keeps it within the debt).
  local v = (held and tonumber(held) or 1) + add
  if v > cap then v = cap end
  redis.call('HSET', key, m, tostring(v))
  keep[m] = true
end
for _, m in ipairs(redis.call('HKEYS', key)) do
  if not keep[m] then redis.call('HDEL', key, m) end
end
return 1
