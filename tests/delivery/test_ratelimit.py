"""Tests for the token bucket: one contract for both backends, the limiter, fleet-wide behaviour.

The memory backend runs on a fake clock. The Redis backend runs on the real server clock, so its
waits shrink a little between calls: wait checks allow ``drift_s`` downwards, never upwards.
"""

from __future__ import annotations

import bisect
import math
import multiprocessing
import pickle
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from cioguard.delivery.ratelimit import (
    BucketSpec,
    Decision,
    RateLimitBackend,
    RateLimitedError,
    RateLimiter,
    RateLimiterUnavailableError,
)
from cioguard.delivery.ratelimit_backends import MemoryBackend, RedisBackend, redis_limiter
from cioguard.errors import RetryableError

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
NOW = Decision(granted=True, wait_s=0.0)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class Harness:
    """A backend plus how to let time pass for it, and how far waits may drift between calls."""

    backend: RateLimitBackend
    advance: Callable[[float], None]
    drift_s: float

    def assert_wait(self, actual_s: float, expected_s: float) -> None:
        assert expected_s - self.drift_s <= actual_s <= expected_s + 1e-6


def make_spec(name: str = "track", rate_per_s: float = 1.0, burst: float = 5.0) -> BucketSpec:
    return BucketSpec(name=name, rate_per_s=rate_per_s, burst=burst)


def drain(backend: RateLimitBackend, spec: BucketSpec) -> None:
    for _ in range(int(spec.burst)):
        assert backend.take(spec, max_reserve_s=0.0) == NOW


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis on {REDIS_HOST}:{REDIS_PORT}")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        clock = FakeClock()
        return Harness(MemoryBackend(clock=clock), clock.advance, drift_s=1e-9)
    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("redis_prefix")
    return Harness(RedisBackend(client, prefix=prefix), time.sleep, drift_s=0.25)


# --- contract: every backend ----------------------------------------------------------------


def test_first_burst_is_granted_immediately(harness: Harness) -> None:
    spec = make_spec()
    drain(harness.backend, spec)
    refused = harness.backend.take(spec, max_reserve_s=0.0)
    assert not refused.granted
    harness.assert_wait(refused.wait_s, 1.0)


def test_deficit_is_reserved_with_its_wait(harness: Harness) -> None:
    spec = make_spec()
    drain(harness.backend, spec)
    first = harness.backend.take(spec, max_reserve_s=10.0)
    second = harness.backend.take(spec, max_reserve_s=10.0)
    assert first.granted and second.granted
    harness.assert_wait(first.wait_s, 1.0)
    harness.assert_wait(second.wait_s, 2.0)


def test_wait_over_max_reserve_is_refused_and_reserves_nothing(harness: Harness) -> None:
    spec = make_spec()
    drain(harness.backend, spec)
    refused = harness.backend.take(spec, max_reserve_s=0.5)
    assert not refused.granted
    harness.assert_wait(refused.wait_s, 1.0)
    reserved = harness.backend.take(spec, max_reserve_s=10.0)
    assert reserved.granted
    harness.assert_wait(reserved.wait_s, 1.0)


def test_tokens_refill_over_time_up_to_burst(harness: Harness) -> None:
    spec = make_spec(rate_per_s=10.0, burst=2.0)
    drain(harness.backend, spec)
    harness.advance(0.5)
    drain(harness.backend, spec)
    assert not harness.backend.take(spec, max_reserve_s=0.0).granted


def test_partial_refill_shortens_the_wait(harness: Harness) -> None:
    spec = make_spec(rate_per_s=2.0, burst=1.0)
    drain(harness.backend, spec)
    harness.advance(0.2)
    refused = harness.backend.take(spec, max_reserve_s=0.0)
    assert not refused.granted
    harness.assert_wait(refused.wait_s, 0.3)


def test_cost_above_one(harness: Harness) -> None:
    spec = make_spec()
    assert harness.backend.take(spec, 3.0, max_reserve_s=0.0) == NOW
    reserved = harness.backend.take(spec, 3.0, max_reserve_s=10.0)
    assert reserved.granted
    harness.assert_wait(reserved.wait_s, 1.0)
    refused = harness.backend.take(spec, 0.5, max_reserve_s=0.0)
    assert not refused.granted
    harness.assert_wait(refused.wait_s, 1.5)


