"""CCPA §7101 export records: request, response, denial basis; keyed hash only."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from cioguard.audit.store import AuditStore, utcnow
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from cioguard.erasure.export import (
    FIELDS,
    records,
    requests_for_person,
    rows_for_person,
    write_csv,
    write_jsonl,
)

DONE, FAILED, OPEN = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    done, failed, _ = opening.open_requests(s, [DONE, FAILED, OPEN], reason="ccpa", manner="bulk",
                                         mode="suppress_and_delete")  # fmt: skip
    deletions.transition(s, done.request_id, "completed", job_id=done.job_id, final=True)
    deletions.transition(s, failed.request_id, "failed", job_id=failed.job_id,
                    error_class="PermanentError")  # fmt: skip
    return s


def test_each_request_becomes_one_record_with_the_7101_fields(store: AuditStore) -> None:
    rows = {r["person_hash"]: r for r in records(store)}
    assert set(rows) == {DONE, FAILED, OPEN}
    assert all(tuple(r) == FIELDS for r in rows.values())
    done, failed, still_open = rows[DONE], rows[FAILED], rows[OPEN]
    assert (done["request_nature"], done["request_manner"], done["regime"]) == ("deletion", "bulk",
                                                                               "ccpa")  # fmt: skip
    assert done["response_date"] and "suppressed and profile deleted" in str(
        done["response_nature"]
    )
    assert done["denial_basis"] is None
    assert failed["denial_basis"] == "PermanentError" and failed["response_date"]
    assert str(failed["response_nature"]).startswith("not erased")
    assert (still_open["response_nature"], still_open["response_date"]) == ("pending", None)


def test_since_filters_on_the_request_date(store: AuditStore) -> None:
    assert len(list(records(store, since=utcnow() - timedelta(hours=1)))) == 3
    assert list(records(store, since=utcnow() + timedelta(hours=1))) == []


def test_jsonl_and_csv_carry_the_same_records(store: AuditStore) -> None:
    as_json, as_csv = io.StringIO(), io.StringIO()
    assert write_jsonl(records(store), as_json) == 3
    assert write_csv(records(store), as_csv) == 3
    parsed = [json.loads(line) for line in as_json.getvalue().splitlines()]
    table = list(csv.DictReader(io.StringIO(as_csv.getvalue())))
    assert [r["request_id"] for r in parsed] == [r["request_id"] for r in table]
    assert tuple(table[0]) == FIELDS


def test_csv_neutralises_spreadsheet_formulas(tmp_path: Path) -> None:
    out = io.StringIO()
    write_csv([{"request_id": "r", "extension_reason": "=HYPERLINK(1)", "attempts": 2}], out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["extension_reason"] == "'=HYPERLINK(1)" and row["attempts"] == "2"


def test_a_person_hash_finds_its_rows_and_requests(store: AuditStore) -> None:
    assert [r["outcome"] for r in rows_for_person(store, DONE)] == ["received", "completed"]
    assert [s.state for s in requests_for_person(store, FAILED)] == ["failed"]
    assert rows_for_person(store, "9" * 64) == []
