"""The async API under a real event loop, the broker up and down: same results, the loop free.

A ticker coroutine sleeps 1 ms at a time and records the longest gap between its wake-ups while
the calls run; a call that blocked the loop (as the sync functions do, shown first so the ticker
is known to notice) would show as a gap as long as the call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from typing import Any, TypeVar

import pytest
import redis

import cioguard
from cioguard.errors import BrokerUnavailableError
from cioguard.producer import api
from cioguard.producer.api import Producer
from cioguard.sandbox.devstack import free_port
from tests.conftest import settings_from
from tests.producer.test_api import assert_sealed, body_of, queued

T = TypeVar("T")
STALL_BOUND_S = 0.25
"""Far above a tick on a loaded machine, far below one blocked publish (about 1.5 s when down)."""


@pytest.fixture
def installed(producer: Producer) -> Iterator[Producer]:
    api.use_producer(producer)
    yield producer
    api._installed.clear()
    api.get_producer.cache_clear()


@pytest.fixture
def down(env: dict[str, str]) -> Iterator[Producer]:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    producer = api.use_producer(Producer(settings_from({**env, "CIOGUARD_BROKER_URL": closed})))
    yield producer
    api._installed.clear()
    api.get_producer.cache_clear()
    producer.celery.close()
    if producer._audit is not None:
        producer._audit.dispose()


def with_ticker(work: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """Run ``work`` on a fresh event loop beside a 1-ms ticker; return its result and the gap."""

    async def main() -> tuple[T, float]:
        longest = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal longest
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.monotonic()
                longest = max(longest, now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        try:
            result = await work()
        finally:
            stop.set()
            await tick
        return result, longest

    return asyncio.run(main())


def test_the_ticker_sees_a_blocking_call(down: Producer) -> None:
    async def blocking() -> None:
        with pytest.raises(BrokerUnavailableError):
            cioguard.track("user-1", "signed_up")  # the sync API, on the loop

    _, gap = with_ticker(blocking)
    assert gap > STALL_BOUND_S


def test_async_calls_enqueue_like_the_sync_ones_without_stalling_the_loop(
    installed: Producer, env: dict[str, str], redis_url: str
) -> None:
    async def calls() -> list[Any]:
        jobs = await asyncio.gather(
            cioguard.aidentify(42, {"plan": "pro", "since": date(2024, 1, 1)}),
            *(cioguard.atrack(42, "signed_up", {"n": i}) for i in range(3)),
        )
        request = await cioguard.adelete_person("user-gone")
        status = await cioguard.adeletion_status(request)
        return [jobs, request, status]

    (jobs, request, status), gap = with_ticker(calls)
    assert gap < STALL_BOUND_S
    assert status.request_id == request and status.state == "received"
    broker = redis.Redis.from_url(redis_url)
    messages = queued(broker)
    broker.close()
    tasks = sorted(m["headers"]["task"] for m in messages)
    assert tasks == ["cioguard.deliver"] * 4 + ["cioguard.erase"]
    assert set(jobs) <= {m["headers"]["id"] for m in messages}
    identify = next(m for m in messages if m["headers"]["id"] == jobs[0])
    token = assert_sealed(identify, env, jobs[0], "cioguard.deliver")
    job = installed.envelope.open(token)
    assert job["person_id"] == "42"  # the int id, as its decimal string
    assert job["attributes"]["since"] == 1_704_067_200
    assert all(len(body_of(m)[0]) == 1 for m in messages)


def test_async_calls_with_the_broker_down_raise_without_stalling_the_loop(
    down: Producer,
) -> None:
    async def calls() -> list[BaseException | str]:
        return await asyncio.gather(
            *(cioguard.atrack(f"user-{i}", "signed_up") for i in range(4)),
            cioguard.aidentify("user-9", {"plan": "pro"}),
            return_exceptions=True,
        )

    results, gap = with_ticker(calls)
    assert gap < STALL_BOUND_S
    assert all(isinstance(r, BrokerUnavailableError) for r in results)
    assert all("not enqueued" in str(r) and "user-" not in str(r) for r in results)


def test_async_calls_validate_like_the_sync_ones(installed: Producer, redis_url: str) -> None:
    async def bad() -> list[BaseException | str]:
        return await asyncio.gather(
            cioguard.aidentify(None, {}),  # type: ignore[arg-type]
            cioguard.atrack("user-1", ""),
            cioguard.aidentify("user-1", {"x": object()}),
            cioguard.adeletion_status("no-such-request"),
            return_exceptions=True,
        )

    results, _ = with_ticker(bad)
    assert [type(r).__name__ for r in results] == [
        "InvalidTypeError", "InvalidInputError", "InvalidTypeError", "LookupError",
    ]  # fmt: skip
    assert str(results[0]) == "person_id must be a str or an int, not NoneType"
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen("cioguard") == 0
    broker.close()
