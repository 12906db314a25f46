-- Hand the in-flight lists of silent consumers back to their queues (see transport.py).
-- KEYS[1]: the registry; ARGV[1]: seconds without a heartbeat; ARGV[2]: lists per run;
-- ARGV[3]: seconds after which a silent list's registry entry is forgotten.
-- Atomic, so a message is handed back once however many workers sweep at the same time.
-- A swept list keeps its registry entry until ARGV[3]: a consumer that only stalled may still
-- move a message into it, and the next sweep must find it (a periodic scan in ownership.py
-- registers any in-flight list that is not in the registry, for one silent even longer).
-- List keys are "_cioguard.inflight:<token>:<queue>"; the queue is everything after the token.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local moved = 0
local function hand_back(list)
  local queue = string.match(list, '^_cioguard%.inflight:[^:]+:(.+)$')
  if queue then
    while redis.call('LMOVE', list, queue, 'RIGHT', 'RIGHT') do
      moved = moved + 1
    end
  end
end
local forgotten = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]),
                             'LIMIT', 0, tonumber(ARGV[2]))
for _, list in ipairs(forgotten) do
  hand_back(list)
  redis.call('ZREM', KEYS[1], list)
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[3])),
                         now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
for _, list in ipairs(stale) do
  hand_back(list)
end
return moved
