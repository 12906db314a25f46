-- lease_take.lua: lease every person of a batch to its job, in one call.
--
-- KEYS[i]  the lease sorted set of the i-th person (cioguard:lease:<person hash>)
--
-- ARGV[1]     until_ms   expiry of these leases, Unix milliseconds (the sorted sets' score)
-- ARGV[2]     ttl_ms     how long each sorted set lives after its last lease (milliseconds)
-- ARGV[2 + i] the job id holding the i-th person (the member)
--
-- Returns the number of leases taken (#KEYS). The caller's clock gives until_ms, as the
-- pipelined ZADD + PEXPIRE it replaces did: busy() compares it with the same kind of clock.

local until_ms = ARGV[1]
local ttl_ms = ARGV[2]
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, until_ms, ARGV[2 + i])
  redis.call('PEXPIRE', key, ttl_ms)
end
return #KEYS
