"""In-flight leases on people, against a private Redis: a batch's leases in one script call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cioguard.erasure.leases import PREFIX, Leases, LeaseUnavailableError

TTL_S = 120.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _people(n: int) -> list[tuple[str, str]]:
    return [(f"{i:064x}", f"job-{i}") for i in range(n)]


def test_a_batch_of_leases_is_taken_and_seen_by_a_delete(client: redis.Redis) -> None:
    leases = Leases(client, ttl_s=TTL_S)
    held = _people(100)
    leases.take(held)
    busy = leases.busy([h for h, _ in held] + ["f" * 64])
    assert set(busy) == {h for h, _ in held}
    assert all(TTL_S - 5 < left <= TTL_S for left in busy.values())
    key = PREFIX + held[0][0]
    assert client.zrange(key, 0, -1) == [b"job-0"]
    assert TTL_S * 1000 < client.pttl(key) <= TTL_S * 1000 + 1000  # the set outlives its lease


def test_release_gives_back_only_the_jobs_that_held_the_person(client: redis.Redis) -> None:
    leases = Leases(client, ttl_s=TTL_S)
    person = "a" * 64
    leases.take([(person, "job-1"), (person, "job-2"), ("b" * 64, "job-3")])
    leases.release([(person, "job-1"), ("b" * 64, "job-3")])
    assert set(leases.busy([person, "b" * 64])) == {person}  # job-2 still holds it
    leases.release([(person, "job-2")])
    assert leases.busy([person]) == {}


def test_leases_survive_a_flushed_script_cache(client: redis.Redis) -> None:
    leases = Leases(client, ttl_s=TTL_S)
    leases.take(_people(1))
    client.script_flush()  # a restarted Redis forgets loaded scripts
    leases.take(_people(3))
    leases.release(_people(2))
    assert set(leases.busy([h for h, _ in _people(3)])) == {_people(3)[2][0]}


def test_an_unreachable_redis_fails_the_take_and_not_the_release() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    leases = Leases(dead, ttl_s=TTL_S)
    with pytest.raises(LeaseUnavailableError):
        leases.take(_people(2))
    leases.release(_people(2))  # best effort: an unreleased lease expires
