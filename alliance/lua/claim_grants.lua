-- App-reported impressions claim the grants the boost stage left (alliance/grants.py). KEYS: per
-- impression, its grant key (rf:{al}:grant:<viewer>:<page token>:<room>). ARGV: per impression, its
-- event id. A grant counts once: the first impression claims it (the same event id again, a
-- replay, still finds it claimed by itself). Returns the granted merchant id per impression, or
-- '' when the impression claims nothing.
local out = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  local id = ARGV[i]
  if not v then
    out[i] = ''
  elseif string.sub(v, 1, 5) == 'used:' then
    local sep = string.find(v, '|', 6, true)
    if sep and string.sub(v, 6, sep - 1) == id then out[i] = string.sub(v, sep + 1) else out[i] = '' end
  else
    redis.call('SET', KEYS[i], 'used:' .. id .. '|' .. v, 'KEEPTTL')
    out[i] = v
  end
end
return out
