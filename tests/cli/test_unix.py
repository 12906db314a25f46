"""`cioguard` behaves like a good Unix tool: real `--help`, one-line usage errors with exit 2,
`--version`, listings as table/json/csv that are never cut when piped, footnotes only when they
apply, and settings from `.env`. Every command runs as a real subprocess (no terminal)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cioguard.audit.store import AuditStore
from cioguard.delivery import deadletters
from cioguard.erasure import requests as erasure
from cioguard.producer.api import Producer

LONG_ID = "01JLONGJOBIDTHATMUSTNOTBECUT"


def run(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {**os.environ, "COLUMNS": "80", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cioguard", *args], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=120)  # fmt: skip


def test_version() -> None:
    done = run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"cioguard {version('cioguard')}")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bogus"], "cioguard: No such option: --bogus (see cioguard --help)"),
        (["dead-letters", "list", "--bogus"], "cioguard dead-letters list: No such option"),
        (["dead-letters", "list", "--format", "xml"],
         "invalid value for --format: expected one of table, json, csv"),
        (["deletions", "list", "--limit", "many"], "invalid value for --limit"),
        (["status"], "cioguard status: Missing argument"),
        (["nosuchcommand"], "No such command"),
        (["flower", "--port", "0"], "cioguard flower: invalid value for --port"),
        (["worker", "--bogus"], "cioguard worker: No such option '--bogus'"),
        (["worker", "--concurrency", "lots"], "invalid value for -c / --concurrency: expected a"),
        (["sandbox", "--bogus"], "cioguard sandbox: unrecognized arguments: --bogus"),
        (["sandbox", "--port", "lots"], "cioguard sandbox: argument --port: invalid int value"),
        (["sandbox", "--region", "many"], "argument --region: invalid choice (choose from"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "lots" not in done.stderr
    assert "many" not in done.stderr and "xml" not in done.stderr


@pytest.mark.parametrize(
    ("args", "lists"),
    [
        (["worker", "--help"], ["--concurrency", "--hostname", "--pool", "CIOGUARD_TASK_EVENTS"]),
        (["sandbox", "--help"], ["--fail-5xx", "--latency-ms", "--ca-file", "cioguard sandbox"]),
        (["flower", "--help"], ["--address", "--port", "--max-tasks", "read-only"]),
        (["check", "--help"], ["--format", "--max-queue-age-s", "--due-within-days"]),
        (["dead-letters", "list", "--help"], ["--format", "--all"]),
        (["deletions", "overdue", "--help"], ["--format", "--within-days"]),
    ],
)
def test_help_lists_the_real_options_without_any_configuration(
    args: list[str], lists: list[str]
) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("CIOGUARD_", "CUSTOMERIO_"))}
    done = subprocess.run([sys.executable, "-m", "cioguard", *args], capture_output=True,
                          text=True, env=bare, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for option in lists:
        assert option in done.stdout, (option, done.stdout[:2000])


def test_no_command_prints_the_help_and_exits_2() -> None:
    done = run()
    assert done.returncode == 2 and "Usage" in done.stdout and "check" in done.stdout


@pytest.fixture
def store_env(env: dict[str, str], producer: Producer) -> dict[str, str]:
    return env


def _dead_letter(store: AuditStore, job_id: str) -> None:
    deadletters.record(
        store, job_id=job_id, kind="identify", person_hash="b" * 64, sealed="x",
        error_class="PermanentError", http_status=400, attempts=3,
    )  # fmt: skip


def test_dead_letters_list_as_table_json_and_csv(store_env: dict[str, str],
                                                 producer: Producer) -> None:  # fmt: skip
    empty = run("dead-letters", "list", env=store_env)
    assert (empty.returncode, empty.stdout.strip()) == (0, "No dead letter.")
    assert run("dead-letters", "list", "--format", "json", env=store_env).stdout.strip() == "[]"
    _dead_letter(producer.audit, LONG_ID)
    table = run("dead-letters", "list", env=store_env)
    assert table.returncode == 0 and LONG_ID in table.stdout and "PermanentError" in table.stdout
    assert "…" not in table.stdout
    [row] = json.loads(run("dead-letters", "list", "--format", "json", env=store_env).stdout)
    assert (row["job"], row["kind"], row["error"], row["status"], row["replayed"]) == (
        LONG_ID, "identify", "PermanentError", 400, None)  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(
        run("dead-letters", "list", "--format", "csv", env=store_env).stdout)))  # fmt: skip
    assert [(r["job"], r["status"], r["replayed"]) for r in rows] == [(LONG_ID, "400", "")]


def test_deletion_tables_are_never_cut_and_footnotes_only_apply_when_true(
    store_env: dict[str, str], producer: Producer
) -> None:
    request = producer.delete_person("u-1")
    plain = run("deletions", "list", env=store_env)
    assert plain.returncode == 0 and request in plain.stdout
    assert "…" not in plain.stdout and "due date extended" not in plain.stdout
    erasure.extend(producer.audit, request, days=10, reason="complex request")
    extended = run("deletions", "list", env=store_env)
    assert "* due date extended" in extended.stdout
    [row] = json.loads(run("deletions", "list", "--format", "json", env=store_env).stdout)
    assert row["request"] == request and row["extended"] is True
    assert row["due"].startswith(str((erasure.get_status(producer.audit, request)
                                       .effective_due_at).date()))  # fmt: skip
    overdue = run("deletions", "overdue", "--within-days", "100", "--format", "csv",
                  env=store_env)  # fmt: skip
    assert overdue.returncode == 1 and request in overdue.stdout


def test_settings_come_from_dot_env_and_the_environment_wins(
    store_env: dict[str, str], producer: Producer, tmp_path: Path
) -> None:
    _dead_letter(producer.audit, LONG_ID)
    (tmp_path / ".env").write_text(
        "\n".join(f"{k}={v}" for k, v in store_env.items()) + "\nPOSTGRES_PASSWORD=unused\n"
    )
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("CIOGUARD_", "CUSTOMERIO_"))}
    from_file = subprocess.run(
        [sys.executable, "-m", "cioguard", "dead-letters", "list", "--format", "json"],
        capture_output=True, text=True, env=bare, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr
    assert [r["job"] for r in json.loads(from_file.stdout)] == [LONG_ID]
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    AuditStore.from_url(elsewhere).migrate()
    env_wins = subprocess.run(
        [sys.executable, "-m", "cioguard", "dead-letters", "list", "--format", "json"],
        capture_output=True, text=True, env={**bare, "CIOGUARD_AUDIT_URL": elsewhere},
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert env_wins.returncode == 0 and json.loads(env_wins.stdout) == []


def test_a_failed_command_exits_1_and_a_bad_setting_2(store_env: dict[str, str]) -> None:
    down = run("dead-letters", "list", env={**store_env, "CIOGUARD_AUDIT_URL":
               "postgresql+psycopg://nobody@127.0.0.1:1/none"})  # fmt: skip
    assert down.returncode == 1, down.stderr
    bad = run("dead-letters", "list", env={**store_env, "CIOGUARD_RATE_LIMIT": "-1"})
    assert bad.returncode == 2 and "CIOGUARD_RATE_LIMIT is invalid" in bad.stderr
