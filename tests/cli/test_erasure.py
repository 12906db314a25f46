"""`cioguard status`, `deletions list|overdue|extend` through the real command line parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sqlalchemy import update
from typer.testing import CliRunner

import cioguard.ops.sentry
from cioguard.audit.schema import deletion_requests
from cioguard.audit.store import AuditStore
from cioguard.cli.main import app
from cioguard.config import Settings, get_settings
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditStore]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("CIOGUARD_AUDIT_URL", url)
    get_settings.cache_clear()
    s = AuditStore.from_url(url)
    s.migrate()
    yield s
    s.dispose()
    get_settings.cache_clear()


def _open(store: AuditStore, person_hash: str, *, late_days: int = 0) -> str:
    opened = opening.open_request(
        store, person_hash, reason="erasure", manner="api", mode="suppress"
    )
    if late_days:
        st = deletions.get_status(store, opened.request_id)
        assert st is not None
        with store.transaction() as conn:
            conn.execute(
                update(deletion_requests)
                .where(deletion_requests.c.request_id == opened.request_id)
                .values(due_at=st.received_at - timedelta(days=late_days))
            )
    return opened.request_id


def test_status_shows_a_request_and_exits_1_for_an_unknown_one(store: AuditStore) -> None:
    rid = _open(store, "a" * 64)
    shown = CliRunner().invoke(app, ["status", rid])
    assert shown.exit_code == 0 and "received" in shown.stdout and "gdpr" in shown.stdout
    missing = CliRunner().invoke(app, ["status", "01NOPE"])
    assert missing.exit_code == 1 and "no deletion request" in missing.stderr


def test_list_filters_by_state(store: AuditStore) -> None:
    first, second = _open(store, "a" * 64), _open(store, "b" * 64)
    deletions.transition(store, first, "completed", job_id="j", final=True)
    listed = CliRunner().invoke(app, ["deletions", "list", "--state", "received"])
    assert listed.exit_code == 0 and second in listed.stdout and first not in listed.stdout
    bad = CliRunner().invoke(app, ["deletions", "list", "--state", "done"])
    assert bad.exit_code == 2


def test_extend_records_the_new_due_date_and_refuses_past_the_legal_maximum(
    store: AuditStore,
) -> None:
    rid = _open(store, "a" * 64)
    ok = CliRunner().invoke(
        app, ["deletions", "extend", rid, "--days", "30", "--reason", "complex"]
    )
    assert ok.exit_code == 0 and "due" in ok.stdout
    st = deletions.get_status(store, rid)
    assert st is not None and st.extended_to is not None and st.extension_reason == "complex"
    too_far = CliRunner().invoke(app, ["deletions", "extend", rid, "--days", "90", "--reason", "x"])
    assert too_far.exit_code == 1 and "at most" in too_far.stderr
    unknown = CliRunner().invoke(app, ["deletions", "extend", "01NOPE", "--days", "1",
                                       "--reason", "x"])  # fmt: skip
    assert unknown.exit_code == 1


def test_overdue_exits_1_when_any_request_is_late(store: AuditStore) -> None:
    assert CliRunner().invoke(app, ["deletions", "overdue"]).exit_code == 0
    rid = _open(store, "a" * 64, late_days=2)
    result = CliRunner().invoke(app, ["deletions", "overdue", "--within-days", "0"])
    assert result.exit_code == 1 and rid in result.stdout


class CapturingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, object]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.events += [json.loads(i.payload.get_bytes()) for i in envelope.items
                        if i.type == "event"]  # fmt: skip


def test_overdue_alert_sends_one_event_per_request(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = [_open(store, h * 64, late_days=3) for h in "ab"]
    transport = CapturingTransport()
    real_init = cioguard.ops.sentry.init_sentry

    def init_for_test(settings: Settings, *, role: str) -> bool:
        return real_init(settings, role=role, transport=transport)

    monkeypatch.setattr(cioguard.ops.sentry, "init_sentry", init_for_test)
    try:
        result = CliRunner().invoke(app, ["deletions", "overdue", "--alert"])
    finally:
        sentry_sdk.init()
    assert result.exit_code == 1 and "sent 2 alert(s)" in result.stderr
    tags = [e["tags"] for e in transport.events]
    assert sorted(t["cioguard.request_id"] for t in tags) == sorted(late)  # type: ignore[index]


def test_overdue_alert_without_a_dsn_says_so(store: AuditStore) -> None:
    _open(store, "a" * 64, late_days=3)
    result = CliRunner().invoke(app, ["deletions", "overdue", "--alert"])
    assert result.exit_code == 1 and "SENTRY_DSN is not set" in result.stderr
