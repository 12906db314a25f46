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
delete by at most that. A batch takes and gives back its leases with one Lua script call each
(``lease_take.lua``, ``lease_release.lua``): the same commands as a pipeline of them, but one
command to encode and one reply to parse instead of two or three per person, which was a
quarter of a batch's CPU in the worker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from importlib.resources import files

import redis

from cioguard.errors import RetryableError

PREFIX = "cioguard:lease:"
_TAKE = files(__package__ or "cioguard").joinpath("lease_take.lua").read_text()
_RELEASE = files(__package__ or "cioguard").joinpath("lease_release.lua").read_text()


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
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)

    def take(self, held: Sequence[tuple[str, str]]) -> None:
        """Lease ``(person_hash, job_id)`` pairs, in one script call."""
        if not held:
            return
        until_ms = int((time.time() + self.ttl_s) * 1000)
        keys = [PREFIX + person_hash for person_hash, _ in held]
        args: list[int | str] = [until_ms, int(self.ttl_s * 1000) + 1000]
        args += [job_id for _, job_id in held]
        try:
            self._take(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise LeaseUnavailableError(
                f"in-flight leases unavailable ({type(exc).__name__})"
            ) from None

    def release(self, held: Sequence[tuple[str, str]]) -> None:
        """Give leases back (best effort: an unreleased lease expires after ``ttl_s``)."""
        if not held:
            return
        keys = [PREFIX + person_hash for person_hash, _ in held]
        with contextlib.suppress(redis.RedisError, OSError):
            self._release(keys=keys, args=[job_id for _, job_id in held])

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
