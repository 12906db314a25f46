"""Opening erasure requests: one per person (keyed hash), reused while open or completed, with the
person's tombstone row and a ``received`` audit row in the same transaction.

A failed request is not reused: asking again after a failure opens a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from cioguard.audit.schema import deletion_requests, tombstones
from cioguard.audit.store import AuditEntry, AuditStore, utcnow
from cioguard.broker.jobs import new_job_id
from cioguard.erasure.deadlines import (
    Regime,
    due_date,
    regime_for,
)
from cioguard.erasure.requests import _chunks, _existing_tombstones

Sealer = Callable[[str, "OpenedRequest", dict[str, Any]], str]
"""Seals the erase job of a new request: ``(person_hash, opened, erasure) -> sealed``."""


@dataclass(frozen=True)
class OpenedRequest:
    """The request a call to :func:`open_request` ended up with (new or reused)."""

    request_id: str
    job_id: str
    created: bool
    state: str
    sealed: str | None = None  # its erase job, as kept in the outbox (None: an older request)


def erasure_info(row: Mapping[str, Any]) -> dict[str, Any]:
    """What an erase job carries of its request, so any worker can record and carry it out."""
    return {
        "regime": row["regime"], "reason": row["reason"], "manner": row["manner"],
        "mode": row["mode"], "received_at": _iso(row["received_at"]),
        "due_at": _iso(row["due_at"]),
    }  # fmt: skip


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def open_request(
    store: AuditStore,
    person_hash: str,
    *,
    reason: str,
    manner: str,
    mode: str,
    default_regime: Regime = "gdpr",
    seal: Sealer | None = None,
) -> OpenedRequest:
    """Record a request and the tombstone; an open or completed request is reused, not doubled."""
    opened = open_requests(
        store, [person_hash], reason=reason, manner=manner, mode=mode,
        default_regime=default_regime, seal=seal,
    )  # fmt: skip
    return opened[0]


def open_requests(
    store: AuditStore,
    person_hashes: Sequence[str],
    *,
    reason: str,
    manner: str,
    mode: str,
    default_regime: Regime = "gdpr",
    seal: Sealer | None = None,
) -> list[OpenedRequest]:
    """:func:`open_request` for many people in one transaction; results in input order.

    With ``seal``, each new request's erase job is sealed and kept with the request in the same
    transaction (the outbox, :mod:`cioguard.erasure.outbox`): if publishing it fails, workers
    publish it later, so a recorded request is never lost between the store and the broker.

    A hash repeated in ``person_hashes`` gets the same request each time (``created`` only on
    the first). Requests, tombstones and audit rows are inserted in bulk, so 10,000 requests
    take seconds (one transaction per call: the caller chooses the chunk size).
    """
    with store.transaction() as conn:
        latest = _latest_for(conn, set(person_hashes))
        now = utcnow()
        regime = regime_for(reason, default_regime)
        results: list[OpenedRequest] = []
        new_rows: list[dict[str, Any]] = []
        seen: dict[str, OpenedRequest] = {}
        for person_hash in person_hashes:
            if person_hash in seen:
                results.append(_reused(seen[person_hash]))
                continue
            existing = latest.get(person_hash)
            if existing is not None and existing["state"] != "failed":
                opened = OpenedRequest(
                    existing["request_id"], existing["job_id"], False, existing["state"],
                    existing["sealed_job"],
                )  # fmt: skip
            else:
                opened = OpenedRequest(new_job_id(), new_job_id(), True, "received")
                row: dict[str, Any] = {
                    "request_id": opened.request_id, "person_hash": person_hash,
                    "reason": reason, "regime": regime, "manner": manner, "mode": mode,
                    "state": "received", "attempts": 0, "received_at": now,
                    "due_at": due_date(regime, now), "updated_at": now, "job_id": opened.job_id,
                }  # fmt: skip
                if seal is not None:
                    row["sealed_job"] = seal(person_hash, opened, erasure_info(row))
                    opened = replace(opened, sealed=row["sealed_job"])
                new_rows.append(row)
            seen[person_hash] = opened
            results.append(opened)
        if new_rows:
            _insert_new(store, conn, new_rows, now, detail=f"{regime} {manner} {mode}")
    return results


def _reused(opened: OpenedRequest) -> OpenedRequest:
    return replace(opened, created=False)


def record_from_job(
    store: AuditStore,
    *,
    request_id: str,
    job_id: str,
    person_hash: str,
    erasure: Mapping[str, Any] | None,
    default_mode: str,
) -> bool:
    """Record a request this store does not know, from its erase job; False if it exists.

    The application may write its requests to another store than the worker's (or its copy of
    the row may be lost): the job carries what the request needs, so the worker records it
    itself, with an audit row saying so, and carries it out. A job from before jobs carried
    their request is recorded under the worker's mode and the GDPR deadline from now.
    """
    now = utcnow()
    info = dict(erasure or {})
    regime: Regime = "ccpa" if info.get("regime") == "ccpa" else "gdpr"
    received = _parse_time(info.get("received_at")) or now
    row: dict[str, Any] = {
        "request_id": request_id, "person_hash": person_hash,
        "reason": str(info.get("reason") or "erasure"), "regime": regime,
        "manner": str(info.get("manner") or "api"), "mode": str(info.get("mode") or default_mode),
        "state": "received", "attempts": 0, "received_at": received,
        "due_at": _parse_time(info.get("due_at")) or due_date(regime, received),
        "updated_at": now, "job_id": job_id,
    }  # fmt: skip
    how = "from its erase job" if erasure else "from an erase job that carried no request"
    try:
        with store.transaction() as conn:
            _insert_new(store, conn, [row], now, detail=f"recorded by the worker {how}")
    except IntegrityError:
        return False
    return True


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _insert_new(
    store: AuditStore,
    conn: Connection,
    rows: list[dict[str, Any]],
    now: datetime,
    *,
    detail: str,
) -> None:
    conn.execute(insert(deletion_requests), rows)
    hashes = [str(r["person_hash"]) for r in rows]
    stoned = _existing_tombstones(conn, hashes)
    fresh = [
        {"person_hash": r["person_hash"], "request_id": r["request_id"], "created_at": now}
        for r in rows
        if r["person_hash"] not in stoned
    ]
    if fresh:
        conn.execute(insert(tombstones), fresh)
    store.append_many(conn, [_received_entry(r, detail) for r in rows], at=now)


def _received_entry(row: dict[str, object], detail: str) -> AuditEntry:
    return AuditEntry(
        kind="deletion_request", outcome="received", person_hash=str(row["person_hash"]),
        request_id=str(row["request_id"]), job_id=str(row["job_id"]), detail=detail,
    )  # fmt: skip


def _latest_for(conn: Connection, person_hashes: set[str]) -> dict[str, RowMapping]:
    """The most recent request of each hash that has one."""
    latest: dict[str, RowMapping] = {}
    for chunk in _chunks(sorted(person_hashes)):
        rows = conn.execute(
            select(deletion_requests)
            .where(deletion_requests.c.person_hash.in_(chunk))
            .order_by(deletion_requests.c.received_at, deletion_requests.c.request_id)
        )
        for row in rows:
            latest[row.person_hash] = row._mapping
    return latest
