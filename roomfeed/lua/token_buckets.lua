-- KEYS: bucket keys. ARGV: cost, then (per_second, burst) for each key.
-- Returns {1, 0} when every bucket had the tokens (all charged), else {0, retry_after_ms}
-- (nothing charged: a refused request must not drain the other buckets).
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local cost = tonumber(ARGV[1])
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', key, 't', 'v')
  local level = burst
  if state[1] and state[2] then
    level = math.min(burst, tonumber(state[2]) + math.max(0, now - tonumber(state[1])) * rate)
  end
  levels[i] = level
  if level < cost then
    wait = math.max(wait, (cost - level) / rate)
  end
end
if wait > 0 then
  return {0, math.ceil(wait * 1000)}
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  redis.call('HSET', key, 't', string.format('%.6f', now), 'v', string.format('%.6f', levels[i] - cost))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return {1, 0}
