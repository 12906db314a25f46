"""Per-person in-flight leases: what makes ``CIOGUARD_DELETION_MODE=delete`` safe.

A plain DELETE does not block re-creation: an identify that passed its erasure check just
before the request was recorded, and is still waiting in the limiter, the fast retries or a
slow answer, would re-create the profile after the DELETE. So every identify/track takes a lease
on its person *before* its erasure check and gives it back when it has its answer; a delete waits
(a retry with a countdown, holding no worker) until its person has no lease. The order makes
it exact: the request's tombstone is committed before the erase runs, so a job that takes its
lease after the erase looked is already gated by the tombstone, and one that took it before is
waited for.

Leases are a Redis sorted set per person (member: job id, score: expiry in ms); a lease expires
after ``ttl_s`` (above the longest in-flight window), so one left by a killed worker delays a
delete by at most that.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from cioguard.errors import RetryableError

PREFIX = "cioguard:lease:"


class LeaseUnavailableError(RetryableError):
    """Redis did not answer a lease call: the job runs again shortly."""

    reason_code = "broker_unavailable"


class PersonInFlightError(RetryableError):
    """A ``delete``-mode erasure must wait: a delivery to its person is still in flight."""

    reason_code = "person_in_flight"


class Leases:
    """Leases on people (by keyed hash) held by in-flight identify/track jobs."""

    def __init__(self, client: redis.Redis, *, ttl_s: float) -> None:
        self._redis = client
        self.ttl_s = ttl_s

    def take(self, held: Sequence[tuple[str, str]]) -> None:
        """Lease ``(person_hash, job_id)`` pairs, in one round trip."""
        if not held:
            return
        until_ms = int((time.time() + self.ttl_s) * 1000)
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for person_hash, job_id in held:
                    pipe.zadd(PREFIX + person_hash, {job_id: until_ms})
                    pipe.pexpire(PREFIX + person_hash, int(self.ttl_s * 1000) + 1000)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise LeaseUnavailableError(
                f"in-flight leases unavailable ({type(exc).__name__})"
            ) from None

    def release(self, held: Sequence[tuple[str, str]]) -> None:
        """Give leases back (best effort: an unreleased lease expires after ``ttl_s``)."""
        if not held:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for person_hash, job_id in held:
                    pipe.zrem(PREFIX + person_hash, job_id)
                pipe.execute()
        except (redis.RedisError, OSError):
            pass

    def busy(self, person_hashes: Sequence[str]) -> dict[str, float]:
        """Seconds until each leased person's last lease ends (absent: no lease)."""
        if not person_hashes:
            return {}
        now_ms = int(time.time() * 1000)
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for person_hash in person_hashes:
                    pipe.zremrangebyscore(PREFIX + person_hash, "-inf", now_ms)
                    pipe.zrange(PREFIX + person_hash, -1, -1, withscores=True)
                answers = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise LeaseUnavailableError(
                f"in-flight leases unavailable ({type(exc).__name__})"
            ) from None
        found: dict[str, float] = {}
        for person_hash, last in zip(person_hashes, answers[1::2], strict=True):
            if last:
                found[person_hash] = max(0.0, (float(last[0][1]) - now_ms) / 1000)
        return found
