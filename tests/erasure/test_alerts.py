"""Overdue alerts: one Sentry event per request, tags only, nothing about the person."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from cioguard.config import Settings
from cioguard.erasure.alerts import MESSAGE, alert_overdue, days_overdue
from cioguard.erasure.requests import DeletionStatus
from cioguard.ops.sentry import init_sentry

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
PERSON_HASH = "f" * 64


class CapturingTransport(Transport):
    """Keeps every event Sentry would send, as parsed JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, object]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(json.loads(item.payload.get_bytes()))


@pytest.fixture
def sentry() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    init_sentry(Settings(), role="test", transport=transport)
    yield transport
    sentry_sdk.init()


def status(request_id: str, due: datetime, *, extended: datetime | None = None) -> DeletionStatus:
    return DeletionStatus(
        request_id=request_id, state="in_progress", regime="gdpr", reason="erasure",
        manner="api", mode="suppress", attempts=3, received_at=due - timedelta(days=30),
        due_at=due, updated_at=due, completed_at=None, error_class=None, extended_to=extended,
    )  # fmt: skip


def test_days_overdue_counts_from_the_due_date_in_force() -> None:
    assert days_overdue(status("r1", NOW - timedelta(days=4)), NOW) == 4
    extended = status("r2", NOW - timedelta(days=4), extended=NOW + timedelta(days=10))
    assert days_overdue(extended, NOW) == -10


def test_one_event_per_request_with_tags_only(sentry: CapturingTransport) -> None:
    late, soon = (
        status("01LATE", NOW - timedelta(days=2)),
        status("01SOON", NOW + timedelta(days=2)),
    )
    assert alert_overdue([late, soon], now=NOW) == 2
    sentry_sdk.flush()
    assert len(sentry.events) == 2
    first, second = sentry.events
    assert first["message"] == MESSAGE and first["level"] == "error"
    assert second["level"] == "warning"
    tags = first["tags"]
    assert isinstance(tags, dict)
    assert tags["cioguard.request_id"] == "01LATE" and tags["cioguard.days_overdue"] == "2"
    assert first["fingerprint"] == ["cioguard-erasure-overdue", "01LATE"]
    assert PERSON_HASH not in json.dumps(sentry.events)
