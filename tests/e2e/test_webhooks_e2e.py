"""Reporting webhooks end to end: `cioguard webhooks serve` and a real worker, over real HTTP.

Customer.io -> (signed POST) -> intake subprocess -> private Redis -> worker subprocess, whose
handler module (tests/webhook_handler_fixture.py, named by CIOGUARD_WEBHOOK_HANDLERS) appends
``"<event_id> <metric>"`` to a file for every call. The worker runs one process, so the queue is
handled in order: once a later "sentinel" event is final, every earlier one has been handled.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cioguard.delivery import deadletters
from cioguard.privacy.hashing import person_hash
from cioguard.producer.api import Producer
from cioguard.sandbox.devstack import WorkerProcess, free_port
from cioguard.webhooks.handlers import ERASED_DETAIL
from cioguard.webhooks.intake import webhook_job_id
from cioguard.webhooks.verify import sign_webhook
from tests.helpers import final_count, wait_until
from tests.leaks import Canary, dump_logs, dump_redis, dump_sql, find_hits
from tests.webhook_handler_fixture import LOG_ENV, calls

pytestmark = pytest.mark.e2e

SECRET = "whsec-e2e-current"
OLD_SECRET = "whsec-e2e-previous"
REPO_ROOT = Path(__file__).resolve().parents[2]
PATH = "/webhooks/customerio"


def make_event(metric: str, person_id: str, email: Canary, **data: Any) -> dict[str, Any]:
    address = email.value
    return {
        "event_id": f"01H{uuid.uuid4().hex}",
        "object_type": "email",
        "metric": metric,
        "timestamp": int(time.time()),
        "data": {"identifiers": {"id": person_id, "email": address}, "recipient": address, **data},
    }


def post(base_url: str, event: dict[str, Any], secret: str = SECRET) -> httpx.Response:
    body = json.dumps(event).encode()
    stamp = int(time.time())
    headers = {
        "X-CIO-Timestamp": str(stamp),
        "X-CIO-Signature": sign_webhook(body, secret, stamp),
        "Content-Type": "application/json",
    }
    return httpx.post(base_url + PATH, content=body, headers=headers, timeout=10)


@pytest.fixture
def intake(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`cioguard webhooks serve` in a subprocess, with the old and new secret (a rotation)."""
    port = free_port()
    log_path = tmp_path / "intake.log"
    proc_env = {**os.environ, **env, "CUSTOMERIO_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}"}
    cmd = [sys.executable, "-m", "cioguard", "webhooks", "serve", "--port", str(port)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, env=proc_env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base_url, proc), timeout_s=60, what="the webhook intake")
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _healthy(base_url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the intake exited with {proc.returncode}")
    try:
        return httpx.get(base_url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def email() -> Canary:
    """The recipient's address in every event: generated, so no source line contains it."""
    address = f"canary.{secrets.token_hex(6)}@example.test"
    return Canary("email", address, (address,))


@pytest.fixture
def handler_calls(tmp_path: Path) -> Path:
    return tmp_path / "handler-calls.txt"


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess], handler_calls: Path) -> WorkerProcess:
    return start_worker(
        concurrency=1,
        CUSTOMERIO_WEBHOOK_SECRET=SECRET,
        CIOGUARD_WEBHOOK_HANDLERS="tests.webhook_handler_fixture",
        PYTHONPATH=str(REPO_ROOT),
        CIOGUARD_MAX_ATTEMPTS=2,
        **{LOG_ENV: str(handler_calls)},
    )


def wait_final(producer: Producer, event: dict[str, Any]) -> dict[str, Any]:
    job_id = webhook_job_id(event["event_id"])
    wait_until(lambda: producer.audit.has_final(job_id), timeout_s=90, what="a final row")
    row = producer.audit.final_row(job_id)
    assert row is not None
    return row


def assert_nothing_leaked(email: Canary, tmp_path: Path, env: dict[str, str]) -> None:
    """The e-mail is in no log, no audit table and no Redis value (message bodies decoded)."""
    client = redis.Redis.from_url(env["CIOGUARD_BROKER_URL"])
    try:
        surfaces = {
            **dump_redis(client),
            **dump_sql(env["CIOGUARD_AUDIT_URL"]),
            **dump_logs(tmp_path.glob("*.log")),
        }
    finally:
        client.close()
    assert {"log:intake.log", "log:worker-0.log", "sql:audit_log"} <= set(surfaces)
    assert find_hits(surfaces, [email]) == []


