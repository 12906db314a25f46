"""Tests for the dead-letter store: the row and the final audit row go together, once; listing,
replay marking, and an alert (log line and Sentry event) that carries no person data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sqlalchemy import select

from cioguard.audit.schema import dead_letters
from cioguard.audit.store import AuditEntry, AuditStore
from cioguard.config import Settings
from cioguard.delivery import deadletters
from cioguard.ops.sentry import init_sentry

PERSON_HASH = "a" * 64
SEALED = "gAAAAAB-sealed-token"


class CapturingTransport(Transport):
    """Keeps every envelope Sentry would send, as JSON text."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            self.sent.append(item.payload.get_bytes().decode("utf-8", "replace"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    audit = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    audit.migrate()
    yield audit
    audit.dispose()


@pytest.fixture
def sentry() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    init_sentry(Settings(), role="test", transport=transport)
    yield transport
    sentry_sdk.init()  # no DSN, no transport: events go nowhere again


def record(store: AuditStore, job_id: str = "01JOB1", **overrides: Any) -> bool:
    fields: dict[str, Any] = {
        "job_id": job_id, "kind": "identify", "person_hash": PERSON_HASH, "sealed": SEALED,
        "error_class": "PermanentError", "http_status": 400, "attempts": 1,
        "policy_version": "v1",
    }  # fmt: skip
    return deadletters.record(store, **{**fields, **overrides})


def test_record_stores_the_letter_and_its_final_audit_row(store: AuditStore) -> None:
    assert record(store, attempts=3)
    [letter] = deadletters.list_all(store)
    assert (letter.job_id, letter.kind, letter.person_hash) == ("01JOB1", "identify", PERSON_HASH)
    assert (letter.error_class, letter.http_status, letter.sealed) == (
        "PermanentError",
        400,
        SEALED,
    )
    assert letter.replayed_at is None
    final = store.final_row("01JOB1")
    assert final is not None
    assert final["outcome"] == "dead_lettered" and final["attempts"] == 3
    assert final["error_class"] == "PermanentError" and final["http_status"] == 400
    assert final["policy_version"] == "v1"


def test_a_job_is_dead_lettered_once(store: AuditStore) -> None:
    assert record(store)
    assert not record(store, error_class="RetryableError")
    assert len(deadletters.list_all(store)) == 1
    assert [r["outcome"] for r in store.rows()] == ["dead_lettered"]


def test_a_job_already_final_is_not_dead_lettered(store: AuditStore) -> None:
    store.record(AuditEntry(kind="identify", outcome="delivered", job_id="01JOB1", final=True))
    assert not record(store)
    with store.engine.connect() as conn:
        assert conn.execute(select(dead_letters)).first() is None  # rolled back together


def test_list_all_is_oldest_first_and_hides_replayed(store: AuditStore) -> None:
    for job_id in ("01JOB1", "01JOB2", "01JOB3"):
        record(store, job_id)
    deadletters.mark_replayed(store, "01JOB2", "01NEW2")
    assert [d.job_id for d in deadletters.list_all(store)] == ["01JOB1", "01JOB3"]
    everything = deadletters.list_all(store, include_replayed=True)
    assert [d.job_id for d in everything] == ["01JOB1", "01JOB2", "01JOB3"]
    assert everything[1].replayed_at is not None


def test_mark_replayed_appends_a_non_final_audit_row(store: AuditStore) -> None:
    record(store)
    deadletters.mark_replayed(store, "01JOB1", "01NEW1")
    rows = list(store.rows())
    assert [r["outcome"] for r in rows] == ["dead_lettered", "replayed"]
    assert rows[1]["final_job_id"] is None and rows[1]["detail"] == "replayed as 01NEW1"
    assert rows[1]["person_hash"] == PERSON_HASH


def test_alert_goes_to_logs_and_sentry_without_person_data(
    store: AuditStore, sentry: CapturingTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cioguard.delivery.deadletters"):
        record(store)
    sentry_sdk.flush()
    [line] = [r for r in caplog.records if r.name == "cioguard.delivery.deadletters"]
    assert line.getMessage() == "job dead-lettered"
    assert line.__dict__["job_id"] == "01JOB1" and line.__dict__["status"] == 400
    events = [json.loads(s) for s in sentry.sent if "dead-lettered" in s]
    alert = next(e for e in events if e.get("message", "").startswith("cioguard:"))
    assert alert["message"] == "cioguard: identify job dead-lettered (PermanentError)"
    assert alert["tags"]["cioguard.http_status"] == "400"
    assert alert["extra"]["job_id"] == "01JOB1"
    for text in sentry.sent:  # the alert, and the log line's event (logging integration)
        assert SEALED not in text and PERSON_HASH not in text


def test_no_alert_for_a_duplicate(store: AuditStore, sentry: CapturingTransport) -> None:
    record(store)
    sentry_sdk.flush()
    before = len(sentry.sent)
    record(store)
    sentry_sdk.flush()
    assert len(sentry.sent) == before
