"""Alerting on erasure requests past or near their legal due date (``deletions overdue --alert``).

One Sentry event per request, carrying only what identifies the request, never the person:
the request id (a ULID), regime, state, due date and days overdue, as tags. The fingerprint is
the request id, so a daily cron run updates one Sentry issue per late request instead of
opening a new one each day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sentry_sdk

from cioguard.audit.store import utcnow
from cioguard.erasure.requests import DeletionStatus

MESSAGE = "cioguard: erasure request overdue or due soon"


def days_overdue(status: DeletionStatus, now: datetime) -> int:
    """Whole days past the due date in force (negative: days left)."""
    return (now - status.effective_due_at).days


def alert_overdue(statuses: Sequence[DeletionStatus], *, now: datetime | None = None) -> int:
    """Send one event per request through the initialized Sentry client; returns how many."""
    when = now or utcnow()
    for status in statuses:
        late = days_overdue(status, when)
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("cioguard.request_id", status.request_id)
            scope.set_tag("cioguard.regime", status.regime)
            scope.set_tag("cioguard.state", status.state)
            scope.set_tag("cioguard.due", status.effective_due_at.date().isoformat())
            scope.set_tag("cioguard.days_overdue", str(late))
            scope.set_tag("cioguard.extended", str(status.extended_to is not None).lower())
            scope.fingerprint = ["cioguard-erasure-overdue", status.request_id]
            sentry_sdk.capture_message(MESSAGE, "error" if late >= 0 else "warning")
    return len(statuses)
