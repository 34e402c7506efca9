-- The boost stage spends tokens for the rooms it places on a page and leaves a grant for each
-- (alliance/grants.py). KEYS[1]: the token buckets (hash merchant → tokens); then, per candidate
-- (most wanted first), its grant key and its merchant's pending set (rf:{al}:pending:<merchant>).
-- ARGV[1]: the grants' TTL (s), ARGV[2]: now (s), ARGV[3]: how many to place at most, then the
-- candidates' merchant ids. Candidates whose merchant has no whole token are skipped. Returns 1/0
-- per candidate.
local ttl, now, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, placed = {}, 0
for i = 4, #ARGV do
  local m = ARGV[i]
  local k = 2 + (i - 4) * 2
  local v = tonumber(redis.call('HGET', KEYS[1], m) or '0')
  if placed < limit and v >= 1 then
    redis.call('HSET', KEYS[1], m, tostring(v - 1))
    redis.call('SET', KEYS[k], m, 'EX', ttl)
    redis.call('ZADD', KEYS[k + 1], now + ttl, KEYS[k])
    redis.call('EXPIRE', KEYS[k + 1], ttl)
    placed = placed + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