@pytest.mark.usefixtures("worker")
def test_an_unsubscribe_is_recorded_and_handled_once(
    intake: str,
    producer: Producer,
    handler_calls: Path,
    env: dict[str, str],
    tmp_path: Path,
    email: Canary,
) -> None:
    unsubscribe = make_event("unsubscribed", "42", email)
    accepted = post(intake, unsubscribe)
    assert (accepted.status_code, accepted.json()) == (200, {"status": "accepted"})
    row = wait_final(producer, unsubscribe)
    assert (row["kind"], row["outcome"]) == ("webhook", "unsubscribed")
    assert row["person_hash"] == person_hash(env["CIOGUARD_HASH_KEY"].encode(), "42")

    again = post(intake, unsubscribe)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    forged = make_event("unsubscribed", "43", email)
    refused = post(intake, forged, secret="not-the-signing-key")
    assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
    rotated = make_event("bounced", "44", email)
    assert post(intake, rotated, secret=OLD_SECRET).json() == {"status": "accepted"}
    sentinel = make_event("delivered", "45", email)
    assert post(intake, sentinel).json() == {"status": "accepted"}
    wait_final(producer, sentinel)

    assert sorted(calls(handler_calls)) == sorted(
        [
            f"{unsubscribe['event_id']} unsubscribed",
            f"{rotated['event_id']} bounced",
            f"{sentinel['event_id']} delivered",
        ]
    )
    assert not producer.audit.has_final(webhook_job_id(forged["event_id"]))
    assert wait_final(producer, rotated)["outcome"] == "bounced"
    assert final_count(producer.audit) == 3
    assert_nothing_leaked(email, tmp_path, env)


@pytest.mark.usefixtures("worker")
def test_erased_people_are_dropped_and_failing_handlers_dead_letter(
    intake: str,
    producer: Producer,
    handler_calls: Path,
    env: dict[str, str],
    tmp_path: Path,
    email: Canary,
) -> None:
    request_id = producer.delete_person("gone-7")
    wait_until(
        lambda: producer.deletion_status(request_id).state == "completed", what="the erasure"
    )
    erased = make_event("unsubscribed", "gone-7", email)
    assert post(intake, erased).json() == {"status": "accepted"}
    row = wait_final(producer, erased)
    assert (row["kind"], row["outcome"], row["detail"]) == ("webhook", "dropped", ERASED_DETAIL)

    failing = make_event("spammed", "55", email, fail_handler=True)
    assert post(intake, failing).json() == {"status": "accepted"}
    row = wait_final(producer, failing)
    assert (row["kind"], row["outcome"], row["attempts"]) == ("webhook", "dead_lettered", 2)
    [letter] = deadletters.list_all(producer.audit)
    assert (letter.kind, letter.error_class) == ("webhook", "WebhookHandlerError")

    replay = subprocess.run(
        [sys.executable, "-m", "cioguard", "dead-letters", "replay", letter.job_id],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: len(deadletters.list_all(producer.audit)) == 1 and
               deadletters.list_all(producer.audit)[0].job_id != letter.job_id,
               timeout_s=90, what="the replayed event to be dead-lettered again")  # fmt: skip

    lines = calls(handler_calls)
    assert not any(erased["event_id"] in line for line in lines)
    assert lines.count(f"{failing['event_id']} spammed") == 4  # 2 attempts, then 2 on replay
    assert_nothing_leaked(email, tmp_path, env)
    # the logs name the failing handler and its exception type (never its message)
    entries = [json.loads(x) for x in (tmp_path / "worker-0.log").read_text().splitlines()
               if x.startswith("{")]  # fmt: skip
    why = [e for e in entries if e.get("msg") in ("webhook job retrying", "webhook dead_lettered")
           and e.get("reason") == "handler_failed"]  # fmt: skip
    assert {e["msg"] for e in why} == {"webhook job retrying", "webhook dead_lettered"}
    assert {(e["handler"], e["handler_error"]) for e in why} == {
        ("tests.webhook_handler_fixture.record_event", "ValueError")
    }
