"""Audit append micro-benchmark: milliseconds of one process per 1,000 final rows.

What a batched worker does per batch: one transaction that locks the chain head, appends one
hash-chained ``delivered`` row per job (:meth:`AuditStore.append_many`) and moves the head.
Measured on SQLite (a file in a temporary directory, WAL, as the worker runs it) and, when it
answers, PostgreSQL (``BENCH_PG_URL``), for batches of 100 rows (``CIOGUARD_BATCH_MAX_OPS``'s
default), as CPU time of this process and as wall time; then the chain is verified, so a faster
append that broke the chain would fail here. ``python -m bench audit_append``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import PG_ADMIN_URL, postgres_available, recorded, say, sized
from cioguard.audit.chain import verify
from cioguard.audit.store import AuditEntry, AuditStore

NAME = "audit_append"
BATCH = 100


def entries(start: int, count: int) -> list[AuditEntry]:
    return [
        AuditEntry(
            kind="identify",
            outcome="delivered",
            person_hash=f"{start + i:064x}",
            job_id=f"01JOB{start + i:021d}",
            final=True,
            attempts=1,
            http_status=200,
            policy_version="default-1",
        )
        for i in range(count)
    ]


def measure(store: AuditStore, rows: int) -> dict[str, float]:
    batches = [entries(start, BATCH) for start in range(0, rows, BATCH)]
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        with store.transaction() as conn:
            store.append_many(conn, batch)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    checked = verify(store)
    assert checked.ok and checked.rows_checked == rows, checked
    return {
        "cpu_ms_per_1000_rows": round(cpu * 1000 * 1000 / rows, 1),
        "wall_ms_per_1000_rows": round(wall * 1000 * 1000 / rows, 1),
    }


def _sqlite(rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cioguard-bench-audit-") as tmp:
        store = AuditStore.from_url(f"sqlite:///{Path(tmp) / 'audit.db'}")
        store.migrate()
        try:
            return measure(store, rows)
        finally:
            store.dispose()


def _postgres(rows: int) -> dict[str, Any]:
    """In a database of its own on ``BENCH_PG_URL``'s server, dropped afterwards."""
    if not postgres_available():
        return {"skipped": "no PostgreSQL answering at BENCH_PG_URL"}
    name = f"cioguard_bench_audit_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        store = AuditStore.from_url(url)
        store.migrate()
        try:
            return measure(store, rows)
        finally:
            store.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def main() -> dict[str, Any]:
    rows = sized(20_000, 2_000)
    with recorded(NAME) as result:
        result["setup"] = {"rows": rows, "batch": BATCH, "one transaction per": "batch"}
        result["sqlite"] = _sqlite(rows)
        say(f"{NAME}: sqlite {result['sqlite']}")
        result["postgres"] = _postgres(rows)
        say(f"{NAME}: postgres {result['postgres']}")
    return result


if __name__ == "__main__":
    main()
