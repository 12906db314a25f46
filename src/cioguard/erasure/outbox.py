"""The erasure outbox: a recorded request is never lost between the audit store and the broker.

``delete_person`` records the request and its sealed erase job in one transaction
(:func:`cioguard.erasure.opening.open_requests` with ``seal``), then publishes. If the publish
fails, the caller still gets ``BrokerUnavailableError``, but the request is safe: workers
re-publish (:func:`requeue`), from the stored sealed job, every request still ``received`` whose
job has not been handed to the broker for ``CIOGUARD_REQUEUE_AFTER_S`` seconds, at most once per
that period (a conditional UPDATE claims each one, so several workers never publish it twice in
one period). A re-published job that turns out to be a second copy is absorbed by the final-row
check. The sealed job is cleared when the request completes or fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select, update

from cioguard.audit.schema import deletion_requests as dr
from cioguard.audit.store import AuditStore, utcnow

log = logging.getLogger("cioguard.erasure")
Publish = Callable[[str, str], None]
"""Hands a sealed erase job to the broker: ``(sealed, job_id)``; raises if it cannot."""


@dataclass(frozen=True)
class Waiting:
    """A request whose job has not reached the broker (or not been seen) for a while."""

    request_id: str
    job_id: str
    sealed: str


def mark_published(store: AuditStore, request_ids: list[str]) -> None:
    """Note that these requests' jobs reached the broker now."""
    with store.transaction() as conn:
        conn.execute(
            update(dr).where(dr.c.request_id.in_(request_ids)).values(published_at=utcnow())
        )


def _stale_clause(older_than_s: float) -> ColumnElement[bool]:
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    last_seen = func.coalesce(dr.c.published_at, dr.c.received_at)
    return (dr.c.state == "received") & dr.c.sealed_job.is_not(None) & (last_seen < cutoff)


def waiting(store: AuditStore, *, older_than_s: float, limit: int = 1000) -> list[Waiting]:
    """Requests still ``received`` whose job has not been handed out for ``older_than_s``."""
    with store.reading() as conn:
        rows = conn.execute(
            select(dr.c.request_id, dr.c.job_id, dr.c.sealed_job)
            .where(_stale_clause(older_than_s))
            .order_by(dr.c.received_at)
            .limit(limit)
        ).all()
    return [Waiting(r.request_id, r.job_id, r.sealed_job) for r in rows]


def _claim(store: AuditStore, request_id: str, older_than_s: float) -> bool:
    """Take this period's right to re-publish ``request_id`` (False: another worker has it)."""
    with store.transaction() as conn:
        result = conn.execute(
            update(dr)
            .where(dr.c.request_id == request_id)
            .where(_stale_clause(older_than_s))
            .values(published_at=utcnow())
        )
    return bool(result.rowcount)


def requeue(
    store: AuditStore,
    publish: Publish,
    *,
    older_than_s: float,
    request_id: str | None = None,
) -> int:
    """Re-publish waiting requests (or one, by id, whatever its age); returns how many went out.

    A publish that fails leaves the request waiting: the claim is given back, so the next
    period (or the next worker) tries again.
    """
    if request_id is not None:
        found = [w for w in waiting(store, older_than_s=0) if w.request_id == request_id]
        older = 0.0
    else:
        found, older = waiting(store, older_than_s=older_than_s), older_than_s
    sent = 0
    for entry in found:
        if not _claim(store, entry.request_id, older):
            continue
        try:
            publish(entry.sealed, entry.job_id)
        except Exception as exc:  # broker still down: give the claim back
            log.warning("erasure not re-published", extra={"error_class": type(exc).__name__})
            _unclaim(store, entry.request_id)
            continue
        log.info("erasure re-published", extra={"request_id": entry.request_id})
        sent += 1
    return sent


def _unclaim(store: AuditStore, request_id: str) -> None:
    with store.transaction() as conn:
        conn.execute(update(dr).where(dr.c.request_id == request_id).values(published_at=None))
