"""Checking and trimming the audit log's hash chain: ``cioguard audit verify`` and ``purge``.

Verification walks the rows in sequence order from the anchor (genesis, or the last purged row)
and checks, for each row, that its sequence number follows the previous one, that its
``prev_hash`` is the previous row's hash and that its ``row_hash`` is the digest of its own
fields. A modified row fails the digest; a deleted row leaves a gap and a broken link; an
inserted or reordered row breaks the numbering, the link or the digest (the sequence number is
hashed). The last row must then be the recorded head, or rows were cut off the end.

Purging removes the oldest rows (older than the retention period) as a prefix of the chain and
moves the anchor to the last removed row's hash, in the same transaction that appends a
``purge`` row naming that anchor. Verification checks the anchor against that row, so moving
the anchor by hand to hide rows shows up too.

Note: tamper-evident, not tamper-proof (see :mod:`cioguard.audit.store`): whoever can write the
database can rebuild the whole chain. Publish the head hash that ``verify`` prints somewhere the
worker cannot write; a rebuilt chain no longer contains the published hash at that seq.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from cioguard.audit.schema import audit_log, chain_head, deletion_requests
from cioguard.audit.store import GENESIS_HASH, AuditEntry, AuditStore, row_digest, utcnow

PURGE_KIND = "audit"
PURGE_OUTCOME = "purged"
_ANCHOR_DETAIL = re.compile(r"anchor (?P<seq>\d+) (?P<hash>[0-9a-f]{64})")


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify`. ``bad_seq``/``problem`` are set when the chain is broken."""

    rows_checked: int
    head_seq: int
    head_hash: str
    anchor_seq: int
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_seq is None


class _Broken(Exception):
    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(problem)
        self.seq, self.problem = seq, problem


def verify(store: AuditStore) -> Verification:
    """Walk the whole chain once (streaming); stop at the first bad row."""
    with store.reading(snapshot=True) as conn:
        head = conn.execute(select(chain_head).where(chain_head.c.id == 1)).one()
        checked = 0
        try:
            _check_anchor(conn, int(head.anchor_seq), str(head.anchor_hash))
            rows = conn.execute(
                select(audit_log).order_by(audit_log.c.seq).execution_options(yield_per=1000)
            )
            checked, last_seq, last_hash = _walk(
                (dict(r._mapping) for r in rows), int(head.anchor_seq), str(head.anchor_hash)
            )
            _check_head(int(head.seq), str(head.hash), last_seq, last_hash)
        except _Broken as broken:
            return Verification(
                checked, int(head.seq), str(head.hash), int(head.anchor_seq),
                broken.seq, broken.problem,
            )  # fmt: skip
    return Verification(checked, int(head.seq), str(head.hash), int(head.anchor_seq))


def _walk(
    rows: Iterable[dict[str, Any]], anchor_seq: int, anchor_hash: str
) -> tuple[int, int, str]:
    """Check each row against its predecessor; returns (rows checked, last seq, last hash)."""
    expected_seq, prev_hash, checked = anchor_seq + 1, anchor_hash, 0
    for row in rows:
        seq = int(row["seq"])
        if seq <= anchor_seq:
            raise _Broken(seq, f"row {seq} is at or before the purge anchor (seq {anchor_seq})")
        if seq != expected_seq:
            raise _Broken(seq, f"row {seq} follows row {expected_seq - 1}: rows are missing")
        if row["prev_hash"] != prev_hash:
            raise _Broken(seq, f"row {seq} does not link to the previous row's hash")
        if row_digest(row) != row["row_hash"]:
            raise _Broken(seq, f"row {seq} does not match its hash: it was modified")
        prev_hash, expected_seq, checked = row["row_hash"], seq + 1, checked + 1
    return checked, expected_seq - 1, prev_hash


def _check_head(head_seq: int, head_hash: str, last_seq: int, last_hash: str) -> None:
    if last_seq < head_seq:
        raise _Broken(last_seq + 1, f"rows {last_seq + 1}-{head_seq} are missing at the end")
    if last_seq > head_seq:
        raise _Broken(head_seq + 1, f"row {head_seq + 1} was added after the recorded head")
    if last_hash != head_hash:
        raise _Broken(head_seq, f"row {head_seq} does not match the recorded head hash")


