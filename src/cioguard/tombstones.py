"""Who is under erasure, answered fast: a Redis set of keyed hashes, backed by the audit store.

The audit store's ``tombstones`` table is the truth; Redis holds a cache for the per-job check.
A marker key says the cache was loaded; if Redis was flushed or restarted without data, the
marker is gone and the next check reloads every tombstone from the store first, so an erased
person cannot be resurrected by a job enqueued after the flush.
"""

from __future__ import annotations

import redis

from cioguard.audit import AuditStore
from cioguard.gdpr import erased_hashes

SET_KEY = "cioguard:tombstones"
LOADED_KEY = "cioguard:tombstones:loaded"


class Tombstones:
    def __init__(self, client: redis.Redis, store: AuditStore) -> None:
        self._redis = client
        self._store = store

    def add(self, person_hash: str) -> None:
        self._redis.sadd(SET_KEY, person_hash)

    def is_erased(self, person_hash: str) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(LOADED_KEY)
        pipe.sismember(SET_KEY, person_hash)
        loaded, member = pipe.execute()
        if not loaded:
            self.reload()
            return bool(self._redis.sismember(SET_KEY, person_hash))
        return bool(member)

    def reload(self) -> int:
        """Copy every tombstone from the audit store into Redis; returns how many."""
        hashes = erased_hashes(self._store)
        pipe = self._redis.pipeline(transaction=True)
        if hashes:
            pipe.sadd(SET_KEY, *hashes)
        pipe.set(LOADED_KEY, "1")
        pipe.execute()
        return len(hashes)
