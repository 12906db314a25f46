"""Payload key rotation with work in the queue: nothing sealed under an old key is lost.

``CIOGUARD_PAYLOAD_KEY`` is a list, newest first: the first key seals, every key opens. Jobs
enqueued under the old key before the rotation are delivered by a worker started with
``NEW,OLD``; a job whose key was removed becomes a dead letter, still sealed, and is delivered
once replayed with the key restored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import redis

from cioguard.broker.celeryconf import QUEUE
from cioguard.broker.envelope import Envelope, EnvelopeError, new_key
from cioguard.broker.jobs import Job
from cioguard.config import get_settings
from cioguard.delivery import replay
from cioguard.delivery.deadletters import list_all
from cioguard.producer.api import Producer, get_producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.conftest import settings_from
from tests.helpers import final_rows, wait_for_finals

pytestmark = pytest.mark.e2e


def _queued_tokens(broker_url: str) -> list[str]:
    """The sealed argument of every message waiting in the queue (kombu base64 bodies)."""
    client = redis.Redis.from_url(broker_url)
    try:
        messages = [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]
    finally:
        client.close()
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]


@pytest.fixture
def producer_for(env: dict[str, str]) -> Iterator[Callable[[str], Producer]]:
    made: list[Producer] = []

    def make(payload_key: str) -> Producer:
        producer = Producer(settings_from({**env, "CIOGUARD_PAYLOAD_KEY": payload_key}))
        producer.audit.migrate()
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.audit.dispose()
        producer.celery.close()


def test_jobs_sealed_under_the_old_key_are_delivered_after_rotation(
    env: dict[str, str],
    producer_for: Callable[[str], Producer],
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    old, new = env["CIOGUARD_PAYLOAD_KEY"], new_key()
    before = producer_for(old)
    jobs = [before.identify(f"rot-old-{i}", {"email": f"o{i}@example.test"}) for i in range(5)]
    queued = _queued_tokens(env["CIOGUARD_BROKER_URL"])
    assert len(queued) == 5
    with pytest.raises(EnvelopeError):
        Envelope([new.encode()]).open(queued[0])  # really sealed under the old key only

    start_worker(CIOGUARD_PAYLOAD_KEY=f"{new},{old}")
    after = producer_for(f"{new},{old}")
    jobs += [after.identify(f"rot-new-{i}", {"email": f"n{i}@example.test"}) for i in range(5)]

    wait_for_finals(after.audit, len(jobs))
    rows = {r["final_job_id"]: r["outcome"] for r in final_rows(after.audit)}
    assert rows == dict.fromkeys(jobs, "delivered")
    assert cio.control.person("rot-old-0") == {"email": "o0@example.test"}
    assert cio.control.person("rot-new-4") == {"email": "n4@example.test"}


@pytest.fixture
def application_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process environment the global API (and ``replay``) reads, cleaned up afterwards."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_producer.cache_clear()
    yield
    if get_producer.cache_info().currsize:
        get_producer().audit.dispose()
        get_producer().celery.close()
    get_producer.cache_clear()
    get_settings.cache_clear()


def test_a_job_under_a_removed_key_is_kept_sealed_and_replayable(
    env: dict[str, str],
    producer_for: Callable[[str], Producer],
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    application_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current, removed = env["CIOGUARD_PAYLOAD_KEY"], new_key()
    stale = producer_for(removed)
    job_id = stale.identify("rot-gone-1", {"email": "gone1@example.test", "plan": "pro"})
    (token,) = _queued_tokens(env["CIOGUARD_BROKER_URL"])
    start_worker()  # knows only the current key

    wait_for_finals(stale.audit, 1)
    (row,) = final_rows(stale.audit)
    assert (row["final_job_id"], row["outcome"]) == (job_id, "dead_lettered")
    (letter,) = list_all(stale.audit)
    assert (letter.job_id, letter.kind, letter.error_class) == (job_id, "unknown", "EnvelopeError")
    assert letter.sealed == token  # kept as it came: ciphertext, nothing readable stored
    job = Job.from_payload(Envelope([removed.encode()]).open(letter.sealed))
    assert job.person_id == "rot-gone-1"
    assert cio.control.person("rot-gone-1") is None

    monkeypatch.setenv("CIOGUARD_PAYLOAD_KEY", f"{current},{removed}")  # the key restored
    get_settings.cache_clear()
    assert [old for old, _ in replay.replay(job_id=job_id).replayed] == [job_id]
    wait_for_finals(stale.audit, 2)
    assert cio.control.person("rot-gone-1") == {"email": "gone1@example.test", "plan": "pro"}
    outcomes = sorted(str(r["outcome"]) for r in final_rows(stale.audit))
    assert outcomes == ["dead_lettered", "delivered"]