def _check_anchor(conn: Connection, anchor_seq: int, anchor_hash: str) -> None:
    """The anchor must be genesis, or exactly what the latest purge row recorded."""
    latest = conn.execute(
        select(audit_log.c.seq, audit_log.c.detail)
        .where(audit_log.c.kind == PURGE_KIND, audit_log.c.outcome == PURGE_OUTCOME)
        .order_by(audit_log.c.seq.desc())
        .limit(1)
    ).first()
    if latest is None:
        if anchor_seq != 0 or anchor_hash != GENESIS_HASH:
            raise _Broken(anchor_seq, "the chain anchor moved, but no purge row records it")
        return
    recorded = _ANCHOR_DETAIL.search(latest.detail or "")
    if recorded is None or (int(recorded["seq"]), recorded["hash"]) != (anchor_seq, anchor_hash):
        raise _Broken(latest.seq, f"the chain anchor differs from purge row {latest.seq}")


def check_published(store: AuditStore, seq: int, digest: str) -> str | None:
    """None if the chain still holds ``digest`` at ``seq`` (a head published earlier); else why.

    Run after :func:`verify`: a chain that verifies but no longer holds a published hash was
    rebuilt. A published seq that was purged since can still be checked if it is the anchor.
    """
    with store.reading() as conn:
        found = conn.scalar(select(audit_log.c.row_hash).where(audit_log.c.seq == seq))
        if found is None:
            head = conn.execute(select(chain_head).where(chain_head.c.id == 1)).one()
            if seq != int(head.anchor_seq):
                return f"row {seq} is not in the chain (purged, or never written)"
            found = head.anchor_hash
    return None if found == digest else f"row {seq} no longer has the published hash"


@dataclass(frozen=True)
class Purge:
    """What :func:`purge` removed (or would remove, with ``dry_run``)."""

    cutoff: datetime
    rows: int
    first_seq: int | None
    last_seq: int | None
    requests: int
    dry_run: bool
    purge_seq: int | None = None


def purge(
    store: AuditStore, *, retention_days: int, dry_run: bool = False, now: datetime | None = None
) -> Purge:
    """Delete audit rows and closed erasure requests older than ``retention_days``.

    Rows go as a prefix of the chain (everything before the first row that is still inside the
    retention period), so the rest stays verifiable from the new anchor. Open requests are kept
    whatever their age; tombstones are always kept (they stop a resurrection, and hold only the
    keyed hash).
    """
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    with store.transaction() as conn:
        head = conn.execute(select(chain_head).where(chain_head.c.id == 1).with_for_update()).one()
        last = _last_purgeable(conn, cutoff, int(head.seq))
        first = int(head.anchor_seq) + 1
        rows = max(0, last - first + 1) if last is not None else 0
        old_requests = _old_closed_requests(cutoff)
        requests = int(conn.scalar(select(func.count()).where(old_requests)) or 0)
        if dry_run or (rows == 0 and requests == 0):
            return Purge(cutoff, rows, first if rows else None, last if rows else None,
                         requests, dry_run)  # fmt: skip
        anchor_seq, anchor_hash = int(head.anchor_seq), str(head.anchor_hash)
        if rows:
            assert last is not None
            anchor_seq = last
            anchor_hash = str(
                conn.scalar(select(audit_log.c.row_hash).where(audit_log.c.seq == anchor_seq))
            )
            conn.execute(delete(audit_log).where(audit_log.c.seq <= anchor_seq))
            conn.execute(
                update(chain_head)
                .where(chain_head.c.id == 1)
                .values(anchor_seq=anchor_seq, anchor_hash=anchor_hash)
            )
        conn.execute(delete(deletion_requests).where(old_requests))
        detail = f"before {cutoff:%Y-%m-%d}: {rows} rows, {requests} requests; "
        detail += f"anchor {anchor_seq} {anchor_hash}"
        seq = store.append(conn, AuditEntry(kind=PURGE_KIND, outcome=PURGE_OUTCOME, detail=detail))
    return Purge(cutoff, rows, first if rows else None, last if rows else None, requests,
                 False, seq)  # fmt: skip


def _last_purgeable(conn: Connection, cutoff: datetime, head_seq: int) -> int | None:
    """The highest seq such that it and every row before it are older than ``cutoff``."""
    first_kept = conn.scalar(select(func.min(audit_log.c.seq)).where(audit_log.c.at >= cutoff))
    last = (int(first_kept) - 1) if first_kept is not None else head_seq
    oldest = conn.scalar(select(func.min(audit_log.c.seq)))
    if oldest is None or last < int(oldest):
        return None
    return last


def _old_closed_requests(cutoff: datetime) -> Any:
    return (deletion_requests.c.state.in_(("completed", "failed"))) & (
        deletion_requests.c.updated_at < cutoff
    )
