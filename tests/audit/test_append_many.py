"""The batched append writes exactly what SQLAlchemy's own insert would, on SQLite and PostgreSQL.

``AuditStore.append_many`` sends one DBAPI ``executemany`` with values run through each column's
bind processor (not ``conn.execute(insert(audit_log), rows)``); these tests check that the rows
read back are the same as the ones SQLAlchemy's insert writes, that the hash is
:func:`row_digest`'s, and that ``cioguard audit verify``'s walk accepts the chain.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from cioguard.audit.chain import verify
from cioguard.audit.schema import audit_log
from cioguard.audit.store import AuditEntry, AuditStore, row_digest
from tests.conftest import PG_URL

ENTRIES = [
    AuditEntry(kind="identify", outcome="delivered", person_hash="a" * 64, job_id="job-1",
               final=True, attempts=2, http_status=200, policy_version="default-1"),
    AuditEntry(kind="delete", outcome="received", request_id="req-1", detail="d\u00e9tail \"q\""),
    AuditEntry(kind="track", outcome="dead_lettered", job_id="job-2", final=True,
               error_class="PermanentError", http_status=400),
]  # fmt: skip
AT = datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def pg_store() -> Iterator[AuditStore]:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"cioguard_append_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        pytest.skip("PostgreSQL is not reachable")
    store = AuditStore.from_url(PG_URL.rsplit("/", 1)[0] + f"/{name}")
    store.migrate()
    yield store
    store.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def check_same_as_sqlalchemy_insert(store: AuditStore) -> None:
    with store.transaction() as conn:
        seqs = store.append_many(conn, ENTRIES, at=AT)
    assert seqs == [1, 2, 3]
    ours = list(store.rows())
    assert all(row_digest(r) == r["row_hash"] for r in ours)
    # the same rows through SQLAlchemy's own insert, at other seqs, read back alike
    with store.transaction() as conn:
        conn.execute(audit_log.delete())
        conn.execute(insert(audit_log), [{**r, "final_job_id": None} for r in ours])
    theirs = list(store.rows())
    for mine, reference in zip(ours, theirs, strict=True):
        assert {**mine, "final_job_id": None} == reference
    with store.transaction() as conn:  # back to what append_many wrote, and the chain verifies
        conn.execute(audit_log.delete())
        conn.execute(insert(audit_log), ours)
    result = verify(store)
    assert result.ok and result.rows_checked == 3


def check_a_duplicate_final_row_rolls_the_batch_back(store: AuditStore) -> None:
    with store.transaction() as conn:
        store.append_many(conn, ENTRIES[:1])
    with pytest.raises(IntegrityError), store.transaction() as conn:
        store.append_many(conn, [ENTRIES[2], ENTRIES[0]])  # job-1 has its final row already
    with store.reading() as conn:
        assert conn.scalar(select(audit_log.c.job_id).where(audit_log.c.seq == 2)) is None
    assert store.head()["seq"] == 1
    assert store.record(ENTRIES[2]) and verify(store).ok


def test_sqlite_rows_are_sqlalchemys(sqlite_store: AuditStore) -> None:
    check_same_as_sqlalchemy_insert(sqlite_store)


def test_sqlite_duplicate_final_row(sqlite_store: AuditStore) -> None:
    check_a_duplicate_final_row_rolls_the_batch_back(sqlite_store)


@pytest.mark.postgres
def test_postgresql_rows_are_sqlalchemys(pg_store: AuditStore) -> None:
    check_same_as_sqlalchemy_insert(pg_store)


@pytest.mark.postgres
def test_postgresql_duplicate_final_row(pg_store: AuditStore) -> None:
    check_a_duplicate_final_row_rolls_the_batch_back(pg_store)
