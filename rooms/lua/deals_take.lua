-- KEYS: gate, holdings; ARGV: quantity, viewer_id, per-viewer limit
-- → remaining tokens after taking; -1 not enough stock; -2 gate unknown; -3 the viewer's limit
local v = redis.call('GET', KEYS[1])
if not v then return -2 end
local q = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if held + q > tonumber(ARGV[3]) then return -3 end
if tonumber(v) < q then return -1 end
redis.call('HINCRBY', KEYS[2], ARGV[2], q)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return redis.call('DECRBY', KEYS[1], q)
