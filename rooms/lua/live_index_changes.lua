-- ARGV: reader_epoch, reader_version, incremental_max
-- → {epoch, version, 'same'} | {epoch, version, 'reload'} | {epoch, version, 'delta', id1, raw1, ...}
local epoch = redis.call('GET', 'rf:rooms:epoch') or ''
local v = tonumber(redis.call('GET', 'rf:rooms:version') or '0')
local since = tonumber(ARGV[2])
if epoch ~= ARGV[1] then return {epoch, v, 'reload'} end
if v == since then return {epoch, v, 'same'} end
local floor = tonumber(redis.call('GET', 'rf:rooms:floor') or '0')
if since > v or since < floor or v - since > tonumber(ARGV[3]) then return {epoch, v, 'reload'} end
local ids = redis.call('ZRANGEBYSCORE', 'rf:rooms:changelog', '(' .. since, v)
local out = {epoch, v, 'delta'}
if #ids == 0 then return out end
local raws = redis.call('HMGET', 'rf:rooms:live', unpack(ids))
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = raws[i]
end
return out
