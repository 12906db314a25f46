"""Tests for the retry policy: fast retries with a fake sleep, countdowns, exhaustion.

No test waits for real: ``call_with_fast_retries`` gets a recording ``sleep``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cioguard.delivery.ratelimit import RateLimitedError
from cioguard.delivery.retrying import (
    FAST_ATTEMPTS,
    FAST_MAX_WAIT_S,
    call_with_fast_retries,
    countdown,
    exhausted,
)
from cioguard.errors import CredentialsError, PermanentError, RetryableError


class Script:
    """A callable that raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors: Exception, result: int = 200) -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def fake_sleep(sleeps: list[float]) -> Callable[[float], None]:
    return sleeps.append


def server_error(retry_after_s: float | None = None, status: int = 503) -> RetryableError:
    return RetryableError("answered 503", status=status, retry_after_s=retry_after_s)


# -- fast retries -------------------------------------------------------------------------------


def test_success_needs_no_retry(sleeps: list[float], fake_sleep: Callable[[float], None]) -> None:
    fn = Script()
    assert call_with_fast_retries(fn, sleep=fake_sleep) == 200
    assert fn.calls == 1 and sleeps == []


def test_transient_failures_are_retried_with_jittered_short_waits(
    sleeps: list[float], fake_sleep: Callable[[float], None]
) -> None:
    fn = Script(server_error(), RetryableError("timed out"))
    assert call_with_fast_retries(fn, sleep=fake_sleep) == 200
    assert fn.calls == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2


def test_gives_up_after_the_fast_attempts_and_reraises_the_last_error(
    sleeps: list[float], fake_sleep: Callable[[float], None]
) -> None:
    last = server_error(status=502)
    fn = Script(server_error(), server_error(), last, server_error())
    with pytest.raises(RetryableError) as info:
        call_with_fast_retries(fn, sleep=fake_sleep)
    assert info.value is last
    assert fn.calls == FAST_ATTEMPTS
    assert len(sleeps) == FAST_ATTEMPTS - 1
    assert all(0 <= s <= FAST_MAX_WAIT_S for s in sleeps)


def test_short_retry_after_is_slept_exactly(
    sleeps: list[float], fake_sleep: Callable[[float], None]
) -> None:
    fn = Script(RetryableError("429", status=429, retry_after_s=1.0))
    assert call_with_fast_retries(fn, sleep=fake_sleep) == 200
    assert sleeps == [1.0]


def test_long_retry_after_is_not_slept_in_process(
    sleeps: list[float], fake_sleep: Callable[[float], None]
) -> None:
    too_long = RetryableError("429", status=429, retry_after_s=FAST_MAX_WAIT_S + 0.5)
    fn = Script(too_long)
    with pytest.raises(RetryableError) as info:
        call_with_fast_retries(fn, sleep=fake_sleep)
    assert info.value is too_long
    assert fn.calls == 1 and sleeps == []


def test_a_long_rate_limiter_wait_goes_back_to_the_broker(
    sleeps: list[float], fake_sleep: Callable[[float], None]
) -> None:
    fn = Script(RateLimitedError("track", 30.0))
    with pytest.raises(RateLimitedError):
        call_with_fast_retries(fn, sleep=fake_sleep)
    assert fn.calls == 1 and sleeps == []


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("rejected with 400", status=400),
        CredentialsError("refused (401)", status=401),
        ValueError("a bug"),
    ],
    ids=["400", "401", "bug"],
)
def test_permanent_errors_and_bugs_are_never_retried(
    error: Exception, sleeps: list[float], fake_sleep: Callable[[float], None]
) -> None:
    fn = Script(error)
    with pytest.raises(type(error)):
        call_with_fast_retries(fn, sleep=fake_sleep)
    assert fn.calls == 1 and sleeps == []


def test_on_retry_sees_each_retried_error(fake_sleep: Callable[[float], None]) -> None:
    first, second = server_error(), server_error(status=500)
    seen: list[RetryableError] = []
    call_with_fast_retries(Script(first, second), sleep=fake_sleep, on_retry=seen.append)
    assert seen == [first, second]


def test_attempts_is_configurable(fake_sleep: Callable[[float], None]) -> None:
    fn = Script(server_error(), server_error())
    with pytest.raises(RetryableError):
        call_with_fast_retries(fn, sleep=fake_sleep, attempts=2)
    assert fn.calls == 2


# -- countdowns ---------------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=5000),
    retry_after_s=st.none() | st.floats(min_value=0, max_value=1e9),
    cap_s=st.floats(min_value=1, max_value=900),
)
def test_countdown_never_exceeds_the_cap(
    attempt: int, retry_after_s: float | None, cap_s: float
) -> None:
    delay = countdown(attempt, retry_after_s, cap_s=cap_s)
    assert 0 < delay <= cap_s


def test_countdown_grows_exponentially_with_equal_jitter() -> None:
    low = [countdown(a, None, cap_s=300, uniform=lambda lo, hi: lo) for a in range(1, 6)]
    high = [countdown(a, None, cap_s=300, uniform=lambda lo, hi: hi) for a in range(1, 6)]
    assert low == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert high == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_countdown_jitter_spreads_retries() -> None:
    rng = random.Random(7)
    delays = {countdown(4, None, cap_s=300, uniform=rng.uniform) for _ in range(50)}
    assert len(delays) == 50
    assert all(8.0 <= d <= 16.0 for d in delays)


def test_countdown_honours_a_longer_retry_after() -> None:
    assert countdown(1, 45.0, cap_s=300, uniform=lambda lo, hi: lo) == 45.0


def test_jobs_sent_back_by_one_pause_return_spread_out() -> None:
    rng = random.Random(3)
    delays = [countdown(1, 30.0, cap_s=300, uniform=rng.uniform) for _ in range(50)]
    assert all(30.0 <= d <= 31.0 for d in delays)
    assert len(set(delays)) == 50


def test_countdown_keeps_the_backoff_when_retry_after_is_shorter() -> None:
    assert countdown(5, 1.0, cap_s=300, uniform=lambda lo, hi: lo) == 16.0


def test_countdown_caps_a_retry_after_past_the_cap() -> None:
    assert countdown(1, 3600.0, cap_s=300) == 300


# -- exhaustion ---------------------------------------------------------------------------------


def test_exhausted_by_attempts() -> None:
    created = 1_000_000.0
    now = created + 10
    assert not exhausted(11, created, max_attempts=12, max_age_s=3600, now_s=now)
    assert exhausted(12, created, max_attempts=12, max_age_s=3600, now_s=now)


def test_exhausted_by_age() -> None:
    created = 1_000_000.0
    assert not exhausted(1, created, max_attempts=12, max_age_s=3600, now_s=created + 3599)
    assert exhausted(1, created, max_attempts=12, max_age_s=3600, now_s=created + 3600)


def test_exhausted_defaults_to_the_current_time() -> None:
    assert exhausted(1, 0.0, max_attempts=12, max_age_s=3600)
