"""Bulk erasure: line validation, submission (private Redis, no worker) and `cioguard delete`."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from cioguard.audit.chain import verify
from cioguard.broker.celeryconf import QUEUE
from cioguard.broker.envelope import new_key
from cioguard.config import Settings, get_settings
from cioguard.erasure import requests as deletions
from cioguard.producer import bulk
from cioguard.producer.api import Producer, get_producer

SECRET_ID = "canary-person-7c1d"


@pytest.fixture
def bulk_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    return {
        "CIOGUARD_BROKER_URL": redis_url,
        "CIOGUARD_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}",
        "CIOGUARD_HASH_KEY": secrets.token_urlsafe(48),
        "CIOGUARD_PAYLOAD_KEY": new_key(),
    }


@pytest.fixture
def producer(bulk_env: dict[str, str]) -> Iterator[Producer]:
    p = Producer(Settings(**bulk_env))  # type: ignore[arg-type]
    p.audit.migrate()
    yield p
    p.audit.dispose()
    p.celery.close()


def _queued(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(QUEUE))
    finally:
        client.close()


# -- parse_ids -------------------------------------------------------------------------------


def test_parse_ids_reports_bad_lines_by_number_without_their_content() -> None:
    lines = [b"user-1\n", b"\n", b" padded\n", b"x" * 200 + b"\n", b"\xff\xfe\n", b"user-2\r\n",
             b"user-3"]  # fmt: skip
    parsed = bulk.parse_ids(lines)
    assert parsed.ids == [(1, "user-1"), (6, "user-2"), (7, "user-3")]
    assert [b.line_no for b in parsed.bad] == [3, 4, 5]
    assert parsed.blank == 1
    for bad in parsed.bad:
        assert "padded" not in bad.problem and "xxx" not in bad.problem


# -- submit and wait -------------------------------------------------------------------------


def test_submit_opens_one_request_per_distinct_id_and_enqueues_it(
    producer: Producer, redis_url: str
) -> None:
    ids = [f"user-{i}" for i in range(1200)] + ["user-5", "user-5"]
    progressed: list[int] = []
    result = bulk.submit(producer, ids, chunk=500, on_progress=progressed.append)
    assert (result.new, result.repeated_in_file, result.already, result.resumed) == (1200, 2, 0, 0)
    assert len(result.request_ids) == len(set(result.request_ids)) == 1200
    assert sum(progressed) == len(ids) and len(progressed) == 3
    assert _queued(redis_url) == 1200
    assert verify(producer.audit).ok
    statuses = {deletions.get_status(producer.audit, r).manner for r in result.request_ids[:3]}  # type: ignore[union-attr]
    assert statuses == {"bulk"}


def test_a_rerun_opens_nothing_new_and_re_enqueues_only_unfinished_requests(
    producer: Producer, redis_url: str
) -> None:
    ids = [f"user-{i}" for i in range(10)]
    first = bulk.submit(producer, ids)
    for rid in first.request_ids[:6]:
        deletions.transition(producer.audit, rid, "completed", job_id=rid, final=True)
    again = bulk.submit(producer, ids)
    assert (again.new, again.already, again.resumed) == (0, 6, 4)
    assert again.request_ids == first.request_ids
    assert again.duplicates == 10
    assert _queued(redis_url) == 14  # the 4 still received went out again, under the same ids


def test_wait_returns_the_count_per_state_once_nothing_is_open(producer: Producer) -> None:
    result = bulk.submit(producer, ["a", "b"])
    clock = iter(range(100))
    polls: list[Counter[str]] = []

    def sleep(_: float) -> None:
        rid = result.request_ids[len(polls) - 1]
        deletions.transition(producer.audit, rid, "completed", job_id=rid, final=True)

    counts = bulk.wait(
        producer, result.request_ids, timeout_s=50, on_progress=polls.append,
        clock=lambda: float(next(clock)), sleep=sleep,
    )  # fmt: skip
    assert counts == Counter({"completed": 2}) and len(polls) == 3


def test_wait_gives_up_at_the_deadline(producer: Producer) -> None:
    result = bulk.submit(producer, ["a"])
    ticks = iter([0.0, 5.0, 11.0])
    counts = bulk.wait(producer, result.request_ids, timeout_s=10, clock=lambda: next(ticks),
                       sleep=lambda _: None)  # fmt: skip
    assert counts == Counter({"received": 1})


# -- cioguard delete --file ------------------------------------------------------------------


@pytest.fixture
def cli(bulk_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    for name, value in bulk_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_producer.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
    get_producer.cache_clear()


def test_cli_delete_reports_bad_lines_goes_on_and_reruns_as_duplicates(
    cli: CliRunner, tmp_path: Path, redis_url: str
) -> None:
    from cioguard.cli.main import app

    ids_file = tmp_path / "ids.txt"
    ids_file.write_bytes(b"user-1\nuser-2\n " + SECRET_ID.encode() + b"\nuser-2\n\nuser-3\n")
    first = cli.invoke(app, ["delete", "--file", str(ids_file)])
    assert first.exit_code == 1  # a bad line
    assert "line 3:" in first.stderr and SECRET_ID not in first.output
    assert "new requests" in first.stdout and _queued(redis_url) == 3
    assert _row(first.stdout, "new requests") == 3
    assert _row(first.stdout, "duplicates: repeated in the file") == 1
    assert _row(first.stdout, "bad lines (not submitted)") == 1

    ids_file.write_bytes(b"user-1\nuser-2\nuser-3\n")
    again = cli.invoke(app, ["delete", "--file", str(ids_file)])
    assert again.exit_code == 0
    assert _row(again.stdout, "new requests") == 0
    assert _row(again.stdout, "re-enqueued (still received)") == 3


def test_cli_delete_reads_stdin(cli: CliRunner, redis_url: str) -> None:
    from cioguard.cli.main import app

    result = cli.invoke(app, ["delete", "--file", "-"], input=b"p-1\np-2\n")
    assert result.exit_code == 0, result.output
    assert _row(result.stdout, "new requests") == 2 and _queued(redis_url) == 2


def test_cli_delete_names_an_unreadable_file(cli: CliRunner, tmp_path: Path) -> None:
    from cioguard.cli.main import app

    result = cli.invoke(app, ["delete", "--file", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2 and "cannot read" in result.stderr


def _row(table: str, label: str) -> int:
    for line in table.splitlines():
        if label in line:
            return int(line.rsplit(label, 1)[1].strip(" │|").split()[0])
    raise AssertionError(f"{label!r} not in the summary")
