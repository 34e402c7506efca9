-- KEYS[1] heat hash, KEYS[2] change counter, KEYS[3] changed set, KEYS[4] epoch. ARGV[1] JSON {h: half-life ms, wm: [key...], top: [max offset per tp]},
-- ARGV[2] JSON [[tp index (1-based), offset, room, signal (0-4), amount, ts_ms], ...]; signal 4, a
-- landing (an enter not from the feed), counts in enters (1) as well as in landings (5).
-- Returns the number of events folded in.
local head = cjson.decode(ARGV[1])
local events = cjson.decode(ARGV[2])
local h = head.h
local marks = {}
for i, key in ipairs(head.wm) do marks[i] = tonumber(redis.call('GET', key) or '-1') end
local rooms, order = {}, {}
local applied = 0
for _, e in ipairs(events) do
  if e[2] > marks[e[1]] then
    local r = rooms[e[3]]
    if r == nil then r = {}; rooms[e[3]] = r; order[#order + 1] = e[3] end
    r[#r + 1] = e
    applied = applied + 1
  end
end
if #order > 0 then
  local stored = redis.call('HMGET', KEYS[1], unpack(order))
  local updates = {}
  for i, room in ipairs(order) do
    local v = {0, 0, 0, 0, 0}
    local ref = 0
    if stored[i] and #stored[i] == 48 then
      local a, b, c, d, l, ts = struct.unpack('<dddddd', stored[i])
      v = {a, b, c, d, l}
      ref = ts
    elseif stored[i] then  -- the layout before landings (40 bytes): none counted
      local a, b, c, d, ts = struct.unpack('<ddddd', stored[i])
      v = {a, b, c, d, 0}
      ref = ts
    end
    local latest = ref
    for _, e in ipairs(rooms[room]) do if e[6] > latest then latest = e[6] end end
    if latest > ref and ref > 0 then
      local f = math.pow(0.5, (latest - ref) / h)
      for j = 1, 5 do v[j] = v[j] * f end
    end
    for _, e in ipairs(rooms[room]) do
      local k = e[4] + 1
      local w = e[5] * math.pow(0.5, (latest - e[6]) / h)
      v[k] = v[k] + w
      if k == 5 then v[1] = v[1] + w end
    end
    updates[#updates + 1] = room
    updates[#updates + 1] = struct.pack('<dddddd', v[1], v[2], v[3], v[4], v[5], latest)
  end
  redis.call('HSET', KEYS[1], unpack(updates))
  if redis.call('EXISTS', KEYS[4]) == 0 then  -- a first write, or after the keys were lost or rebuilt
    redis.replicate_commands()
    local t = redis.call('TIME')
    redis.call('SET', KEYS[4], t[1] .. '.' .. t[2])
    redis.call('DEL', KEYS[2])
  end
  local last = redis.call('INCRBY', KEYS[2], #order)
  local numbered = {}
  for i, room in ipairs(order) do
    numbered[#numbered + 1] = last - #order + i
    numbered[#numbered + 1] = room
  end
  redis.call('ZADD', KEYS[3], unpack(numbered))
end
for i, key in ipairs(head.wm) do
  if head.top[i] > marks[i] then redis.call('SET', key, string.format('%d', head.top[i])) end
end
return applied
