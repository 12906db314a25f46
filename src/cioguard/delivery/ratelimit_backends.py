"""Where token buckets live: Redis for the fleet, memory for unit tests.

Both meet :class:`cioguard.delivery.ratelimit.RateLimitBackend` and run the same contract tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from functools import cache
from importlib.resources import files

import redis

from cioguard.delivery.ratelimit import (
    DEFAULT_PREFIX,
    BucketSpec,
    BucketState,
    Decision,
    RateLimiter,
    RateLimiterUnavailableError,
    check_pause,
    check_take,
    take_tokens,
)


@cache
def _lua(filename: str) -> str:
    return files(__package__ or "cioguard").joinpath(filename).read_text(encoding="utf-8")


class MemoryBackend:
    """Buckets in this process only, thread-safe, on an injectable monotonic clock.

    For unit tests (pass a fake ``clock``) and single-process tools; it limits nothing across
    processes.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, BucketState] = {}
        self._pause_until: dict[str, float] = {}

    def take(self, spec: BucketSpec, cost: float = 1.0, *, max_reserve_s: float) -> Decision:
        """Honour an active pause, else take, reserve or refuse ``cost`` tokens."""
        check_take(spec, cost, max_reserve_s)
        with self._lock:
            now_s = self._clock()
            pause_s = self._pause_until.get(spec.name, now_s) - now_s
            if pause_s > 0:
                return Decision(granted=False, wait_s=pause_s)
            state = self._buckets.get(spec.name)
            self._buckets[spec.name], decision = take_tokens(
                spec, state, now_s, cost, max_reserve_s
            )
            return decision

    def pause(self, spec_name: str, seconds: float) -> float:
        """Pause ``spec_name`` for ``seconds``; extend, never shorten. Returns the remaining."""
        check_pause(seconds)
        with self._lock:
            now_s = self._clock()
            until_s = max(self._pause_until.get(spec_name, now_s), now_s + seconds)
            self._pause_until[spec_name] = until_s
            return until_s - now_s


class RedisBackend:
    """Buckets in Redis, shared by every process that uses the same server and ``prefix``.

    Each operation is one Lua script call, atomic on the server and timed by the server's clock,
    so hosts with skewed clocks still share one exact rate. Keys: ``{prefix}{name}:bucket`` (a
    hash that expires once it would be full again) and ``{prefix}{name}:pause``.

    Note:
        The two keys of a bucket are not hash-tagged, so on Redis Cluster they may land in
        different slots; this backend targets a single Redis (or a primary with replicas).
    """

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._take = client.register_script(_lua("ratelimit_take.lua"))
        self._pause = client.register_script(_lua("ratelimit_pause.lua"))

    def keys(self, spec_name: str) -> tuple[str, str]:
        """The bucket key and the pause key of ``spec_name``."""
        base = f"{self.prefix}{spec_name}"
        return f"{base}:bucket", f"{base}:pause"

    def take(self, spec: BucketSpec, cost: float = 1.0, *, max_reserve_s: float) -> Decision:
        """Honour an active pause, else take, reserve or refuse ``cost`` tokens: one script call."""
        check_take(spec, cost, max_reserve_s)
        args = [repr(float(x)) for x in (spec.rate_per_s, spec.burst, cost, max_reserve_s)]
        try:
            granted, wait_us = self._take(keys=self.keys(spec.name), args=args)
        except redis.RedisError as exc:
            raise RateLimiterUnavailableError("rate limiter store unavailable") from exc
        return Decision(granted=int(granted) == 1, wait_s=int(wait_us) / 1_000_000)

    def pause(self, spec_name: str, seconds: float) -> float:
        """Pause ``spec_name`` for ``seconds``; extend, never shorten. Returns the remaining."""
        check_pause(seconds)
        _bucket_key, pause_key = self.keys(spec_name)
        try:
            left_ms = self._pause(keys=[pause_key], args=[math.ceil(seconds * 1000)])
        except redis.RedisError as exc:
            raise RateLimiterUnavailableError("rate limiter store unavailable") from exc
        return int(left_ms) / 1000


def redis_limiter(
    redis_client: redis.Redis,
    name: str,
    rate_per_s: float,
    burst: float,
    prefix: str = DEFAULT_PREFIX,
    *,
    max_sleep_s: float = 2.0,
) -> RateLimiter:
    """Build a limiter for bucket ``name`` on Redis (keys ``{prefix}{name}:bucket``/``:pause``).

    Build one per worker process and bucket (``track``, ``app``), not one per task.
    """
    backend = RedisBackend(redis_client, prefix=prefix)
    spec = BucketSpec(name=name, rate_per_s=rate_per_s, burst=burst)
    return RateLimiter(backend, spec, max_sleep_s=max_sleep_s)
