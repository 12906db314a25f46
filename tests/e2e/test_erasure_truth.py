"""Erasure that cannot be fooled (issue 14), end to end against real processes and the sandbox.

- ids that URL handling rewrites or Customer.io reinterprets are erased for real (not a 404
  read as "already gone"), and their identify/track land on the right person;
- a request recorded in another audit store than the worker's is still carried out;
- a request whose publish failed (broker down) is erased once the broker is back (the outbox);
- the erasure state only moves forward when two copies of one erase job run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cioguard.audit.store import AuditStore
from cioguard.erasure import outbox
from cioguard.erasure import requests as deletions
from cioguard.errors import BrokerUnavailableError
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess
from tests.conftest import settings_from
from tests.helpers import wait_for_finals, wait_until

pytestmark = pytest.mark.e2e

# "." and ".." are removed from a path by requests/urllib3 (also as %2E); cio_... is read as a
# cio_id and an e-mail shape as an e-mail identifier in a v1 path
AWKWARD_IDS = (".", "..", "...", "cio_0123abc", "someone@example.com", "a/../b", "%2e%2e")


def _completed(producer: Producer, request_ids: list[str]) -> Callable[[], bool]:
    return lambda: all(producer.deletion_status(r).state == "completed" for r in request_ids)


@pytest.mark.parametrize("batch", ["0", "1"])
def test_ids_a_v1_path_cannot_carry_reach_their_own_person_and_are_erased_for_real(
    batch: str,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    start_worker(CIOGUARD_BATCH=batch)
    for person in AWKWARD_IDS:
        producer.identify(person, {"plan": "pro"})
        producer.track(person, "signed_up", {"step": 1})
    wait_for_finals(producer.audit, 2 * len(AWKWARD_IDS))
    for person in AWKWARD_IDS:
        assert cio.control.person(person) == {"plan": "pro"}, person
        assert [e["name"] for e in cio.control.events(person)] == ["signed_up"], person
    assert cio.control.stats()["people"] == len(AWKWARD_IDS)

    requests = [producer.delete_person(person) for person in AWKWARD_IDS]
    wait_until(_completed(producer, requests), what="erasures of awkward ids")
    stats = cio.control.stats()
    assert stats["people"] == 0
    assert stats["suppressed"] == len(AWKWARD_IDS)
    for person in AWKWARD_IDS:
        assert cio.control.person(person) is None, person
    # nothing was sent to a path Customer.io does not know
    assert all(r["status"] != 404 for r in cio.control.requests())


def test_a_request_recorded_in_another_store_is_still_carried_out(
    env: dict[str, str],
    tmp_path: Path,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    producer.identify("elsewhere", {"plan": "pro"})
    worker_store = f"sqlite:///{tmp_path / 'worker-audit.db'}"
    start_worker(CIOGUARD_AUDIT_URL=worker_store)
    worker_audit = AuditStore.from_url(worker_store)
    wait_until(lambda: cio.control.person("elsewhere") is not None, what="the identify")

    request_id = producer.delete_person("elsewhere")  # recorded in the application's store

    def done_in_worker_store() -> bool:
        status = deletions.get_status(worker_audit, request_id)
        return status is not None and status.state == "completed"

    wait_until(done_in_worker_store, what="the erasure in the worker's store")
    assert cio.control.person("elsewhere") is None
    rows = [r for r in worker_audit.rows() if r["request_id"] == request_id]
    assert [r["outcome"] for r in rows] == ["received", "in_progress", "completed"]
    assert rows[0]["detail"] == "recorded by the worker from its erase job"
    worker_audit.dispose()


def test_a_request_whose_publish_failed_is_erased_once_the_broker_is_back(
    env: dict[str, str], tmp_path: Path, cio: SandboxServer
) -> None:
    with RedisServer() as broker:
        live = {**env, "CIOGUARD_BROKER_URL": broker.url, "CIOGUARD_REQUEUE_AFTER_S": "2"}
        app = Producer(settings_from(live))
        app.identify("outboxed", {"plan": "pro"})
        broker.stop()
        with pytest.raises(BrokerUnavailableError) as caught:
            app.delete_person("outboxed")
        assert "not enqueued" in str(caught.value) and "outboxed" not in str(caught.value)
        [waiting] = outbox.waiting(app.audit, older_than_s=0)
        request_id = waiting.request_id
        assert app.deletion_status(request_id).state == "received"

        broker.start()
        worker = WorkerProcess(
            {**live, "CIOGUARD_BATCH": "1"}, concurrency=1, log_path=tmp_path / "w.log"
        ).start()
        try:
            wait_until(_completed(app, [request_id]), timeout_s=90, what="the outboxed erasure")
        finally:
            worker.stop()
        assert cio.control.person("outboxed") is None
        assert outbox.waiting(app.audit, older_than_s=0) == []
        app.audit.dispose()
        app.celery.close()


def _broker_down(*_: object, **__: object) -> str:
    raise BrokerUnavailableError("the broker (CIOGUARD_BROKER_URL) did not answer")


def test_requeue_by_hand_publishes_a_waiting_request_exactly_once_per_period(
    env: dict[str, str], cio: SandboxServer
) -> None:
    """What ``cioguard deletions requeue --stale`` and the workers' relay run."""
    app = Producer(settings_from(env))
    app.send_sealed = _broker_down  # type: ignore[method-assign]
    with pytest.raises(BrokerUnavailableError):
        app.delete_person("by-hand")
    [waiting] = outbox.waiting(app.audit, older_than_s=0)
    sent: list[str] = []

    def publish(sealed: str, job_id: str) -> None:
        sent.append(job_id)

    assert outbox.requeue(app.audit, publish, older_than_s=3600) == 0  # not waiting that long
    assert outbox.requeue(app.audit, publish, older_than_s=0) == 1
    assert outbox.requeue(app.audit, publish, older_than_s=60) == 0  # once per period
    assert sent == [waiting.job_id]
    app.audit.dispose()
    app.celery.close()


def test_two_copies_of_one_erase_job_leave_the_request_completed(
    env: dict[str, str],
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    """The same erase message twice, on two processes, while Customer.io answers slowly."""
    cio.control.configure(latency_ms=300)
    producer.identify("twice", {"plan": "pro"})
    request_id = producer.delete_person("twice")
    [queued] = outbox.waiting(producer.audit, older_than_s=-3600)
    producer.send_sealed(queued.sealed, queued.job_id, "cioguard.erase")  # a second copy
    start_worker(concurrency=2, CIOGUARD_BATCH="0")
    wait_until(_completed(producer, [request_id]), what="the erasure")
    wait_for_finals(producer.audit, 2)  # the identify and the erase job
    final = producer.deletion_status(request_id)
    assert final.state == "completed"
    outcomes = [r["outcome"] for r in producer.audit.rows() if r["request_id"] == request_id]
    assert outcomes.count("completed") == 1
    assert outcomes[-1] == "completed", outcomes
    assert cio.control.person("twice") is None
