-- KEYS: epoch, version, floor, changelog, live (rooms.live_index.CHANGES_KEYS: one slot)
-- ARGV: reader_epoch, reader_version, incremental_max
-- -> {epoch, version, 'same'} | {epoch, version, 'reload'} | {epoch, version, 'delta', id1, raw1, ...}
local epoch = redis.call('GET', KEYS[1]) or ''
local v = tonumber(redis.call('GET', KEYS[2]) or '0')
local since = tonumber(ARGV[2])
if epoch ~= ARGV[1] then return {epoch, v, 'reload'} end
if v == since then return {epoch, v, 'same'} end
local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
if since > v or since < floor or v - since > tonumber(ARGV[3]) then return {epoch, v, 'reload'} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. since, v)
local out = {epoch, v, 'delta'}
if #ids == 0 then return out end
local raws = redis.call('HMGET', KEYS[5], unpack(ids))
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = raws[i]
end
return out
