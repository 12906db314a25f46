-- Hand the in-flight lists of silent consumers back to their queues (see transport.py).
-- KEYS[1]: the registry; ARGV[1]: seconds without a heartbeat; ARGV[2]: lists per run.
-- Atomic, so a message is handed back once however many workers sweep at the same time.
-- List keys are "_cioguard.inflight:<token>:<queue>"; the queue is everything after the token.
local now = tonumber(redis.call('TIME')[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
                         'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, list in ipairs(stale) do
  local queue = string.match(list, '^_cioguard%.inflight:[^:]+:(.+)$')
  if queue then
    while redis.call('LMOVE', list, queue, 'RIGHT', 'RIGHT') do
      moved = moved + 1
    end
  end
  redis.call('ZREM', KEYS[1], list)
end
return moved
