-- Claim popped messages for a consumer in one step (see transport.py).
-- KEYS: [1] the consumer's in-flight list, [2] its queue, [3] kombu's unacked hash,
--       [4] kombu's unacked index, [5] the channel's owned hash (tag -> queue),
--       [6] the owners registry (token -> Redis time of its last sign of life),
--       [7] this claim's result key (its claim id).
-- ARGV: [1] the message BLMOVE moved into the in-flight list, [2] how many more to take from
--       the queue, [3] the time to index them by (kombu's clock: the client's), [4] "1" to record
--       them as unacknowledged, "0" for a consumer without acks, [5] the channel's token,
--       [6] seconds to keep this claim's result.
-- Returns {0, raw...}: the messages the consumer now owns, first one first. If the first is no
-- longer in the in-flight list, a sweep already handed it back (this consumer looked dead): it is
-- not returned. A message that is not kombu JSON is returned unrecorded for the first, or left in
-- the queue for the others, so the caller drops it as kombu itself would.
-- Idempotent: run again with the same claim id (the client retried after a lost reply), it claims
-- nothing more and returns {1, entry...}: the unacked entries ([raw, exchange, routing key]) of
-- what the first run claimed, so no message is left claimed by nobody.
if redis.call('EXISTS', KEYS[7]) == 1 then
  local tags = cjson.decode(redis.call('GET', KEYS[7]))
  local replay = {1}
  for i, tag in ipairs(tags) do
    replay[i + 1] = redis.call('HGET', KEYS[3], tag)
  end
  return replay
end

local record = ARGV[4] == '1'
local tags = {}

local function claim(raw)
  if not record then
    return true
  end
  local ok, message = pcall(cjson.decode, raw)
  if not ok or type(message) ~= 'table' or type(message['properties']) ~= 'table' then
    return false
  end
  local props = message['properties']
  local info = props['delivery_info'] or {}
  local tag = props['delivery_tag']
  if type(tag) ~= 'string' then
    return false
  end
  redis.call('ZADD', KEYS[4], ARGV[3], tag)
  redis.call('HSET', KEYS[3], tag, '[' .. raw .. ',' .. cjson.encode(info['exchange'] or '') ..
             ',' .. cjson.encode(info['routing_key'] or '') .. ']')
  redis.call('HSET', KEYS[5], tag, KEYS[2])
  tags[#tags + 1] = tag
  return true
end

local owned = {0}
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  claim(ARGV[1])
  owned[2] = ARGV[1]
end
for _ = 1, tonumber(ARGV[2]) do
  local raw = redis.call('RPOP', KEYS[2])
  if not raw then
    break
  end
  if not claim(raw) then
    redis.call('RPUSH', KEYS[2], raw)  -- the next pop takes it, as a first message
    break
  end
  owned[#owned + 1] = raw
end
if #tags > 0 then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[6], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[5])
end
redis.call('SET', KEYS[7], #tags > 0 and cjson.encode(tags) or '[]', 'EX', tonumber(ARGV[6]))
return owned
