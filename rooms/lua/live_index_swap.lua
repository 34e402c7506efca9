-- A rebuild's swap (rooms.live_index.rebuild), atomic as a MULTI was.
-- KEYS: 4 pairs (temporary key, index key), then changelog, floor, version, epoch (all rf:{rooms}:*:
-- one Redis Cluster slot)
-- ARGV: per pair 1 (rename the temporary key over the index key) or 0 (delete the index key: nothing
-- of that kind now), then the new epoch
for i = 0, 3 do
  if ARGV[i + 1] == '1' then
    redis.call('RENAME', KEYS[2 * i + 1], KEYS[2 * i + 2])
  else
    redis.call('DEL', KEYS[2 * i + 2])
  end
end
redis.call('DEL', KEYS[9])
redis.call('SET', KEYS[10], 0)
redis.call('INCR', KEYS[11])
redis.call('SET', KEYS[12], ARGV[5])
return 1
