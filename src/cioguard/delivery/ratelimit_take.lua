-- ratelimit_take.lua: one atomic token-bucket take, with reservation and a fleet-wide pause.
--
-- KEYS[1]  bucket hash {tokens, ts}: tokens (float, may be negative while reserved),
--          ts = server time of the last update in integer microseconds
-- KEYS[2]  pause key: exists while a fleet-wide pause is active; its TTL is the remaining pause
--
-- ARGV[1]  rate_per_s     refill rate, tokens per second (float > 0)
-- ARGV[2]  burst          bucket capacity, tokens (float >= 1)
-- ARGV[3]  cost           tokens wanted (float, 0 < cost <= burst)
-- ARGV[4]  max_reserve_s  longest wait, in seconds, the caller accepts to reserve (float >= 0)
--
-- Returns {granted, wait_us}:
--   granted  1 = the tokens are taken (wait_us = 0) or reserved (caller sleeps wait_us first),
--            0 = nothing taken; come back after wait_us (pause remaining, or deficit wait)
--   wait_us  integer microseconds, rounded up so a caller never wakes too early. Integers on
--            purpose: Redis truncates Lua numbers to integers in replies.
--
-- Time is the Redis server's (TIME), so every process on every host agrees on one clock.

local pause_ms = redis.call('PTTL', KEYS[2])
if pause_ms > 0 then
  return {0, pause_ms * 1000}
end

local rate_per_s = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_reserve_s = tonumber(ARGV[4])

local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts_us = tonumber(state[2])
if tokens == nil or ts_us == nil then
  tokens = burst
  ts_us = now_us
end

local elapsed_s = math.max(0, now_us - ts_us) / 1000000
tokens = math.min(burst, tokens + elapsed_s * rate_per_s)

local granted = 1
local wait_s = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait_s = (cost - tokens) / rate_per_s
  if wait_s <= max_reserve_s then
    tokens = tokens - cost
  else
    granted = 0
  end
end

-- '%.17g' keeps every digit; tostring() would keep only 14 significant ones.
redis.call('HSET', KEYS[1],
  'tokens', string.format('%.17g', tokens),
  'ts', string.format('%d', now_us))
-- Expire once the bucket would be full again (plus a margin): an idle bucket then vanishes
-- without changing any answer, since a missing bucket reads as full.
local refill_ms = math.ceil((burst - tokens) / rate_per_s * 1000)
redis.call('PEXPIRE', KEYS[1], refill_ms + 60000)

return {granted, math.ceil(wait_s * 1000000)}
