"""Jobs that will not succeed as they are: kept (sealed) for inspection and replay.

A dead letter holds the job's sealed payload (ciphertext), its keyed person hash and the error
class and status, never a readable payload. Recording one writes the job's final audit row in
the same transaction and raises a Sentry event (no PII: ids and classes only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sentry_sdk
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cioguard.audit.schema import dead_letters
from cioguard.audit.store import AuditEntry, AuditStore, utcnow

log = logging.getLogger("cioguard.delivery.deadletters")


ERASED_PAYLOAD = ""
"""What an erased person's dead letter keeps of its payload: nothing."""


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
    erased_at: datetime | None = None


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


def erase_payloads(conn: Connection, store: AuditStore, person_hashes: Sequence[str]) -> int:
    """Destroy the sealed payloads of these people's dead letters, keeping the metadata (job id,
    kind, keyed hash, error, times), and record it per person; returns how many were destroyed.

    Called in the transaction that completes their erasure: a dead letter must not keep an
    erased person's data (the key that opens it may be kept for years by key rotation).
    """
    now = utcnow()
    rows = conn.execute(
        select(dead_letters.c.person_hash, func.count())
        .where(dead_letters.c.person_hash.in_(list(person_hashes)))
        .where(dead_letters.c.erased_at.is_(None))
        .group_by(dead_letters.c.person_hash)
    ).all()
    if not rows:
        return 0
    conn.execute(
        update(dead_letters)
        .where(dead_letters.c.person_hash.in_([r[0] for r in rows]))
        .where(dead_letters.c.erased_at.is_(None))
        .values(sealed=ERASED_PAYLOAD, erased_at=now)
    )
    store.append_many(
        conn,
        [
            AuditEntry(
                kind="dead_letter",
                outcome="erased",
                person_hash=str(hashed),
                detail=f"{count} dead-letter payload(s) destroyed by the erasure",
            )
            for hashed, count in rows
        ],
    )
    return sum(int(count) for _, count in rows)


def purge(store: AuditStore, *, before: datetime, dry_run: bool = False) -> int:
    """Delete dead letters created before ``before`` (the retention period); returns how many."""
    old = dead_letters.c.created_at < before
    with store.transaction() as conn:
        count = int(conn.scalar(select(func.count()).where(old)) or 0)
        if not dry_run and count:
            conn.execute(delete(dead_letters).where(old))
    return count


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
