-- Claim one page of a session: the first `want` offered rooms the session was never served, recorded
-- as page `n` so that a retried request gets the same page back (feed.pages).
--
-- KEYS[1] the session's served set, KEYS[2] its pages hash (field `last`: the newest page number;
-- field n: page n's record): one hash tag, the session's (one Redis Cluster slot).
-- ARGV[1] want, ARGV[2] ttl (s), ARGV[3] mode, ARGV[4] page number, ARGV[5] pages kept,
-- ARGV[6] the record's header line, ARGV[7] boosted room ids joined by newlines, ARGV[8..] room ids,
-- best first. Modes:
--   new    a page after the newest (no page token given)
--   after  the page after page ARGV[4], made only if page ARGV[4] is still the newest; else nothing
--          is claimed and the reply is {-1, last, record of page ARGV[4] + 1 or false}
--   more   more rooms on page ARGV[4] (made by the same request, which ran short)
-- Reply {n, base, room ids...}: the rooms accepted, at positions base, base + 1, ... of the session.
-- A record is the header line, then one line per room: "room_id position" plus " b" when boosted.
local served, pages = KEYS[1], KEYS[2]
local want, ttl, mode, at = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local last = tonumber(redis.call('HGET', pages, 'last') or '-1')
local n = last + 1
if mode == 'after' then
  if last ~= at then
    return {-1, last, redis.call('HGET', pages, tostring(at + 1))}
  end
elseif mode == 'more' then
  n = at
end
local boosted = {}
for id in string.gmatch(ARGV[7], '[^\n]+') do boosted[id] = true end
local base = redis.call('SCARD', served)
local out, lines = {}, {}
for i = 8, #ARGV do
  if #out >= want then break end
  local id = ARGV[i]
  if redis.call('SADD', served, id) == 1 then
    local line = id .. ' ' .. (base + #out)
    if boosted[id] then line = line .. ' b' end
    out[#out + 1] = id
    lines[#lines + 1] = line
  end
end
redis.call('EXPIRE', served, ttl)
local body = table.concat(lines, '\n')
if mode == 'more' then
  local record = redis.call('HGET', pages, tostring(n)) or ARGV[6]
  if #lines > 0 then redis.call('HSET', pages, tostring(n), record .. '\n' .. body) end
else
  local record = ARGV[6]
  if #lines > 0 then record = record .. '\n' .. body end
  redis.call('HSET', pages, tostring(n), record, 'last', n)
  redis.call('HDEL', pages, tostring(n - tonumber(ARGV[5])))
end
redis.call('EXPIRE', pages, ttl)
local reply = {n, base}
for i = 1, #out do reply[#reply + 1] = out[i] end
return reply
