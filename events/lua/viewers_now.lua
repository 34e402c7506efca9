-- KEYS: presence sets of the rooms. ARGV[1]: from (ms). Returns viewers seen since then, per room.
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZCOUNT', KEYS[i], ARGV[1], '+inf') end
return out
