"""`cioguard check`'s health findings against a real Redis, real workers (Celery's control
API) and a real audit store; run as the real command, text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update

from cioguard.audit.schema import deletion_requests
from cioguard.audit.store import utcnow
from cioguard.cli import health
from cioguard.delivery import deadletters
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import wait_for_finals


def check_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    import os

    done = subprocess.run(
        [sys.executable, "-m", "cioguard", "check", "--format", "json", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["problems"] == sum(not f["ok"] for f in report["findings"])
    assert report["ok"] is (report["problems"] == 0)
    return done.returncode, {f["name"]: f for f in report["findings"]}


def test_no_worker_and_an_old_backlog_are_findings(env: dict[str, str], producer: Producer) -> None:
    for i in range(3):
        producer.identify(f"h-{i}", {"plan": "pro"})
    code, found = check_json(env, "--max-queue-age-s", "1")
    assert code == 1
    assert not found["workers"]["ok"] and "no worker answers" in str(found["workers"]["message"])
    # the jobs are fresh: under a second old, unless the machine is slow; either is reported
    assert "3 job(s) queued" in str(found["backlog"]["message"])
    aged = health.check_backlog(producer.settings, health.Limits(max_queue_age_s=1e-6))
    assert not aged.ok and "oldest waited more than" in aged.message
    assert health.check_backlog(producer.settings, health.Limits(max_queue_age_s=3600)).ok


def test_live_workers_with_their_concurrency_and_a_drained_queue(
    env: dict[str, str], producer: Producer, cio: SandboxServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:  # fmt: skip
    one = start_worker(concurrency=2)
    two = start_worker(concurrency=1)
    producer.identify("h-live", {"plan": "pro"})
    wait_for_finals(producer.audit, 1)
    finding = health.check_workers(producer.settings)
    assert finding.ok
    assert "2 worker(s), 3 process(es)" in finding.message
    assert f"{one.name} (2)" in finding.message and f"{two.name} (1)" in finding.message
    backlog = health.check_backlog(producer.settings, health.Limits())
    assert backlog.ok and backlog.message.startswith("0 job(s) queued")


def test_dead_letters_and_erasure_requests_needing_attention_are_findings(
    env: dict[str, str], producer: Producer
) -> None:
    store = producer.audit
    deadletters.record(
        store, job_id="01HEALTHDEADLETTER00000000", kind="identify", person_hash="a" * 64,
        sealed="x", error_class="PermanentError", http_status=400, attempts=1,
    )  # fmt: skip
    late = producer.delete_person("h-late")
    stuck = producer.delete_person("h-stuck")
    failed = producer.delete_person("h-failed")
    fine = producer.delete_person("h-fine")
    with store.engine.begin() as conn:
        rows = deletion_requests.c
        conn.execute(update(deletion_requests).where(rows.request_id == late)
                     .values(due_at=utcnow() - timedelta(days=2)))  # fmt: skip
        conn.execute(update(deletion_requests).where(rows.request_id == stuck)
                     .values(updated_at=utcnow() - timedelta(hours=7)))  # fmt: skip
        conn.execute(update(deletion_requests).where(rows.request_id == failed)
                     .values(state="failed"))  # fmt: skip
    code, found = check_json(env)
    assert code == 1
    assert not found["dead letters"]["ok"]
    assert "1 dead letter(s) not replayed" in str(found["dead letters"]["message"])
    deadlines = str(found["erasure deadlines"]["message"])
    assert deadlines.startswith("1 request(s) overdue") and late in deadlines
    assert fine not in deadlines
    assert stuck in str(found["erasure stuck"]["message"])
    assert "1 request(s) failed" in str(found["erasure failed"]["message"])
    everything = json.dumps(found)
    assert not any(f"h-{name}" in everything for name in ("late", "stuck", "failed", "fine"))


def test_a_broken_broker_gives_one_finding_not_three(
    env: dict[str, str], producer: Producer
) -> None:
    from cioguard.sandbox.devstack import free_port

    code, found = check_json({**env, "CIOGUARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert code == 1 and not found["broker"]["ok"]
    assert "workers" not in found and "backlog" not in found
    assert found["dead letters"]["ok"] and found["erasure"]["ok"]
