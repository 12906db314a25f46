"""Who is under erasure: the audit store's ``tombstones`` table, with a Redis set in front.

The table is the truth and is written in the same transaction as the erasure request, before
anything is enqueued. The Redis set only answers "yes" fast for people already known to be
erased; a "no" from Redis is always confirmed against the table. So a job checked after the
request was committed is dropped whatever Redis holds: a worker whose cache predates the
request, a Redis that was flushed or restarted empty, or a job enqueued before the deletion
and still in the queue.

Redis being down is not an error here: the cache is skipped and the store answers.

Note: the price is one primary-key read per identify/track job (the worker already reads the
store once per job for ``has_final``). A cache that could answer "no" on its own would need the
application to write Redis at request time and would still be wrong after a flush until
reloaded; the window in between is exactly a resurrection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis
from sqlalchemy import bindparam, exists, literal, select, union_all

from cioguard.audit.schema import audit_log, tombstones
from cioguard.audit.store import AuditStore
from cioguard.erasure.requests import erased_hashes, tombstoned

SET_KEY = "cioguard:tombstones"
_GATES = union_all(
    select(literal("f").label("what"), audit_log.c.final_job_id.label("value")).where(
        audit_log.c.final_job_id.in_(bindparam("job_ids", expanding=True))
    ),
    select(literal("e").label("what"), tombstones.c.person_hash.label("value")).where(
        tombstones.c.person_hash.in_(bindparam("person_hashes", expanding=True))
    ),
)
"""The buffer's gate, built once (SQLAlchemy caches its compiled form; the lists expand)."""
log = logging.getLogger("cioguard.erasure.tombstones")


class Tombstones:
    """Answers "is this keyed hash under erasure?" for the worker."""

    def __init__(self, client: redis.Redis, store: AuditStore) -> None:
        self._redis = client
        self._store = store

    def add(self, *person_hashes: str) -> None:
        """Cache tombstones (their table rows already exist:
        :func:`cioguard.erasure.opening.open_request`)."""
        if not person_hashes:
            return
        try:
            self._redis.sadd(SET_KEY, *person_hashes)
        except redis.RedisError as exc:
            log.warning("tombstone cache unavailable", extra={"error_class": type(exc).__name__})

    def remove(self, person_hash: str) -> None:
        """Drop a lifted tombstone from the cache (raises ``redis.RedisError`` if it cannot)."""
        self._redis.srem(SET_KEY, person_hash)

    def is_erased(self, person_hash: str) -> bool:
        """True if the person is under erasure. Store errors raise ``AuditUnavailableError``."""
        return bool(self.erased_among([person_hash]))

    def erased_among(self, person_hashes: Sequence[str]) -> set[str]:
        """The subset of ``person_hashes`` under erasure (one Redis call, one store query)."""
        if not person_hashes:
            return set()
        hits = self._cached(person_hashes)
        misses = [h for h in person_hashes if h not in hits]
        found = tombstoned(self._store, misses) if misses else set()
        self.add(*found)
        return hits | found

    def _cached(self, person_hashes: Sequence[str]) -> set[str]:
        try:
            members = self._redis.smismember(SET_KEY, list(person_hashes))
        except redis.RedisError as exc:
            log.warning("tombstone cache unavailable", extra={"error_class": type(exc).__name__})
            return set()
        return {h for h, member in zip(person_hashes, members, strict=True) if member}

    def gate(self, job_id: str, person_hash: str) -> tuple[bool, bool]:
        """``(already_final, erased)`` for one job, in a single store query.

        The per-job check of the unbatched worker: both answers come from the store, which is
        the truth for each, so one round trip replaces a final-row read, a Redis call and a
        tombstone read.
        """
        final = exists().where(audit_log.c.final_job_id == job_id)
        erased = exists().where(tombstones.c.person_hash == person_hash)
        with self._store.reading() as conn:
            row = conn.execute(select(final.label("final"), erased.label("erased"))).one()
        return bool(row.final), bool(row.erased)

    def gates(
        self, job_ids: Sequence[str], person_hashes: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """:meth:`gate` for a whole buffer, in one statement: (job ids already final, person
        hashes erased)."""
        found: dict[str, set[str]] = {"f": set(), "e": set()}
        params = {"job_ids": list(job_ids), "person_hashes": sorted(set(person_hashes))}
        with self._store.reading() as conn:
            for what, value in conn.execute(_GATES, params):
                found[str(what)].add(str(value))
        return found["f"], found["e"]

    def reload(self) -> int:
        """Copy every tombstone from the store into Redis (a warm-up); returns how many."""
        hashes = erased_hashes(self._store)
        self.add(*hashes)
        return len(hashes)
