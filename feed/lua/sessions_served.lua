-- KEYS[1] served set. ARGV[1]: how many rooms the caller's copy holds (-1: none). Returns that count
-- when the set holds as many (the copy, a subset of the set, is the whole set), else the members:
-- a process serving a session's next page need not read back the hundreds of rooms it served.
local n = redis.call('SCARD', KEYS[1])
if n == tonumber(ARGV[1]) then return n end
return redis.call('SMEMBERS', KEYS[1])
