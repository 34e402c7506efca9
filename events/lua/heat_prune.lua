-- KEYS[1] heat hash, KEYS[2] changed set. ARGV: cursor, count, oldest ts_ms kept. Returns {next cursor, deleted}.
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local fields = reply[2]
local old = {}
for i = 1, #fields, 2 do
  local record = fields[i + 1]
  local ts = struct.unpack('<d', string.sub(record, #record - 7))  -- the last value, in either layout
  if ts < tonumber(ARGV[3]) then old[#old + 1] = fields[i] end
end
if #old > 0 then
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
return {reply[1], #old}
