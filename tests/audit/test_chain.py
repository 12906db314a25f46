"""Chain verification catches every kind of tampering; purge keeps the chain verifiable."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, insert, select, text, update
from sqlalchemy.exc import OperationalError

from cioguard.audit.chain import check_published, purge, verify
from cioguard.audit.schema import audit_log, chain_head, deletion_requests, tombstones
from cioguard.audit.store import AuditEntry, AuditStore, row_digest, utcnow
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from tests.conftest import PG_URL

ROWS = 10


def _fill(store: AuditStore, count: int = ROWS, *, days_ago: int = 0) -> None:
    at = utcnow() - timedelta(days=days_ago)
    for i in range(count):
        with store.transaction() as conn:
            store.append(
                conn,
                AuditEntry(kind="identify", outcome="delivered", job_id=f"j{days_ago}-{i}",
                           final=True, person_hash=f"{i:064x}"),
                at=at,
            )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    _fill(s)
    return s


def _row(store: AuditStore, seq: int) -> dict[str, Any]:
    with store.reading() as conn:
        return dict(conn.execute(select(audit_log).where(audit_log.c.seq == seq)).one()._mapping)


def _renumber(store: AuditStore, old: int, new: int) -> None:
    with store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == old).values(seq=new))


def _forge(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A row an attacker computed correctly from its own fields (valid digest)."""
    forged = {**row, **changes}
    forged["row_hash"] = row_digest(forged)
    return forged


def test_an_untouched_chain_verifies_and_reports_its_head(store: AuditStore) -> None:
    result = verify(store)
    assert result.ok and result.rows_checked == ROWS
    head = store.head()
    assert (
        (result.head_seq, result.head_hash) == (head["seq"], head["hash"]) == (ROWS, head["hash"])
    )


def test_an_empty_chain_verifies(tmp_path: Path) -> None:
    empty = AuditStore.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    empty.migrate()
    assert verify(empty).ok and verify(empty).rows_checked == 0


def test_a_modified_row_is_named(store: AuditStore) -> None:
    with store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 5).values(outcome="dropped"))
    result = verify(store)
    assert not result.ok and result.bad_seq == 5
    assert result.problem is not None and "modified" in result.problem


def test_a_modified_timestamp_is_named(store: AuditStore) -> None:
    with store.transaction() as conn:
        conn.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(at=utcnow() - timedelta(days=1))
        )
    assert verify(store).bad_seq == 3


def test_a_row_rehashed_after_modification_breaks_the_next_link(store: AuditStore) -> None:
    forged = _forge(_row(store, 4), outcome="dropped")
    with store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(**forged))
    result = verify(store)
    assert result.bad_seq == 5 and "link" in (result.problem or "")


def test_a_deleted_row_is_named(store: AuditStore) -> None:
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 6))
    result = verify(store)
    assert result.bad_seq == 7 and "missing" in (result.problem or "")


def test_rows_cut_off_the_end_are_detected(store: AuditStore) -> None:
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 9))
    result = verify(store)
    assert result.bad_seq == 9 and "end" in (result.problem or "")


def test_a_row_inserted_in_the_middle_is_named(store: AuditStore) -> None:
    for seq in range(ROWS, 5, -1):
        _renumber(store, seq, seq + 1)
    fifth = _row(store, 5)
    forged = _forge(fifth, seq=6, job_id="forged", final_job_id="forged",
                    prev_hash=fifth["row_hash"])  # fmt: skip
    with store.transaction() as conn:
        conn.execute(insert(audit_log).values(**forged))
    result = verify(store)
    assert result.bad_seq == 7  # the forged row links well; the one after it no longer does


def test_a_row_appended_behind_the_heads_back_is_named(store: AuditStore) -> None:
    last = _row(store, ROWS)
    forged = _forge(last, seq=ROWS + 1, job_id="x", final_job_id="x", prev_hash=last["row_hash"])
    with store.transaction() as conn:
        conn.execute(insert(audit_log).values(**forged))
    result = verify(store)
    assert result.bad_seq == ROWS + 1 and "after the recorded head" in (result.problem or "")


def test_reordered_rows_are_named(store: AuditStore) -> None:
    _renumber(store, 4, 1000)
    _renumber(store, 5, 4)
    _renumber(store, 1000, 5)
    assert verify(store).bad_seq == 4


def test_a_rewritten_head_is_detected(store: AuditStore) -> None:
    with store.transaction() as conn:
        conn.execute(update(chain_head).values(hash="f" * 64))
    assert verify(store).bad_seq == ROWS


