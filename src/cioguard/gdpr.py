"""Erasure requests as records: opened before anything is enqueued, moved through states.

State: ``received`` -> ``in_progress`` -> ``completed`` | ``failed``. Every transition is also an
audit-log row, in the same transaction, so the log holds the full history and the
``deletion_requests`` row the current state. A person's tombstone (keyed hash) is written with
the request: from then on, identify/track jobs for that person are dropped, not sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import RowMapping

from cioguard.audit import AuditEntry, AuditStore, utcnow
from cioguard.audit_schema import deletion_requests, tombstones
from cioguard.deadlines import Regime, due_date, regime_for
from cioguard.jobs import new_job_id

OPEN_STATES = ("received", "in_progress")


@dataclass(frozen=True)
class DeletionStatus:
    """What ``cioguard.deletion_status`` answers. Times are UTC."""

    request_id: str
    state: str
    regime: str
    reason: str
    manner: str
    mode: str
    attempts: int
    received_at: datetime
    due_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    error_class: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> DeletionStatus:
        fields = {k: row[k] for k in cls.__dataclass_fields__}
        for key in ("received_at", "due_at", "updated_at", "completed_at"):
            fields[key] = _aware(fields[key])
        return cls(**fields)


def _aware(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class OpenedRequest:
    request_id: str
    job_id: str
    created: bool
    state: str


def open_request(
    store: AuditStore,
    person_hash: str,
    *,
    reason: str,
    manner: str,
    mode: str,
    default_regime: Regime = "gdpr",
) -> OpenedRequest:
    """Record a request and the tombstone; an open or completed request is reused, not doubled."""
    with store.transaction() as conn:
        existing = _latest_for(conn, person_hash)
        if existing is not None and existing["state"] != "failed":
            return OpenedRequest(
                existing["request_id"], existing["job_id"], False, existing["state"]
            )
        now = utcnow()
        regime = regime_for(reason, default_regime)
        request_id, job_id = new_job_id(), new_job_id()
        conn.execute(
            insert(deletion_requests).values(
                request_id=request_id, person_hash=person_hash, reason=reason, regime=regime,
                manner=manner, mode=mode, state="received", attempts=0, received_at=now,
                due_at=due_date(regime, now), updated_at=now, job_id=job_id,
            )
        )  # fmt: skip
        _tombstone(conn, person_hash, request_id, now)
        store.append(
            conn,
            AuditEntry(
                kind="deletion_request", outcome="received", person_hash=person_hash,
                request_id=request_id, job_id=job_id, detail=f"{regime} {manner} {mode}",
            ),
        )  # fmt: skip
    return OpenedRequest(request_id, job_id, True, "received")


def _latest_for(conn: Connection, person_hash: str) -> RowMapping | None:
    row = conn.execute(
        select(deletion_requests)
        .where(deletion_requests.c.person_hash == person_hash)
        .order_by(deletion_requests.c.received_at.desc())
    ).first()
    return row._mapping if row else None


def _tombstone(conn: Connection, person_hash: str, request_id: str, now: datetime) -> None:
    found = conn.execute(
        select(tombstones.c.person_hash).where(tombstones.c.person_hash == person_hash)
    ).first()
    if found is None:
        conn.execute(
            insert(tombstones).values(
                person_hash=person_hash, request_id=request_id, created_at=now
            )
        )


def transition(
    store: AuditStore,
    request_id: str,
    state: str,
    *,
    job_id: str | None = None,
    attempts: int | None = None,
    error_class: str | None = None,
    http_status: int | None = None,
    final: bool = False,
) -> bool:
    """Move a request to ``state`` and log it. False if the job's final row already existed."""
    from sqlalchemy.exc import IntegrityError

    now = utcnow()
    values: dict[str, object] = {"state": state, "updated_at": now, "error_class": error_class}
    if attempts is not None:
        values["attempts"] = attempts
    if state == "completed":
        values["completed_at"] = now
    try:
        with store.transaction() as conn:
            row = conn.execute(
                select(deletion_requests.c.person_hash).where(
                    deletion_requests.c.request_id == request_id
                )
            ).one()
            conn.execute(
                update(deletion_requests)
                .where(deletion_requests.c.request_id == request_id)
                .values(**values)
            )
            store.append(
                conn,
                AuditEntry(
                    kind="delete", outcome=state, person_hash=row.person_hash,
                    request_id=request_id, job_id=job_id, final=final,
                    attempts=attempts or 0, error_class=error_class, http_status=http_status,
                ),
            )  # fmt: skip
    except IntegrityError:
        return False
    return True


def get_status(store: AuditStore, request_id: str) -> DeletionStatus | None:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(deletion_requests).where(deletion_requests.c.request_id == request_id)
        ).first()
    return DeletionStatus.from_row(row._mapping) if row else None


def overdue(store: AuditStore, *, within: timedelta = timedelta(days=3)) -> list[DeletionStatus]:
    """Requests not completed whose due date has passed or falls within ``within``."""
    limit = utcnow() + within
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(deletion_requests)
            .where(deletion_requests.c.state != "completed")
            .where(deletion_requests.c.due_at <= limit)
            .order_by(deletion_requests.c.due_at)
        ).all()
    return [DeletionStatus.from_row(r._mapping) for r in rows]


def erased_hashes(store: AuditStore) -> list[str]:
    """Every tombstoned person hash (to rebuild the Redis cache after a flush)."""
    with store.engine.connect() as conn:
        return [r.person_hash for r in conn.execute(select(tombstones.c.person_hash))]
