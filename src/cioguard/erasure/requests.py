"""Erasure requests as records: opened before anything is enqueued, moved through states.

State: ``received`` -> ``in_progress`` -> ``completed`` | ``failed``. Every transition is also an
audit-log row, in the same transaction, so the log holds the full history and the
``deletion_requests`` row the current state. A person's tombstone (keyed hash) is written with
the request: from then on, identify/track jobs for that person are dropped, not sent.

Requests are keyed by the person's keyed hash only; nothing here ever sees a raw id. An open or
completed request for the same hash is reused (repeats are safe); a failed one is not, so asking
again after a failure opens a fresh request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from cioguard.audit.schema import deletion_requests, tombstones
from cioguard.audit.store import AuditEntry, AuditStore, utcnow
from cioguard.erasure.deadlines import (
    Regime,
    extend_due_date,
    extension_reason,
)
from cioguard.errors import InvalidInputError

OPEN_STATES = ("received", "in_progress")


STATES = ("received", "in_progress", "completed", "failed")
MOVES_FROM: dict[str, tuple[str, ...]] = {
    "received": ("failed",),  # a failed request replayed (dead-letters replay)
    "in_progress": ("received", "in_progress"),  # another attempt of an open request
    "completed": ("received", "in_progress"),
    "failed": ("received", "in_progress"),
}
"""The states each state may be entered from: ``received -> in_progress -> completed | failed``."""


_IN_CHUNK = 500  # ids per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits


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
    extended_to: datetime | None = None
    extension_reason: str | None = None

    @property
    def effective_due_at(self) -> datetime:
        """The due date in force: the extended one if the request was extended."""
        return self.extended_to or self.due_at

    @classmethod
    def from_row(cls, row: RowMapping) -> DeletionStatus:
        fields = {k: row[k] for k in cls.__dataclass_fields__}
        for key in ("received_at", "due_at", "updated_at", "completed_at", "extended_to"):
            fields[key] = _aware(fields[key])
        return cls(**fields)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


@dataclass(frozen=True)
class Transition:
    """One state change of one request, as :func:`transition_many` applies it."""

    request_id: str
    state: str
    job_id: str | None = None
    attempts: int | None = None
    error_class: str | None = None
    http_status: int | None = None
    final: bool = False
    detail: str | None = None


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
    """Move a request to ``state`` and log it. False if nothing moved: the job's final row
    already existed, or the request had already moved past ``state`` (see :data:`MOVES_FROM`)."""
    change = Transition(request_id, state, job_id, attempts, error_class, http_status, final)
    return request_id in (apply_transitions(store, [change]) or set())


def transition_many(store: AuditStore, changes: Sequence[Transition]) -> bool:
    """Apply state changes and their audit rows in one transaction (a batch's deletions).

    State only moves forward (:data:`MOVES_FROM`): each UPDATE is conditional on the request's
    current state, and a change whose request has moved on meanwhile (a concurrent copy of the
    job got there first) is skipped with its audit row, so a completed request never reads
    ``in_progress`` again. False, with nothing applied, if one of the final rows already
    existed: the caller then applies them one by one.
    """
    return apply_transitions(store, changes) is not None


def apply_transitions(store: AuditStore, changes: Sequence[Transition]) -> set[str] | None:
    """:func:`transition_many`, returning the request ids that moved (None: a final row existed)."""
    if not changes:
        return set()
    now = utcnow()
    try:
        with store.transaction() as conn:
            owners = dict(
                conn.execute(
                    select(deletion_requests.c.request_id, deletion_requests.c.person_hash).where(
                        deletion_requests.c.request_id.in_([c.request_id for c in changes])
                    )
                ).all()
            )
            moved = [c for c in changes if c.request_id in owners and _move(conn, c, now)]
            store.append_many(conn, [_entry(c, owners[c.request_id]) for c in moved])
    except IntegrityError:
        return None
    return {c.request_id for c in moved}


def _move(conn: Connection, change: Transition, now: datetime) -> bool:
    """One conditional UPDATE: applied only from a state this change may follow."""
    result = conn.execute(
        update(deletion_requests)
        .where(deletion_requests.c.request_id == change.request_id)
        .where(deletion_requests.c.state.in_(MOVES_FROM[change.state]))
        .values(_state_values(change, now))
    )
    return bool(result.rowcount)


def _state_values(change: Transition, now: datetime) -> dict[str, object]:
    values: dict[str, object] = {
        "state": change.state, "updated_at": now, "error_class": change.error_class,
    }  # fmt: skip
    if change.attempts is not None:
        values["attempts"] = change.attempts
    if change.state == "completed":
        values["completed_at"] = now
    if change.state in ("completed", "failed"):
        values["sealed_job"] = None  # the outbox copy goes (a failed job lives on as a dead letter)
    return values


def _entry(change: Transition, person_hash: str) -> AuditEntry:
    return AuditEntry(
        kind="delete", outcome=change.state, person_hash=person_hash,
        request_id=change.request_id, job_id=change.job_id, final=change.final,
        attempts=change.attempts or 0, error_class=change.error_class,
        http_status=change.http_status, detail=change.detail,
    )  # fmt: skip


def extend(store: AuditStore, request_id: str, *, days: int, reason: str) -> DeletionStatus:
    """Push a request's due date back by ``days``, within the legal maximum, and log why.

    GDPR Art. 12(3) allows two further months in total (several extensions may add up to it);
    CCPA §7021 allows one extension of up to 45 days. Raises ``LookupError`` for an unknown id
    and :class:`InvalidInputError` (a ``ValueError``) when the law or the state forbids it.

    Warning: ``reason`` is kept in the audit trail and exported to regulators: it must say why
    (e.g. "complex request, several systems"), never who.
    """
    why = extension_reason(reason)
    with store.transaction() as conn:
        row = conn.execute(
            select(deletion_requests).where(deletion_requests.c.request_id == request_id)
        ).first()
        if row is None:
            raise LookupError(f"no deletion request with id {request_id}")
        current = DeletionStatus.from_row(row._mapping)
        if current.state == "completed":
            raise InvalidInputError("the request is already completed")
        regime: Regime = "ccpa" if current.regime == "ccpa" else "gdpr"
        new_due = extend_due_date(regime, current.due_at, current.extended_to, days=days)
        conn.execute(
            update(deletion_requests)
            .where(deletion_requests.c.request_id == request_id)
            .values(extended_to=new_due, extension_reason=why, updated_at=utcnow())
        )
        detail = f"due {current.effective_due_at:%Y-%m-%d} -> {new_due:%Y-%m-%d}: {why}"
        store.append(
            conn,
            AuditEntry(
                kind="deletion_request", outcome="extended", person_hash=row.person_hash,
                request_id=request_id, detail=detail[:200],
            ),
        )  # fmt: skip
    status = get_status(store, request_id)
    assert status is not None
    return status


def get_status(store: AuditStore, request_id: str) -> DeletionStatus | None:
    with store.reading() as conn:
        row = conn.execute(
            select(deletion_requests).where(deletion_requests.c.request_id == request_id)
        ).first()
    return DeletionStatus.from_row(row._mapping) if row else None


def statuses(store: AuditStore, request_ids: Sequence[str]) -> dict[str, DeletionStatus]:
    """The status of each known request id, in one query per chunk."""
    found: dict[str, DeletionStatus] = {}
    with store.reading() as conn:
        for chunk in _chunks(request_ids):
            query = select(deletion_requests).where(deletion_requests.c.request_id.in_(chunk))
            for row in conn.execute(query):
                status = DeletionStatus.from_row(row._mapping)
                found[status.request_id] = status
    return found


def states(store: AuditStore, request_ids: Sequence[str]) -> dict[str, str]:
    """The current state of each known request id (for polling a bulk run)."""
    found: dict[str, str] = {}
    with store.reading() as conn:
        for chunk in _chunks(request_ids):
            query = select(deletion_requests.c.request_id, deletion_requests.c.state).where(
                deletion_requests.c.request_id.in_(chunk)
            )
            found.update((r.request_id, r.state) for r in conn.execute(query))
    return found


def list_requests(
    store: AuditStore, *, state: str | None = None, limit: int | None = None
) -> list[DeletionStatus]:
    """Requests, newest first, optionally in one state."""
    if state is not None and state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}")
    query = select(deletion_requests).order_by(
        deletion_requests.c.received_at.desc(), deletion_requests.c.request_id.desc()
    )
    if state is not None:
        query = query.where(deletion_requests.c.state == state)
    if limit is not None:
        query = query.limit(limit)
    with store.reading() as conn:
        return [DeletionStatus.from_row(r._mapping) for r in conn.execute(query)]


def overdue(store: AuditStore, *, within: timedelta = timedelta(days=3)) -> list[DeletionStatus]:
    """Requests not completed whose due date in force has passed or falls within ``within``."""
    limit = utcnow() + within
    due = func.coalesce(deletion_requests.c.extended_to, deletion_requests.c.due_at)
    with store.reading() as conn:
        rows = conn.execute(
            select(deletion_requests)
            .where(deletion_requests.c.state != "completed")
            .where(due <= limit)
            .order_by(due)
        ).all()
    return [DeletionStatus.from_row(r._mapping) for r in rows]


def erased_hashes(store: AuditStore) -> list[str]:
    """Every tombstoned person hash (to warm the Redis cache)."""
    with store.reading() as conn:
        return [r.person_hash for r in conn.execute(select(tombstones.c.person_hash))]


def tombstoned(store: AuditStore, person_hashes: Sequence[str]) -> set[str]:
    """Which of ``person_hashes`` are under erasure, by the audit store (the source of truth)."""
    with store.reading() as conn:
        return _existing_tombstones(conn, person_hashes)


def _existing_tombstones(conn: Connection, person_hashes: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(person_hashes):
        query = select(tombstones.c.person_hash).where(tombstones.c.person_hash.in_(chunk))
        found.update(r.person_hash for r in conn.execute(query))
    return found
