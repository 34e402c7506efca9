-- The server's evidence of visits (alliance/evidence.py), for a batch of enter, heartbeat and
-- leave events in the order they were received. KEYS[i]: the visit key of event i
-- (rf:{al}:visit:<viewer>:<room>). ARGV[1]: the longest gap (ms) between arrivals that keeps a visit
-- continuous, ARGV[2]: the key's TTL (s); then 5 values per event: kind, received_at (ms),
-- ts (the client's ms), event id, declared dwell (ms; -1 unless a leave).
--
-- An enter opens the visit at its arrival. A heartbeat or a leave extends the visit's evidence to
-- its own arrival if it came within the gap of the last one (a later one means the app went
-- silent: the evidence stops there for good). Returns 3 values per event: the visit id (the
-- enter's event id, '' for an enter or when no enter was received), the dwell on the server's
-- clock (last evidence − enter arrival) and the dwell the client claims (a leave's dwell_ms, or
-- the heartbeat's ts − the enter's ts).
local gap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 5
  local kind, rx, ts, id, declared = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4], tonumber(ARGV[a + 5])
  local key = KEYS[i]
  if kind == 'enter' then
    redis.call('HSET', key, 'v', id, 'e', rx, 'l', rx, 't', ts, 'b', 0)
    redis.call('EXPIRE', key, ttl)
    out[#out + 1] = ''
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    local v = redis.call('HMGET', key, 'v', 'e', 'l', 't', 'b')
    if not v[1] then
      out[#out + 1] = ''
      out[#out + 1] = 0
      out[#out + 1] = 0
    else
      local enter_rx, last, enter_ts, broken = tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), v[5] == '1'
      if not broken then
        if rx - last > gap then
          broken = true
          redis.call('HSET', key, 'b', 1)
        elseif rx > last then
          last = rx
          redis.call('HSET', key, 'l', rx)
        end
      end
      out[#out + 1] = v[1]
      out[#out + 1] = last - enter_rx
      if kind == 'leave' then
        out[#out + 1] = declared
      else
        out[#out + 1] = ts - enter_ts
      end
    end
  end
end
return out
