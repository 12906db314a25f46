"""Lifting a tombstone: a person who was erased legitimately comes back.

After an erasure, every identify/track for the person is dropped (the tombstone). When the same
id signs up again, an operator lifts it: ``cioguard deletions lift REQUEST_ID --reason TEXT``.
The request stays ``completed`` (the erasure happened, and the trail says so); its tombstone is
removed, the lift is recorded with its reason, and a later erasure of the person opens a new
request. When the erasure suppressed the person, the caller also enqueues Customer.io's
unsuppress (:meth:`cioguard.producer.api.Producer.lift_erasure`), without which Customer.io
would keep ignoring the person.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update

from cioguard.audit.schema import deletion_requests as dr
from cioguard.audit.schema import tombstones
from cioguard.audit.store import AuditEntry, AuditStore, utcnow
from cioguard.erasure.requests import DeletionStatus, get_status
from cioguard.errors import InvalidInputError

MAX_LIFT_REASON_CHARS = 180  # the audit detail column holds 200


def lift(store: AuditStore, request_id: str, *, person_hash: str, reason: str) -> DeletionStatus:
    """Remove the tombstone of a completed request and record why; the request as it is now.

    ``person_hash`` must be the request's (the caller proves it knows the person). Raises
    ``LookupError`` for an unknown request and :class:`InvalidInputError` when the request is
    not completed, names someone else, or the reason is missing. Lifting twice is harmless.
    """
    why = _reason(reason)
    with store.transaction() as conn:
        row = conn.execute(select(dr).where(dr.c.request_id == request_id)).first()
        if row is None:
            raise LookupError(f"no deletion request with id {request_id}")
        if row.person_hash != person_hash:
            raise InvalidInputError("the person id given is not the person of this request")
        if row.state != "completed":
            raise InvalidInputError(f"only a completed request can be lifted (it is {row.state})")
        if row.lifted_at is None:
            now = utcnow()
            conn.execute(delete(tombstones).where(tombstones.c.person_hash == person_hash))
            conn.execute(update(dr).where(dr.c.request_id == request_id).values(lifted_at=now))
            store.append(
                conn,
                AuditEntry(
                    kind="deletion_request", outcome="lifted", person_hash=person_hash,
                    request_id=request_id, detail=f"tombstone lifted: {why}",
                ),
            )  # fmt: skip
    status = get_status(store, request_id)
    assert status is not None
    return status


def _reason(reason: object) -> str:
    """Why the person's tombstone goes: required, short, whitespace-normalized (no PII)."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInputError("a lift needs a reason")
    why = " ".join(reason.split())
    if len(why) > MAX_LIFT_REASON_CHARS:
        raise InvalidInputError(
            f"the lift reason is longer than {MAX_LIFT_REASON_CHARS} characters"
        )
    return why
