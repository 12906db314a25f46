"""The one retry policy: fast in-process retries first, then Celery countdowns, then give up.

* In the task: tenacity retries a :class:`RetryableError` up to ``FAST_ATTEMPTS`` times with
  exponential backoff and full jitter, or the server's Retry-After when it is short. A long
  Retry-After ends the fast phase at once: waiting it out would hold a worker slot.
* Then the Celery task retries itself with :func:`countdown` (never past ``cap_s``, which stays
  well inside the Redis visibility timeout, see celery-pitfalls.md).
* :func:`exhausted` caps by attempts and by age; permanent errors are never retried.

Backoff math is pure functions of the attempt number, so it is testable without sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from cioguard.errors import RetryableError

T = TypeVar("T")
FAST_ATTEMPTS = 3
FAST_MAX_WAIT_S = 2.0
_MAX_EXPONENT = 32  # 2**32 s is past any cap; a larger exponent would overflow a float
_jitter_wait = wait_random_exponential(multiplier=0.1, max=FAST_MAX_WAIT_S)


def _short_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, RetryableError):
        return False
    return exc.retry_after_s is None or exc.retry_after_s <= FAST_MAX_WAIT_S


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetryableError) and exc.retry_after_s is not None:
        return exc.retry_after_s
    return float(_jitter_wait(state))


def call_with_fast_retries(
    fn: Callable[[], T],
    *,
    on_retry: Callable[[RetryableError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = FAST_ATTEMPTS,
) -> T:
    """Run ``fn``; retry short-lived transient failures in process; re-raise anything else.

    Retried: a :class:`RetryableError` (429, 5xx, timeout, connection error) whose Retry-After
    is absent or at most ``FAST_MAX_WAIT_S``, up to ``attempts`` calls in all, waiting the
    Retry-After or a random time below 0.1, 0.2, 0.4 ... s (full jitter, at most 2 s). Everything
    else is re-raised at once: permanent errors, and a long Retry-After (the task reschedules
    itself with :func:`countdown` rather than hold a worker slot). ``sleep`` is injectable.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(exc, RetryableError):
            on_retry(exc)

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=_wait,
        retry=retry_if_exception(_short_retryable),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )
    return retrying(fn)


def countdown(
    attempt: int,
    retry_after_s: float | None,
    *,
    cap_s: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds before the next task attempt: exponential (2, 4, 8 ... s) with jitter, capped.

    The delay is drawn from the upper half of the exponential step ("equal jitter"), so retries
    of jobs that failed together spread out without ever coming back almost at once.
    A Retry-After is a floor: the delay is at least Retry-After plus a jitter of up to half a
    step, so the jobs one fleet-wide pause sent back do not all return at the same instant.
    Everything is capped by ``cap_s``: a countdown longer than the Redis visibility timeout would
    be redelivered while it waits (celery-pitfalls.md).
    """
    base = min(cap_s, 2.0 ** min(max(1, attempt), _MAX_EXPONENT))
    delay = base / 2 + uniform(0, base / 2)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s + uniform(0, base / 2))
    return min(cap_s, delay)


def exhausted(
    attempt: int,
    created_at: float,
    *,
    max_attempts: int,
    max_age_s: float,
    now_s: float | None = None,
) -> bool:
    """True when a job has used its attempts or is older than its age limit.

    ``attempt`` is the 1-based number of the attempt that just failed; ``created_at`` and
    ``now_s`` are Unix times (``now_s`` defaults to the current time).
    """
    now_s = time.time() if now_s is None else now_s
    return attempt >= max_attempts or (now_s - created_at) >= max_age_s
