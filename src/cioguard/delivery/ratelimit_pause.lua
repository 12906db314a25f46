-- ratelimit_pause.lua: start or extend a fleet-wide pause; never shortens one.
--
-- KEYS[1]  pause key; its TTL (PX, on the server's clock) is the remaining pause, and its value
--          the server time, in integer milliseconds since the epoch, at which the pause ends
--          (for people reading Redis; ratelimit_take.lua only looks at the TTL)
--
-- ARGV[1]  pause_ms  wanted pause from now, integer milliseconds (>= 0; 0 changes nothing)
--
-- Returns the remaining pause after the call, integer milliseconds (0 = no pause).

local want_ms = tonumber(ARGV[1])
local left_ms = redis.call('PTTL', KEYS[1])

if want_ms > 0 and want_ms > left_ms then
  local now = redis.call('TIME')
  local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + want_ms
  redis.call('SET', KEYS[1], string.format('%d', until_ms), 'PX', want_ms)
  return want_ms
end

return math.max(left_ms, 0)
