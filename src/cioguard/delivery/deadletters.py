"""Jobs that will not succeed as they are: kept (sealed) for inspection and replay.

A dead letter holds the job's sealed payload (ciphertext), its keyed person hash and the error
class and status, never a readable payload. Recording one writes the job's final audit row in
the same transaction and raises a Sentry event (no PII: ids and classes only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sentry_sdk
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from cioguard.audit.schema import dead_letters
from cioguard.audit.store import AuditEntry, AuditStore, utcnow

log = logging.getLogger("cioguard.delivery.deadletters")


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    kind: str
    person_hash: str
    error_class: str | None
    http_status: int | None
    created_at: datetime
    replayed_at: datetime | None
    sealed: str


def record(
    store: AuditStore,
    *,
    job_id: str,
    kind: str,
    person_hash: str,
    sealed: str,
    error_class: str,
    http_status: int | None,
    attempts: int,
    policy_version: str | None = None,
) -> bool:
    """Store the dead letter and the job's final row; False if the job was already final."""
    try:
        with store.transaction() as conn:
            conn.execute(
                insert(dead_letters).values(
                    job_id=job_id, kind=kind, person_hash=person_hash, sealed=sealed,
                    error_class=error_class, http_status=http_status, created_at=utcnow(),
                )
            )  # fmt: skip
            store.append(
                conn,
                AuditEntry(
                    kind=kind, outcome="dead_lettered", person_hash=person_hash, job_id=job_id,
                    final=True, attempts=attempts, error_class=error_class,
                    http_status=http_status, policy_version=policy_version,
                ),
            )  # fmt: skip
    except IntegrityError:
        return False
    _alert(job_id, kind, error_class, http_status)
    return True


def _alert(job_id: str, kind: str, error_class: str, http_status: int | None) -> None:
    log.warning(  # warning: Sentry's logging integration would make an error a second event
        "job dead-lettered",
        extra={"job_id": job_id, "kind": kind, "error_class": error_class, "status": http_status},
    )
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("cioguard.kind", kind)
        scope.set_tag("cioguard.error_class", error_class)
        scope.set_tag("cioguard.http_status", str(http_status))
        scope.set_extra("job_id", job_id)
        sentry_sdk.capture_message(f"cioguard: {kind} job dead-lettered ({error_class})", "error")


def list_all(store: AuditStore, *, include_replayed: bool = False) -> list[DeadLetter]:
    query = select(dead_letters).order_by(dead_letters.c.created_at)
    if not include_replayed:
        query = query.where(dead_letters.c.replayed_at.is_(None))
    with store.engine.connect() as conn:
        return [DeadLetter(**row._mapping) for row in conn.execute(query)]


def mark_replayed(store: AuditStore, job_id: str, new_job_id: str) -> None:
    with store.transaction() as conn:
        row = conn.execute(select(dead_letters).where(dead_letters.c.job_id == job_id)).one()
        conn.execute(
            update(dead_letters).where(dead_letters.c.job_id == job_id).values(replayed_at=utcnow())
        )
        store.append(
            conn,
            AuditEntry(
                kind=row.kind, outcome="replayed", person_hash=row.person_hash, job_id=job_id,
                detail=f"replayed as {new_job_id}",
            ),
        )  # fmt: skip
