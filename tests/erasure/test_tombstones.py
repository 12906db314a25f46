"""Tombstones: the store decides, Redis only answers "yes" faster (private Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cioguard.audit.store import AuditStore
from cioguard.erasure import opening
from cioguard.erasure.tombstones import SET_KEY, Tombstones

ERASED, OTHER = "e" * 64, "0" * 64


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    opening.open_request(s, ERASED, reason="erasure", manner="api", mode="suppress")
    return s


def test_a_request_opened_after_the_cache_was_warmed_is_still_seen(
    client: redis.Redis, store: AuditStore
) -> None:
    stones = Tombstones(client, store)
    assert stones.reload() == 1
    late = "1" * 64
    opening.open_request(store, late, reason="erasure", manner="api", mode="suppress")
    assert stones.is_erased(late)
    assert client.sismember(SET_KEY, late)  # cached once found


def test_a_flushed_redis_does_not_forget_an_erased_person(
    client: redis.Redis, store: AuditStore
) -> None:
    stones = Tombstones(client, store)
    stones.add(ERASED)
    client.flushdb()  # the private test Redis only
    assert stones.is_erased(ERASED)
    assert not stones.is_erased(OTHER)


def test_the_cache_answers_yes_without_the_store(client: redis.Redis, tmp_path: Path) -> None:
    gone = AuditStore.from_url(f"sqlite:///{tmp_path / 'no-such-dir' / 'audit.db'}")
    stones = Tombstones(client, gone)
    stones.add(ERASED)
    assert stones.is_erased(ERASED)


def test_erased_among_mixes_cache_and_store(client: redis.Redis, store: AuditStore) -> None:
    stones = Tombstones(client, store)
    cached_only = "c" * 64
    stones.add(cached_only)
    assert stones.erased_among([ERASED, OTHER, cached_only]) == {ERASED, cached_only}
    assert stones.erased_among([]) == set()
    assert client.sismember(SET_KEY, ERASED)


def test_a_redis_outage_falls_back_to_the_store(store: AuditStore) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    stones = Tombstones(down, store)
    stones.add(ERASED)  # logged, not raised: the cache is optional
    assert stones.is_erased(ERASED) and not stones.is_erased(OTHER)
    assert stones.reload() == 1


def test_gate_answers_final_and_erased_from_the_store(
    client: redis.Redis, store: AuditStore
) -> None:
    from cioguard.audit.store import AuditEntry

    stones = Tombstones(client, store)
    assert stones.gate("01JOB", OTHER) == (False, False)
    assert stones.gate("01JOB", ERASED) == (False, True)
    store.record(AuditEntry(kind="identify", outcome="delivered", job_id="01JOB", final=True))
    assert stones.gate("01JOB", OTHER) == (True, False)
    client.flushdb()  # Redis plays no part in the answer
    assert stones.gate("01JOB", ERASED) == (True, True)
