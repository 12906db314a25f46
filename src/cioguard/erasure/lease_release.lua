-- lease_release.lua: give back the leases of a batch, in one call.
--
-- KEYS[i]  the lease sorted set of the i-th person (cioguard:lease:<person hash>)
-- ARGV[i]  the job id that held it (the member to remove)
--
-- Returns the number of leases removed (one already expired or released counts 0).

local removed = 0
for i, key in ipairs(KEYS) do
  removed = removed + redis.call('ZREM', key, ARGV[i])
end
return removed
