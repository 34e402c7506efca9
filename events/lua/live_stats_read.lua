-- KEYS: room prefixes. ARGV: now_ms, JSON [t10 list, minute list, b5 list], fields...
local now = tonumber(ARGV[1])
local b = cjson.decode(ARGV[2])
local fields = cjson.decode(ARGV[3])
local out = {}
for i = 1, #KEYS do
  local p = KEYS[i]
  local row = {}
  row[1] = redis.call('ZCOUNT', p .. 'now', now - 60000, '+inf')
  local e1, e15 = 0, 0
  for _, t in ipairs(b[1]) do e1 = e1 + tonumber(redis.call('GET', p .. 's:' .. t) or '0') end
  for _, m in ipairs(b[2]) do e15 = e15 + tonumber(redis.call('GET', p .. 'm:' .. m) or '0') end
  row[2] = e1
  row[3] = e15
  local sums = {}
  for j = 1, #fields do sums[j] = 0 end
  local uv = {}
  for _, x in ipairs(b[3]) do
    local values = redis.call('HMGET', p .. 'b:' .. x, unpack(fields))
    for j = 1, #fields do sums[j] = sums[j] + tonumber(values[j] or '0') end
    uv[#uv + 1] = p .. 'uv:' .. x
  end
  for j = 1, #fields do row[3 + j] = tostring(sums[j]) end
  row[#row + 1] = redis.call('PFCOUNT', unpack(uv))
  out[i] = row
end
return out
