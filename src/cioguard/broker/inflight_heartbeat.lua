-- Stamp this channel's in-flight lists with Redis's clock (see transport.py).
-- KEYS[1]: the registry (sorted set); ARGV: the channel's in-flight list keys.
local now = tonumber(redis.call('TIME')[1])
for _, list in ipairs(ARGV) do
  redis.call('ZADD', KEYS[1], now, list)
end
return #ARGV
