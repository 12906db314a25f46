"""Records of erasure requests for a compliance request (CCPA §7101), as JSON lines or CSV.

One record per request with what §7101 asks to keep: the date of the request, its nature
(deletion) and the manner in which it was made, the date and nature of the response, and the
basis for any denial (for a failed request, the error class). The person appears only as the
keyed hash: an operator who knows an id finds its records with ``cioguard audit find``, nobody
else can tell whose they are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TextIO

from sqlalchemy import select

from cioguard.audit.schema import audit_log, deletion_requests
from cioguard.audit.store import AuditStore
from cioguard.erasure.requests import DeletionStatus

FIELDS = (
    "request_id", "person_hash", "request_date", "request_nature", "request_manner", "reason",
    "regime", "due_date", "extended_to", "extension_reason", "response_date", "response_nature",
    "denial_basis", "state", "mode", "attempts",
)  # fmt: skip
Record = dict[str, str | int | None]

_ERASED = {
    "suppress": "erased: profile deleted and identifier suppressed at Customer.io",
    "suppress_and_delete": "erased: identifier suppressed and profile deleted at Customer.io",
    "delete": "erased: profile deleted at Customer.io",
}
_CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def to_record(st: DeletionStatus, person_hash: str) -> Record:
    """The export record of one request."""
    if st.state == "completed":
        response_date, nature = st.completed_at, _ERASED.get(st.mode, "erased")
    elif st.state == "failed":
        response_date, nature = st.updated_at, "not erased: the erasure failed"
    else:
        response_date, nature = None, "pending"
    return {
        "request_id": st.request_id, "person_hash": person_hash,
        "request_date": _iso(st.received_at), "request_nature": "deletion",
        "request_manner": st.manner, "reason": st.reason, "regime": st.regime,
        "due_date": _iso(st.due_at), "extended_to": _iso(st.extended_to),
        "extension_reason": st.extension_reason, "response_date": _iso(response_date),
        "response_nature": nature,
        "denial_basis": st.error_class if st.state == "failed" else None,
        "state": st.state, "mode": st.mode, "attempts": st.attempts,
    }  # fmt: skip


def records(store: AuditStore, *, since: datetime | None = None) -> Iterator[Record]:
    """Every request received at or after ``since`` (all if None), oldest first."""
    query = select(deletion_requests).order_by(
        deletion_requests.c.received_at, deletion_requests.c.request_id
    )
    if since is not None:
        query = query.where(deletion_requests.c.received_at >= since)
    with store.reading() as conn:
        for row in conn.execute(query.execution_options(yield_per=1000)):
            yield to_record(DeletionStatus.from_row(row._mapping), row.person_hash)


def write_jsonl(rows: Iterable[Record], out: TextIO) -> int:
    count = 0
    for record in rows:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


def write_csv(rows: Iterable[Record], out: TextIO) -> int:
    """CSV with a header; text that a spreadsheet would run as a formula is quoted with ``'``."""
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for record in rows:
        writer.writerow({k: _cell(v) for k, v in record.items()})
        count += 1
    return count


def _cell(value: str | int | None) -> str | int:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def rows_for_person(store: AuditStore, person_hash: str) -> list[dict[str, object]]:
    """Every audit row of one keyed hash, in chain order (``cioguard audit find``)."""
    query = select(audit_log).where(audit_log.c.person_hash == person_hash)
    with store.reading() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(audit_log.c.seq))]


def requests_for_person(store: AuditStore, person_hash: str) -> list[DeletionStatus]:
    """Every erasure request of one keyed hash, oldest first."""
    query = select(deletion_requests).where(deletion_requests.c.person_hash == person_hash)
    with store.reading() as conn:
        rows = conn.execute(query.order_by(deletion_requests.c.received_at))
        return [DeletionStatus.from_row(r._mapping) for r in rows]
