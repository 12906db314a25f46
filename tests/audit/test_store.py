"""The audit store: chained appends, one final row per job, reads that fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from cioguard.audit.store import GENESIS_HASH, AuditEntry, AuditStore, row_digest
from cioguard.errors import AuditUnavailableError


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    return s


def test_a_fresh_store_starts_at_genesis(store: AuditStore) -> None:
    head = store.head()
    assert (head["seq"], head["hash"]) == (0, GENESIS_HASH)
    assert (head["anchor_seq"], head["anchor_hash"]) == (0, GENESIS_HASH)


def test_migrate_is_idempotent(store: AuditStore) -> None:
    store.record(AuditEntry(kind="identify", outcome="delivered", job_id="j1", final=True))
    store.migrate()
    assert store.head()["seq"] == 1


def test_each_row_links_to_the_previous_one(store: AuditStore) -> None:
    for i in range(3):
        store.record(AuditEntry(kind="track", outcome="delivered", job_id=f"j{i}", final=True))
    rows = list(store.rows())
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert [r["prev_hash"] for r in rows[1:]] == [r["row_hash"] for r in rows[:-1]]
    assert all(row_digest(r) == r["row_hash"] for r in rows)
    assert store.head()["hash"] == rows[-1]["row_hash"]


def test_append_many_chains_like_single_appends(store: AuditStore) -> None:
    entries = [AuditEntry(kind="delete", outcome="received", request_id=f"r{i}") for i in range(4)]
    with store.transaction() as conn:
        seqs = store.append_many(conn, entries)
        assert store.append_many(conn, []) == []
    assert seqs == [1, 2, 3, 4]
    rows = list(store.rows())
    assert [r["prev_hash"] for r in rows[1:]] == [r["row_hash"] for r in rows[:-1]]
    assert all(row_digest(r) == r["row_hash"] for r in rows)


def test_only_one_final_row_per_job(store: AuditStore) -> None:
    entry = AuditEntry(kind="identify", outcome="delivered", job_id="job-1", final=True)
    assert store.record(entry) is True
    assert store.record(entry) is False
    assert store.has_final("job-1") and not store.has_final("job-2")
    final = store.final_row("job-1")
    assert final is not None and final["outcome"] == "delivered"
    assert store.head()["seq"] == 1  # the refused row did not advance the chain


def test_non_final_rows_of_a_job_are_not_limited(store: AuditStore) -> None:
    for outcome in ("in_progress", "in_progress"):
        assert store.record(AuditEntry(kind="delete", outcome=outcome, job_id="job-1"))
    assert not store.has_final("job-1")


def test_migrate_adds_a_nullable_column_missing_from_an_old_table(tmp_path: Path) -> None:
    store = AuditStore.from_url(f"sqlite:///{tmp_path / 'old.db'}")
    store.migrate()
    with store.transaction() as conn:
        conn.execute(text("ALTER TABLE deletion_requests DROP COLUMN extension_reason"))
    store.migrate()
    with store.reading() as conn:
        columns = {r[1] for r in conn.execute(text("PRAGMA table_info(deletion_requests)"))}
    assert "extension_reason" in columns


def test_an_unreachable_store_raises_audit_unavailable_on_reads_and_writes(
    tmp_path: Path,
) -> None:
    store = AuditStore.from_url(f"sqlite:///{tmp_path / 'missing-dir' / 'audit.db'}")
    with pytest.raises(AuditUnavailableError):
        store.has_final("job-1")
    with pytest.raises(AuditUnavailableError):
        store.record(AuditEntry(kind="identify", outcome="delivered"))
    with pytest.raises(AuditUnavailableError):
        store.head()


def test_reads_do_not_block_a_writer(store: AuditStore) -> None:
    """A read in progress takes no write lock (SQLite: deferred transaction in WAL mode)."""
    with store.reading() as conn:
        conn.execute(text("SELECT count(*) FROM audit_log")).scalar()
        assert store.record(AuditEntry(kind="track", outcome="delivered", job_id="j", final=True))
    assert store.has_final("j")
