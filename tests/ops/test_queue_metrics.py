"""Broker and audit gauges against a real Redis and a real audit store.

Jobs are enqueued by the real producer (real kombu messages through cioguard's transport) and
taken by a real kombu consumer that does not acknowledge, so the unacknowledged gauges see
kombu's own bookkeeping, not a hand-made key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from ulid import ULID

from cioguard.audit.schema import dead_letters, deletion_requests
from cioguard.audit.store import utcnow
from cioguard.broker.celeryconf import QUEUE
from cioguard.delivery import deadletters
from cioguard.ops import metrics
from cioguard.ops.queue_metrics import QueueCollector, job_age_s
from cioguard.producer.api import Producer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(*collectors: object) -> Samples:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def queues(producer: Producer) -> Iterator[QueueCollector]:
    collector = QueueCollector(producer.settings.broker_url)
    yield collector
    collector.close()


def test_depth_and_oldest_job_of_the_real_queue(producer: Producer, queues: QueueCollector) -> None:
    empty = scrape(queues)
    assert empty[("cioguard_queue_depth", (("queue", QUEUE),))] == 0
    assert empty[("cioguard_queue_oldest_job_age_seconds", (("queue", QUEUE),))] == 0
    assert empty[("cioguard_broker_up", ())] == 1
    first = producer.identify("q-1", {"plan": "pro"})
    for i in range(4):
        producer.track(f"q-{i}", "signed_up", {})
    found = scrape(queues)
    assert found[("cioguard_queue_depth", (("queue", QUEUE),))] == 5
    age = found[("cioguard_queue_oldest_job_age_seconds", (("queue", QUEUE),))]
    created = ULID.from_str(first).timestamp
    assert (
        age > 0 and abs(age - job_age_s(f'{{"headers": {{"id": "{first}"}}}}', created + age)) < 1
    )
    assert found[("cioguard_unacked_messages", ())] == 0


def test_a_message_taken_and_not_acknowledged_counts_as_unacked(
    producer: Producer, queues: QueueCollector
) -> None:
    producer.identify("q-un", {"plan": "pro"})
    producer.identify("q-un2", {"plan": "pro"})
    with producer.celery.connection_for_read() as conn:
        inbox = conn.SimpleQueue(QUEUE)
        message = inbox.get(timeout=10)  # taken, not acknowledged
        found = scrape(queues)
        unacked = found[("cioguard_unacked_messages", ())]
        assert unacked >= 1  # the consumer may take more than one (no prefetch limit here)
        assert unacked + found[("cioguard_queue_depth", (("queue", QUEUE),))] == 2
        assert found[("cioguard_unacked_oldest_age_seconds", ())] >= 0
        assert found[("cioguard_inflight_messages", ())] == 0
        message.ack()
        assert scrape(queues)[("cioguard_unacked_messages", ())] == unacked - 1
        inbox.close()


def test_an_unreachable_broker_reports_down() -> None:
    collector = QueueCollector("redis://127.0.0.1:1/0")
    try:
        assert scrape(collector) == {("cioguard_broker_up", ()): 0}
    finally:
        collector.close()


def test_job_age_of_a_foreign_message_is_zero() -> None:
    assert job_age_s(b"not json", 1e9) == 0
    assert job_age_s(b'{"headers": {"id": "not-a-ulid"}}', 1e9) == 0
    assert job_age_s(None, 1e9) == 0


def test_dead_letters_and_erasure_ages_from_the_audit_store(producer: Producer) -> None:
    store = producer.audit
    for n in range(3):
        deadletters.record(
            store, job_id=f"01DL{n:022d}", kind="identify", person_hash=f"{n:064x}",
            sealed="x", error_class="PermanentError", http_status=400, attempts=1,
        )  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(update(dead_letters).where(dead_letters.c.job_id == "01DL" + "0" * 22)
                     .values(replayed_at=utcnow()))  # fmt: skip
    old = producer.delete_person("q-old")
    producer.delete_person("q-new")
    with store.engine.begin() as conn:
        conn.execute(
            update(deletion_requests).where(deletion_requests.c.request_id == old)
            .values(received_at=utcnow() - timedelta(days=40), due_at=utcnow() - timedelta(days=10))
        )  # fmt: skip
    collector = metrics.DeletionCollector(producer.settings.audit_url)
    try:
        found = scrape(collector)
    finally:
        collector.close()
    assert found[("cioguard_dead_letters", ())] == 3
    assert found[("cioguard_dead_letters_waiting", ())] == 2
    oldest = found[("cioguard_deletion_requests_oldest_open_age_seconds", ())]
    assert 40 * 86400 - 60 < oldest < 40 * 86400 + 60
    next_due = found[("cioguard_deletion_requests_next_due_seconds", ())]
    assert -10 * 86400 - 60 < next_due < -10 * 86400 + 60
    assert found[("cioguard_deletion_requests_overdue", ())] == 1