@pytest.mark.parametrize(
    ("cost", "max_reserve_s", "field"),
    [
        (0.0, 1.0, "cost"),
        (-1.0, 1.0, "cost"),
        (math.nan, 1.0, "cost"),
        (6.0, 1.0, "cost"),
        (1.0, -0.1, "max_reserve_s"),
        (1.0, math.inf, "max_reserve_s"),
    ],
)
def test_bad_take_arguments_name_the_field(
    harness: Harness, cost: float, max_reserve_s: float, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        harness.backend.take(make_spec(), cost, max_reserve_s=max_reserve_s)


def test_pause_blocks_and_is_extended_never_shortened(harness: Harness) -> None:
    spec = make_spec()
    harness.assert_wait(harness.backend.pause(spec.name, 5.0), 5.0)
    blocked = harness.backend.take(spec, max_reserve_s=100.0)
    assert not blocked.granted
    harness.assert_wait(blocked.wait_s, 5.0)
    harness.assert_wait(harness.backend.pause(spec.name, 1.0), 5.0)
    harness.assert_wait(harness.backend.take(spec, max_reserve_s=100.0).wait_s, 5.0)
    harness.assert_wait(harness.backend.pause(spec.name, 8.0), 8.0)
    harness.assert_wait(harness.backend.take(spec, max_reserve_s=100.0).wait_s, 8.0)


def test_pause_ends_and_took_no_tokens(harness: Harness) -> None:
    spec = make_spec()
    harness.backend.pause(spec.name, 0.2)
    assert not harness.backend.take(spec, max_reserve_s=0.0).granted
    harness.advance(0.3)
    drain(harness.backend, spec)


def test_zero_pause_changes_nothing_and_negative_is_refused(harness: Harness) -> None:
    spec = make_spec()
    assert harness.backend.pause(spec.name, 0.0) == 0.0
    assert harness.backend.take(spec, max_reserve_s=0.0) == NOW
    with pytest.raises(ValueError, match="seconds"):
        harness.backend.pause(spec.name, -1.0)


def test_buckets_are_independent(harness: Harness) -> None:
    track, app = make_spec("track"), make_spec("app")
    drain(harness.backend, track)
    harness.backend.pause("other", 60.0)
    drain(harness.backend, app)
    assert not harness.backend.take(track, max_reserve_s=0.0).granted


# --- spec validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": 7}, "name"),
        ({"rate_per_s": 0.0}, "rate_per_s"),
        ({"rate_per_s": -1.0}, "rate_per_s"),
        ({"rate_per_s": math.nan}, "rate_per_s"),
        ({"rate_per_s": math.inf}, "rate_per_s"),
        ({"rate_per_s": "10"}, "rate_per_s"),
        ({"rate_per_s": True}, "rate_per_s"),
        ({"burst": 0.5}, "burst"),
        ({"burst": math.inf}, "burst"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"name": "track", "rate_per_s": 1.0, "burst": 5.0, **kwargs}
    with pytest.raises(ValueError, match=field):
        BucketSpec(**values)


def test_spec_is_frozen() -> None:
    spec = make_spec()
    with pytest.raises(FrozenInstanceError):
        spec.burst = 10.0  # type: ignore[misc]


# --- the limiter (memory backend, fake clock, fake sleep) -----------------------------------


@dataclass
class LimiterRig:
    limiter: RateLimiter
    clock: FakeClock
    slept: list[float]


def make_rig(spec: BucketSpec, max_sleep_s: float = 2.0) -> LimiterRig:
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    limiter = RateLimiter(MemoryBackend(clock=clock), spec, max_sleep_s=max_sleep_s, sleep=sleep)
    return LimiterRig(limiter, clock, slept)


def test_acquire_is_immediate_while_tokens_last() -> None:
    rig = make_rig(make_spec(burst=3.0))
    assert [rig.limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rig.slept == []


def test_acquire_sleeps_a_reserved_deficit() -> None:
    rig = make_rig(make_spec(rate_per_s=2.0, burst=1.0))
    rig.limiter.acquire()
    assert rig.limiter.acquire() == pytest.approx(0.5)
    assert rig.slept == [pytest.approx(0.5)]


def test_acquire_raises_retryable_when_the_wait_is_too_long() -> None:
    rig = make_rig(make_spec(rate_per_s=1.0, burst=1.0), max_sleep_s=0.5)
    rig.limiter.acquire()
    with pytest.raises(RateLimitedError) as caught:
        rig.limiter.acquire()
    assert isinstance(caught.value, RetryableError)
    assert caught.value.retry_after_s == pytest.approx(1.0)
    assert rig.slept == []
    rig.clock.advance(1.0)
    assert rig.limiter.acquire() == 0.0


def test_acquire_sleeps_through_a_short_fleet_pause() -> None:
    rig = make_rig(make_spec())
    assert rig.limiter.pause_fleet(1.5) == pytest.approx(1.5)
    assert rig.limiter.acquire() == pytest.approx(1.5)


def test_acquire_raises_on_a_long_fleet_pause() -> None:
    rig = make_rig(make_spec())
    rig.limiter.pause_fleet(30.0)
    with pytest.raises(RateLimitedError) as caught:
        rig.limiter.acquire()
    assert caught.value.retry_after_s == pytest.approx(30.0)
    assert rig.slept == []


def test_max_sleep_is_a_total_budget_not_a_per_step_one() -> None:
    rig = make_rig(make_spec(rate_per_s=0.25, burst=1.0), max_sleep_s=2.0)
    rig.limiter.acquire()
    rig.limiter.pause_fleet(1.5)
    with pytest.raises(RateLimitedError) as caught:
        rig.limiter.acquire()
    assert rig.slept == [pytest.approx(1.5)]
    assert caught.value.retry_after_s == pytest.approx((1.0 - 1.5 * 0.25) / 0.25)


def test_rate_limited_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(RateLimitedError("track", 2.5)))
    assert (error.name, error.retry_after_s, str(error)) == (
        "track",
        2.5,
        "rate limit 'track': no token for 2.500 s",
    )


# --- Redis specifics ------------------------------------------------------------------------


def test_redis_key_layout_and_idle_ttl(redis_client: redis.Redis, redis_prefix: str) -> None:
    limiter = redis_limiter(redis_client, "app", rate_per_s=1.0, burst=5.0, prefix=redis_prefix)
    limiter.acquire()
    limiter.pause_fleet(0.5)
    assert 60_000 < redis_client.pttl(f"{redis_prefix}app:bucket") <= 61_000
    assert 0 < redis_client.pttl(f"{redis_prefix}app:pause") <= 500


def test_redis_errors_become_retryable(redis_prefix: str) -> None:
    dead = redis.Redis(host=REDIS_HOST, port=1, socket_connect_timeout=0.5)
    backend = RedisBackend(dead, prefix=redis_prefix)
    with pytest.raises(RateLimiterUnavailableError) as caught:
        backend.take(make_spec(), max_reserve_s=0.0)
    assert isinstance(caught.value, RetryableError)
    assert isinstance(caught.value.__cause__, redis.RedisError)


CONCURRENT_RATE_PER_S = 50.0
CONCURRENT_BURST = 5.0
CONCURRENT_RUN_S = 3.0


def _acquire_for_a_while(prefix: str, start: Any, results: Any) -> None:
    """Child process: acquire in a loop for CONCURRENT_RUN_S, report every grant time."""
    try:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        limiter = redis_limiter(
            client, "track", rate_per_s=CONCURRENT_RATE_PER_S, burst=CONCURRENT_BURST, prefix=prefix
        )
        start.wait()
        stop_at = time.time() + CONCURRENT_RUN_S
        grants: list[float] = []
        while time.time() < stop_at:
            limiter.acquire()
            grants.append(time.time())
        client.close()
        results.put(grants)
    except BaseException:
        results.put(traceback.format_exc())
        raise


def run_processes(prefix: str, count: int) -> list[float]:
    """Run ``count`` acquiring processes at once; return every grant time, sorted.

    Forked, not spawned: children reuse the modules already imported instead of importing them
    again, so they start fast and the same code runs in every process.
    """
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(count, timeout=30), ctx.Queue()
    procs = [
        ctx.Process(target=_acquire_for_a_while, args=(prefix, start, results))
        for _ in range(count)
    ]
    for proc in procs:
        proc.start()
    try:
        reports = [results.get(timeout=45) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    failures = [report for report in reports if isinstance(report, str)]
    assert not failures, failures[0]
    return sorted(t for report in reports for t in report)


def test_processes_share_one_rate(redis_client: redis.Redis, redis_prefix: str) -> None:
    grants = run_processes(redis_prefix, count=4)
    ceiling = CONCURRENT_RATE_PER_S * 1.0 + CONCURRENT_BURST + 2
    busiest = max(bisect.bisect_left(grants, t + 1.0) - i for i, t in enumerate(grants))
    assert busiest <= ceiling
    assert len(grants) >= 0.8 * CONCURRENT_RATE_PER_S * CONCURRENT_RUN_S


# --- property: never more than burst + rate * t ---------------------------------------------


steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=3.0),  # advance the clock, seconds
        st.floats(min_value=0.01, max_value=1.0),  # cost, as a fraction of burst
        st.floats(min_value=0.0, max_value=3.0),  # max_reserve_s
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    rate_per_s=st.floats(min_value=0.1, max_value=100.0),
    burst=st.floats(min_value=1.0, max_value=50.0),
    steps=steps,
)
def test_grants_never_exceed_burst_plus_rate_times_t(
    rate_per_s: float, burst: float, steps: list[tuple[float, float, float]]
) -> None:
    clock = FakeClock(start_s=0.0)
    backend = MemoryBackend(clock=clock)
    spec = make_spec(rate_per_s=rate_per_s, burst=burst)
    used: list[tuple[float, float]] = []  # (time the tokens are spent, cost)
    for advance_s, cost_fraction, max_reserve_s in steps:
        clock.advance(advance_s)
        cost = cost_fraction * burst
        decision = backend.take(spec, cost, max_reserve_s=max_reserve_s)
        assert decision.granted == (decision.wait_s <= max_reserve_s)
        if decision.granted:
            used.append((clock() + decision.wait_s, cost))
    used.sort()
    spent = 0.0
    for at_s, cost in used:
        spent += cost
        allowed = burst + rate_per_s * at_s
        assert spent <= allowed + 1e-9 * allowed
