"""Small test helpers shared by the e2e tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sqlalchemy import func, select

from cioguard.audit.schema import audit_log
from cioguard.audit.store import AuditStore


def final_rows(store: AuditStore) -> list[dict[str, object]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.final_job_id.is_not(None))).all()
    return [dict(r._mapping) for r in rows]


def final_count(store: AuditStore) -> int:
    with store.engine.connect() as conn:
        query = select(func.count()).where(audit_log.c.final_job_id.is_not(None))
        return int(conn.scalar(query) or 0)


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float = 120, what: str = "condition"
) -> None:
    """Poll until ``predicate`` holds; fails the test with ``what`` if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_finals(store: AuditStore, count: int, *, timeout_s: float = 120) -> None:
    wait_until(lambda: final_count(store) >= count, timeout_s=timeout_s, what=f"{count} final rows")


def delivered_in_log(text: str) -> int:
    """Jobs a worker log reports delivered: the sum over its one-per-batch "batch settled"
    lines (per-job outcome lines are at DEBUG)."""
    total = 0
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("msg") == "batch settled":
            counts = dict(part.split("=", 1) for part in str(entry.get("outcomes", "")).split())
            total += int(counts.get("delivered", 0))
    return total