def test_an_anchor_moved_without_a_purge_row_is_detected(store: AuditStore) -> None:
    third = _row(store, 3)
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq <= 3))
        conn.execute(update(chain_head).values(anchor_seq=3, anchor_hash=third["row_hash"]))
    result = verify(store)
    assert not result.ok and "anchor" in (result.problem or "")


# -- purge -----------------------------------------------------------------------------------


@pytest.fixture
def aged(tmp_path: Path) -> AuditStore:
    """Rows 1-6 are 800 days old, 7-10 are today."""
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'aged.db'}")
    s.migrate()
    _fill(s, 6, days_ago=800)
    _fill(s, 4)
    return s


def test_purge_removes_the_old_prefix_and_the_chain_still_verifies(aged: AuditStore) -> None:
    sixth = _row(aged, 6)
    result = purge(aged, retention_days=730)
    assert (result.rows, result.first_seq, result.last_seq) == (6, 1, 6)
    assert [r["seq"] for r in aged.rows()] == [7, 8, 9, 10, 11]
    head = aged.head()
    assert (head["anchor_seq"], head["anchor_hash"]) == (6, sixth["row_hash"])
    purge_row = _row(aged, 11)
    assert (purge_row["kind"], purge_row["outcome"]) == ("audit", "purged")
    assert verify(aged).ok


def test_purge_twice_keeps_the_chain_verifiable(aged: AuditStore) -> None:
    purge(aged, retention_days=730)
    later = purge(aged, retention_days=730, now=utcnow() + timedelta(days=800))
    assert later.rows == 5 and later.purge_seq == 12
    assert verify(aged).ok and verify(aged).rows_checked == 1


def test_a_dry_run_changes_nothing(aged: AuditStore) -> None:
    before = aged.head()
    result = purge(aged, retention_days=730, dry_run=True)
    assert result.rows == 6 and result.dry_run and result.purge_seq is None
    assert aged.head() == before and len(list(aged.rows())) == ROWS


def test_nothing_to_purge_appends_nothing(store: AuditStore) -> None:
    result = purge(store, retention_days=730)
    assert result.rows == 0 and result.purge_seq is None and store.head()["seq"] == ROWS


def test_purge_removes_old_closed_requests_and_keeps_open_ones_and_tombstones(
    tmp_path: Path,
) -> None:
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'requests.db'}")
    s.migrate()
    done, still_open = ("a" * 64, "b" * 64)
    opened = opening.open_requests(s, [done, still_open], reason="erasure", manner="api",
                                mode="suppress")  # fmt: skip
    deletions.transition(s, opened[0].request_id, "completed", job_id=opened[0].job_id, final=True)
    result = purge(s, retention_days=730, now=utcnow() + timedelta(days=800))
    assert result.requests == 1 and result.rows == 3
    with s.reading() as conn:
        left = {r.request_id for r in conn.execute(select(deletion_requests.c.request_id))}
        stones = {r.person_hash for r in conn.execute(select(tombstones.c.person_hash))}
    assert left == {opened[1].request_id}
    assert stones == {done, still_open}
    assert verify(s).ok


def test_a_purge_anchor_moved_again_by_hand_is_detected(aged: AuditStore) -> None:
    purge(aged, retention_days=730)
    eighth = _row(aged, 8)
    with aged.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq <= 8))
        conn.execute(update(chain_head).values(anchor_seq=8, anchor_hash=eighth["row_hash"]))
    result = verify(aged)
    assert not result.ok and result.bad_seq == 11


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def pg_store() -> Iterator[AuditStore]:
    """A throwaway PostgreSQL database (other tests share the default one)."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"cioguard_chain_{secrets.token_hex(4)}"
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


@pytest.mark.postgres
def test_postgresql_chain_verifies_purges_and_names_a_modified_row(pg_store: AuditStore) -> None:
    _fill(pg_store, 3, days_ago=800)
    _fill(pg_store, 5)
    assert verify(pg_store).ok
    assert purge(pg_store, retention_days=730).rows == 3
    assert verify(pg_store).ok
    with pg_store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 6).values(detail="edited"))
    result = verify(pg_store)
    assert not result.ok and result.bad_seq == 6


def test_a_published_head_is_checked_even_after_it_was_purged_into_the_anchor(
    aged: AuditStore,
) -> None:
    sixth = _row(aged, 6)
    assert check_published(aged, 6, sixth["row_hash"]) is None
    purge(aged, retention_days=730)
    assert check_published(aged, 6, sixth["row_hash"]) is None  # now the anchor
    assert check_published(aged, 2, sixth["row_hash"]) is not None  # purged, unknowable
    assert "no longer" in (check_published(aged, 7, "0" * 64) or "")
