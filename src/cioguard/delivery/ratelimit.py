"""A token bucket shared by every worker process on every host.

Celery's ``Task.rate_limit`` is per worker node, so N nodes would send N times the rate. Here the
bucket lives in a backend (Redis in production, memory in unit tests) and the algorithm talks to
it through one atomic operation, :meth:`RateLimitBackend.take`. :func:`take_tokens` is the
algorithm itself, a pure function: the memory backend applies it, ``ratelimit_take.lua`` is the
same algorithm in Lua, and both backends pass the same contract tests.

Note:
    A take that finds too few tokens may *reserve* them: the bucket goes negative and the caller
    sleeps the deficit wait, then proceeds without asking again. This keeps the fleet's rate
    exact and serves waiting processes first come, first served instead of letting them race
    each poll. The cost is that a reserved token is spent even if the caller dies while sleeping,
    and a worker slot is held for the wait; ``max_reserve_s`` bounds both, and a longer wait is
    refused (nothing reserved) so the task can reschedule itself instead.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cioguard.errors import RetryableError

if TYPE_CHECKING:
    pass

DEFAULT_PREFIX = "cioguard:rl:"
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _check_positive(field: str, value: float, minimum: float, *, inclusive: bool) -> None:
    ok_type = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if value < minimum or (value == minimum and not inclusive):
        op = ">=" if inclusive else ">"
        raise ValueError(f"{field} must be {op} {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One named token bucket: refills ``rate_per_s`` tokens a second, holds at most ``burst``.

    Buckets with different names are independent (different Redis keys).
    """

    name: str
    rate_per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"name must be 1-64 of [A-Za-z0-9_.-], got {self.name!r}")
        _check_positive("rate_per_s", self.rate_per_s, 0.0, inclusive=False)
        _check_positive("burst", self.burst, 1.0, inclusive=True)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one take.

    ``granted`` with ``wait_s == 0``: go now. ``granted`` with ``wait_s > 0``: the tokens are
    reserved, sleep ``wait_s`` then go. Not ``granted``: nothing was taken; come back after
    ``wait_s`` (the remaining fleet-wide pause, or the deficit wait).
    """

    granted: bool
    wait_s: float


@dataclass(frozen=True, slots=True)
class BucketState:
    """Stored bucket state: ``tokens`` (negative while reserved) as of ``updated_s``."""

    tokens: float
    updated_s: float


def check_take(spec: BucketSpec, cost: float, max_reserve_s: float) -> None:
    """Refuse arguments no bucket can honour, naming the bad one.

    A cost above ``burst`` is refused: it could only ever be served by a reservation.
    """
    _check_positive("cost", cost, 0.0, inclusive=False)
    if cost > spec.burst:
        raise ValueError(f"cost must be <= burst ({spec.burst}), got {cost!r}")
    _check_positive("max_reserve_s", max_reserve_s, 0.0, inclusive=True)


def check_pause(seconds: float) -> None:
    """Refuse a negative or non-finite pause; 0 is allowed and changes nothing."""
    _check_positive("seconds", seconds, 0.0, inclusive=True)


def take_tokens(
    spec: BucketSpec, state: BucketState | None, now_s: float, cost: float, max_reserve_s: float
) -> tuple[BucketState, Decision]:
    """The token bucket: refill up to ``burst``, then take, reserve or refuse ``cost`` tokens.

    A missing ``state`` reads as a full bucket. Pure: the caller stores the new state.
    ``ratelimit_take.lua`` is this function in Lua; keep the two in step.
    """
    if state is None:
        state = BucketState(tokens=spec.burst, updated_s=now_s)
    elapsed_s = max(0.0, now_s - state.updated_s)
    tokens = min(spec.burst, state.tokens + elapsed_s * spec.rate_per_s)
    if tokens >= cost:
        return BucketState(tokens - cost, now_s), Decision(granted=True, wait_s=0.0)
    wait_s = (cost - tokens) / spec.rate_per_s
    if wait_s <= max_reserve_s:
        return BucketState(tokens - cost, now_s), Decision(granted=True, wait_s=wait_s)
    return BucketState(tokens, now_s), Decision(granted=False, wait_s=wait_s)


class RateLimitBackend(Protocol):
    """Where buckets live. Both operations are atomic across every user of the backend."""

    def take(self, spec: BucketSpec, cost: float = 1.0, *, max_reserve_s: float) -> Decision:
        """Honour an active pause, else apply :func:`take_tokens` to the stored bucket."""
        ...

    def pause(self, spec_name: str, seconds: float) -> float:
        """Pause the named bucket for ``seconds``; extend, never shorten. Returns the remaining."""
        ...


class RateLimitedError(RetryableError):
    """No token within ``max_sleep_s``: reschedule the task after ``retry_after_s`` seconds."""

    retry_after_s: float

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(
            f"rate limit {name!r}: no token for {retry_after_s:.3f} s",
            retry_after_s=retry_after_s,
        )
        self.name = name

    def __reduce__(self) -> tuple[type[RateLimitedError], tuple[str, float]]:
        return (type(self), (self.name, self.retry_after_s))


class RateLimiterUnavailableError(RetryableError):
    """The rate-limit store did not answer; nothing was sent, try again later."""


class RateLimiter:
    """Blocks briefly for a token from a shared bucket, or says when to come back.

    Warning:
        ``acquire`` may sleep up to ``max_sleep_s`` in total while holding a worker slot; keep
        it short (seconds) and let longer waits go back to the broker as a countdown.
    """

    def __init__(
        self,
        backend: RateLimitBackend,
        spec: BucketSpec,
        *,
        max_sleep_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_positive("max_sleep_s", max_sleep_s, 0.0, inclusive=True)
        self.backend = backend
        self.spec = spec
        self.max_sleep_s = max_sleep_s
        self._sleep = sleep

    def acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, sleeping if the wait fits in ``max_sleep_s``.

        Returns the seconds slept. Raises :class:`RateLimitedError` (nothing taken) when the
        bucket or a fleet-wide pause needs a longer wait than what is left of ``max_sleep_s``.
        """
        waited_s = 0.0
        while True:
            budget_s = self.max_sleep_s - waited_s
            decision = self.backend.take(self.spec, cost, max_reserve_s=budget_s)
            if decision.granted:
                return waited_s + self._sleep_for(decision.wait_s)
            if decision.wait_s > budget_s:
                raise RateLimitedError(self.spec.name, decision.wait_s)
            waited_s += self._sleep_for(decision.wait_s)

    def pause_fleet(self, seconds: float) -> float:
        """Make every process wait ``seconds`` (a 429's Retry-After). Returns the remaining."""
        return self.backend.pause(self.spec.name, seconds)

    def _sleep_for(self, seconds: float) -> float:
        if seconds > 0:
            self._sleep(seconds)
        return seconds
