"""``cioguard import FILE`` through the real command line parser, the private Redis and a worker.

* 100,000 JSON lines published (no worker): every valid record is queued once, sealed, in order;
  refused lines are named by number and reason, never by content.
* CSV from stdin with ``--skip``; a broker that is away says which ``--skip`` resumes.
* A smaller file end to end through a real worker and the TLS sandbox (people and events arrive,
  one final audit row each); the 100,000-row end to end runs with ``CIOGUARD_SOAK=1``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from cioguard.broker.celeryconf import QUEUE
from cioguard.broker.envelope import Envelope
from cioguard.cli.main import app
from cioguard.config import get_settings
from cioguard.producer.api import get_producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess, free_port
from tests.helpers import final_rows, wait_for_finals
from tests.producer.test_api import assert_no_canary, body_of, queued

CANARY = "canary-import-7f3a"


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def app_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The command's environment: the same settings the worker gets."""
    for name in list(os.environ):
        if name.startswith(("CIOGUARD_", "CUSTOMERIO_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_producer.cache_clear()
    yield env
    if get_producer.cache_info().currsize:
        get_producer().celery.close()
        if get_producer()._audit is not None:
            get_producer().audit.dispose()
    get_settings.cache_clear()
    get_producer.cache_clear()


def write_jsonl(path: Path, count: int, bad: dict[int, str] | None = None) -> Path:
    """``count`` lines; line numbers in ``bad`` get the given raw text instead."""
    bad = bad or {}
    with path.open("w") as handle:
        for line_no in range(1, count + 1):
            row = {"id": f"{CANARY}-{line_no}", "email": f"{CANARY}-{line_no}@example.com",
                   "plan": "pro", "n": line_no}  # fmt: skip
            handle.write(bad.get(line_no, json.dumps(row)) + "\n")
    return path


def token_of(message: dict[str, Any]) -> str:
    args, _kwargs, _embed = body_of(message)
    return str(args[0])


def test_100k_jsonl_lines_are_published_and_refused_lines_named(
    app_env: dict[str, str], broker: redis.Redis, tmp_path: Path
) -> None:
    bad = {
        7: f'{{"id": "{CANARY}-broken", ',  # cut off
        50_000: json.dumps({"email": f"{CANARY}@example.com"}),  # no id
        99_999: json.dumps({"id": f" {CANARY} "}),  # surrounding whitespace
        100_000: json.dumps([CANARY]),  # not an object
    }
    path = write_jsonl(tmp_path / "people.jsonl", 100_000, bad)
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 1, result.output
    assert "line 7: not valid JSON" in result.stderr
    assert "line 50000: no 'id' field" in result.stderr
    assert "line 99999: person_id has leading or trailing whitespace" in result.stderr
    assert "line 100000: not a JSON object" in result.stderr
    assert re.search(r"published \(people\)\s+99996", result.stdout), result.stdout
    assert re.search(r"refused\s+4", result.stdout)
    assert "--skip 100000" in result.stdout
    assert_no_canary(result.output)
    messages = queued(broker)
    assert len(messages) == 99_996
    assert len({m["headers"]["id"] for m in messages}) == 99_996
    envelope = Envelope([app_env["CIOGUARD_PAYLOAD_KEY"].encode()])
    first, last = (envelope.open(token_of(m)) for m in (messages[0], messages[-1]))
    assert (first["person_id"], last["person_id"]) == (f"{CANARY}-1", f"{CANARY}-99998")
    row = {"email": f"{CANARY}-1@example.com", "plan": "pro", "n": 1}
    assert first["attributes"] == get_producer().sanitizer.apply(row)  # identify()'s policy


def test_csv_from_stdin_with_skip(app_env: dict[str, str], broker: redis.Redis) -> None:
    csv_text = "customer,plan,city\n" + "".join(
        f"{CANARY}-{i},{'pro' if i % 2 else ''},Lyon\n" for i in range(10)
    )
    csv_text += f"{CANARY}-short,pro\n"
    result = CliRunner().invoke(
        app, ["import", "-", "--format", "csv", "--id-field", "customer", "--skip", "4"],
        input=csv_text,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "line 12: 2 cells, the header has 3" in result.stderr
    assert re.search(r"published \(people\)\s+6", result.stdout)
    assert re.search(r"skipped \(--skip\)\s+4", result.stdout)
    envelope = Envelope([app_env["CIOGUARD_PAYLOAD_KEY"].encode()])
    payloads = [envelope.open(token_of(m)) for m in queued(broker)]
    assert [p["person_id"] for p in payloads] == [f"{CANARY}-{i}" for i in range(4, 10)]
    assert payloads[0]["attributes"] == {"city": "Lyon"}  # the empty cell is left out
    assert payloads[1]["attributes"] == {"plan": "pro", "city": "Lyon"}
    assert_no_canary(result.output)


def test_bad_header_and_bad_event_name_publish_nothing(
    app_env: dict[str, str], broker: redis.Redis
) -> None:
    no_id = CliRunner().invoke(app, ["import", "-", "--format", "csv"], input="name\nx\n")
    assert no_id.exit_code == 2 and "no 'id' column" in no_id.stderr
    bad_event = CliRunner().invoke(app, ["import", "-", "--track", " "], input='{"id": "a"}\n')
    assert bad_event.exit_code == 2 and "event name" in bad_event.stderr
    assert broker.llen(QUEUE) == 0


def test_broker_away_says_where_to_resume(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CIOGUARD_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    get_producer.cache_clear()
    path = write_jsonl(tmp_path / "people.jsonl", 20)
    result = CliRunner().invoke(app, ["import", str(path), "--skip", "5"])
    assert result.exit_code == 2, result.output
    assert "Resume with --skip 5" in result.stderr
    assert_no_canary(result.output)


def _end_to_end(
    rows: int,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    app_env: dict[str, str],
) -> None:
    path = write_jsonl(tmp_path / "people.jsonl", rows)
    result = CliRunner().invoke(app, ["import", str(path), "--track", "imported"])
    assert result.exit_code == 0, result.output
    start_worker(CIOGUARD_BATCH="1", CIOGUARD_RATE_LIMIT=app_env["CIOGUARD_RATE_LIMIT"])
    store = get_producer().audit
    wait_for_finals(store, 2 * rows, timeout_s=max(120, rows / 100))
    finals = final_rows(store)
    assert len(finals) == 2 * rows
    assert {r["outcome"] for r in finals} == {"delivered"}
    stats = cio.control.stats()
    assert stats["people"] == rows and stats["events_unique"] == rows
    assert stats["over_limit"] == 0  # the fleet-wide limit held downstream
    person = cio.control.person(f"{CANARY}-{rows}")
    assert person is not None


@pytest.mark.e2e
def test_import_end_to_end_through_a_worker(
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    app_env: dict[str, str],
) -> None:
    _end_to_end(1_000, tmp_path, start_worker, cio, app_env)


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("CIOGUARD_SOAK") != "1", reason="soak: CIOGUARD_SOAK=1")
def test_import_100k_end_to_end_through_a_worker(
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    app_env: dict[str, str],
) -> None:
    app_env["CIOGUARD_RATE_LIMIT"] = "1000"
    _end_to_end(100_000, tmp_path, start_worker, cio, app_env)
