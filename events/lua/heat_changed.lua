-- KEYS[1] heat hash, KEYS[2] change counter, KEYS[3] changed set, KEYS[4] epoch. ARGV: after (a
-- change number), limit. Returns {counter now, last number returned, epoch, room, record, ...}: the rooms whose last change is numbered
-- above `after`, in change order, at most `limit` (the caller asks again from the last one's number).
local now = tonumber(redis.call('GET', KEYS[2]) or '0')
local rows = redis.call('ZRANGE', KEYS[3], '(' .. ARGV[1], '+inf', 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]), 'WITHSCORES')
local rooms = {}
for i = 1, #rows, 2 do rooms[#rooms + 1] = rows[i] end
local out = {now, #rows > 0 and rows[#rows] or ARGV[1], redis.call('GET', KEYS[4]) or ''}
if #rooms > 0 then
  local records = redis.call('HMGET', KEYS[1], unpack(rooms))
  for i, room in ipairs(rooms) do
    out[#out + 1] = room
    out[#out + 1] = records[i] or ''
  end
end
return out
