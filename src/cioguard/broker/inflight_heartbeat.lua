-- Stamp a channel's token and in-flight lists with Redis's clock (see transport.py).
-- KEYS[1]: the in-flight list registry, KEYS[2]: the owners registry (both sorted sets).
-- ARGV[1]: the channel's token; ARGV[2..]: its in-flight list keys.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[2], now, ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
return #ARGV - 1
