"""`cioguard audit verify|export|purge|find` through the real command line parser."""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from cioguard.audit.schema import audit_log
from cioguard.audit.store import AuditEntry, AuditStore, utcnow
from cioguard.cli.main import app
from cioguard.config import get_settings
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from cioguard.privacy.hashing import person_hash

PERSON = "canary-person-0a1b"


@pytest.fixture
def hash_key() -> str:
    return secrets.token_urlsafe(48)


@pytest.fixture
def store(tmp_path: Path, hash_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditStore]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("CIOGUARD_AUDIT_URL", url)
    monkeypatch.setenv("CIOGUARD_HASH_KEY", hash_key)
    get_settings.cache_clear()
    s = AuditStore.from_url(url)
    s.migrate()
    opened = opening.open_request(s, person_hash(hash_key.encode(), PERSON), reason="erasure",
                               manner="api", mode="suppress")  # fmt: skip
    deletions.transition(s, opened.request_id, "completed", job_id=opened.job_id, final=True)
    yield s
    s.dispose()
    get_settings.cache_clear()


def test_verify_prints_the_head_to_publish(store: AuditStore) -> None:
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 0
    head = store.head()
    assert f"head seq {head['seq']} hash {head['hash']}" in result.stdout


def test_verify_names_the_first_bad_row_and_exits_1(store: AuditStore) -> None:
    with store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(outcome="x"))
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1 and "seq 1" in result.stderr


def test_verify_without_tables_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIOGUARD_AUDIT_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["audit", "verify"])
    get_settings.cache_clear()
    assert result.exit_code == 1 and "audit store unavailable" in result.stderr


def test_export_jsonl_and_csv_hold_the_keyed_hash_not_the_id(
    store: AuditStore, tmp_path: Path
) -> None:
    as_json = CliRunner().invoke(app, ["audit", "export", "--since", "2020-01-01"])
    assert as_json.exit_code == 0
    (record,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert record["state"] == "completed" and len(record["person_hash"]) == 64
    out = tmp_path / "export.csv"
    as_csv = CliRunner().invoke(app, ["audit", "export", "--format", "csv", "-o", str(out)])
    assert as_csv.exit_code == 0 and "exported 1" in as_csv.stderr
    (row,) = list(csv.DictReader(io.StringIO(out.read_text())))
    assert row["request_id"] == record["request_id"]
    assert PERSON not in as_json.output + out.read_text()


def test_export_refuses_an_unknown_format(store: AuditStore) -> None:
    assert CliRunner().invoke(app, ["audit", "export", "--format", "xml"]).exit_code == 2


def test_find_lists_the_records_of_an_id_without_printing_it(store: AuditStore) -> None:
    result = CliRunner().invoke(app, ["audit", "find"], input=PERSON + "\n")
    assert result.exit_code == 0
    assert "completed" in result.stdout and PERSON not in result.output
    missing = CliRunner().invoke(app, ["audit", "find", "--person-id", "someone-else"])
    assert "No record" in missing.stdout


def test_purge_dry_run_then_purge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'aged.db'}"
    aged = AuditStore.from_url(url)
    aged.migrate()
    for days_ago in (40, 40, 0):
        with aged.transaction() as conn:
            entry = AuditEntry(kind="identify", outcome="delivered")
            aged.append(conn, entry, at=utcnow() - timedelta(days=days_ago))
    monkeypatch.setenv("CIOGUARD_AUDIT_URL", url)
    monkeypatch.setenv("CIOGUARD_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    dry = CliRunner().invoke(app, ["audit", "purge", "--dry-run"])
    assert dry.exit_code == 0 and "would delete 2 audit row(s) (seq 1-2)" in dry.stdout
    assert aged.head()["anchor_seq"] == 0
    done = CliRunner().invoke(app, ["audit", "purge"])
    assert "deleted 2 audit row(s)" in done.stdout and "recorded as audit row 4" in done.stdout
    assert CliRunner().invoke(app, ["audit", "verify"]).exit_code == 0
    get_settings.cache_clear()
    aged.dispose()


def test_verify_checks_heads_published_earlier(store: AuditStore) -> None:
    head = store.head()
    published = f"{head['seq']}:{head['hash']}"
    ok = CliRunner().invoke(app, ["audit", "verify", "--published", published])
    assert ok.exit_code == 0 and "still matches" in ok.stdout
    rebuilt = CliRunner().invoke(
        app, ["audit", "verify", "--published", f"{head['seq']}:{'0' * 64}"]
    )
    assert rebuilt.exit_code == 1 and "no longer has the published hash" in rebuilt.stderr
    bad = CliRunner().invoke(app, ["audit", "verify", "--published", "nonsense"])
    assert bad.exit_code == 2
