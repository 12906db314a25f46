"""Replaying dead letters: nothing marked before it is sent, bad letters skipped, erased refused.

Real Redis (the private test server) and a real audit store; no worker is needed: the tests look
at what replay leaves in the queue and in the store.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cioguard.broker.envelope import Envelope, new_key
from cioguard.broker.jobs import Job, new_job_id
from cioguard.delivery import deadletters
from cioguard.delivery.replay import replay
from cioguard.producer.api import Producer
from cioguard.sandbox.devstack import free_port
from tests.conftest import settings_from

PERSON = "replay-canary-person"


def _letter(producer: Producer, *, envelope: Envelope | None = None) -> str:
    job = Job(
        job_id=new_job_id(), kind="identify", person_id=PERSON,
        person_hash=producer_hash(producer, PERSON), attributes={"plan": "pro"},
    )  # fmt: skip
    sealed = (envelope or producer.envelope).seal(job.to_payload())
    deadletters.record(
        producer.audit, job_id=job.job_id, kind="identify", person_hash=job.person_hash,
        sealed=sealed, error_class="PermanentError", http_status=400, attempts=1,
    )  # fmt: skip
    return job.job_id


def producer_hash(producer: Producer, person_id: str) -> str:
    from cioguard.privacy.hashing import person_hash

    return person_hash(producer.hash_key, person_id)


def _queued(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen("cioguard"))
    finally:
        client.close()


@pytest.fixture
def down(env: dict[str, str]) -> Iterator[Producer]:
    """A producer on the same audit store whose broker does not answer."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    p = Producer(settings_from({**env, "CIOGUARD_BROKER_URL": closed}))
    yield p
    p.celery.close()


def test_with_the_broker_down_a_letter_stays_listed_and_nothing_says_replayed(
    producer: Producer, down: Producer
) -> None:
    job_id = _letter(producer)
    report = replay(job_id=None, producer=down)
    assert report.replayed == []
    [(skipped, reason)] = report.skipped
    assert skipped == job_id and "broker" in reason and PERSON not in reason
    [letter] = deadletters.list_all(producer.audit)
    assert letter.job_id == job_id and letter.replayed_at is None
    assert not [r for r in producer.audit.rows() if r["outcome"] == "replayed"]


def test_a_letter_no_key_opens_is_reported_and_the_others_still_go(
    producer: Producer, redis_url: str
) -> None:
    unreadable = _letter(producer, envelope=Envelope([new_key().encode()]))
    good = _letter(producer)
    report = replay(job_id=None, producer=producer)
    assert [old for old, _ in report.replayed] == [good]
    assert [old for old, _ in report.skipped] == [unreadable]
    assert _queued(redis_url) == 1
    [still] = deadletters.list_all(producer.audit)
    assert still.job_id == unreadable


def test_an_erased_persons_letter_loses_its_payload_and_cannot_be_replayed(
    producer: Producer, redis_url: str
) -> None:
    job_id = _letter(producer)
    hashed = producer_hash(producer, PERSON)
    with producer.audit.transaction() as conn:
        assert deadletters.erase_payloads(conn, producer.audit, [hashed]) == 1
    with producer.audit.transaction() as conn:
        assert deadletters.erase_payloads(conn, producer.audit, [hashed]) == 0  # once
    [letter] = deadletters.list_all(producer.audit)
    assert letter.sealed == deadletters.ERASED_PAYLOAD and letter.erased_at is not None
    assert (letter.job_id, letter.kind, letter.person_hash) == (job_id, "identify", hashed)
    report = replay(job_id=job_id, producer=producer)
    assert report.replayed == [] and "erased" in report.skipped[0][1]
    assert _queued(redis_url) == 0
    erased = [r for r in producer.audit.rows() if r["kind"] == "dead_letter"]
    assert [(r["outcome"], r["person_hash"]) for r in erased] == [("erased", hashed)]
