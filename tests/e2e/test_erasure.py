"""Erasure end to end: real Redis, real worker processes, the TLS sandbox, the audit store.

Modes and repeats, no resurrection by queued or later jobs (also after a Redis FLUSHALL), and
the bulk command with a poisoned id among 1,500 (10,000 in the soak variant).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cioguard.audit.chain import verify
from cioguard.audit.store import AuditStore
from cioguard.delivery.pipeline import ERASED_AFTER_ATTEMPT_DETAIL, ERASED_DETAIL
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.conftest import settings_from
from tests.helpers import final_rows, wait_for_finals, wait_until

pytestmark = pytest.mark.e2e
MODES = ("suppress", "delete", "suppress_and_delete")
SOAK = os.environ.get("CIOGUARD_SOAK") == "1"


@pytest.fixture
def poisoned(cio: SandboxServer) -> Iterator[str]:
    """Ids starting with this prefix are refused by the sandbox (400) until the test ends."""
    cio.control.configure(reject_id_prefix="poison-")
    yield "poison-"
    cio.control.configure(reject_id_prefix=None)


def _completed(producer: Producer, request_ids: list[str]) -> Callable[[], bool]:
    return lambda: all(producer.deletion_status(r).state == "completed" for r in request_ids)


def _final(store: AuditStore, job_id: str) -> dict[str, Any]:
    row = store.final_row(job_id)
    assert row is not None, f"no final row for {job_id}"
    return row


def test_each_mode_erases_at_the_sandbox_and_repeats_make_no_second_erase(
    env: dict[str, str],
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    # one process: the repeated message of a still-received request then runs after the first;
    # one request per operation, so each mode's v1 endpoints can be counted
    start_worker(concurrency=1, CIOGUARD_BATCH="0")
    people = {mode: f"mode-{mode}" for mode in MODES}
    for person in people.values():
        producer.identify(person, {"plan": "pro"})
    wait_for_finals(producer.audit, len(MODES))
    assert cio.control.stats()["people"] == len(MODES)

    by_mode = {m: Producer(settings_from({**env, "CIOGUARD_DELETION_MODE": m})) for m in MODES}
    requests = {m: by_mode[m].delete_person(people[m]) for m in MODES}
    assert by_mode["suppress"].delete_person(people["suppress"]) == requests["suppress"]
    wait_until(_completed(producer, list(requests.values())), what="three erasures")
    assert by_mode["delete"].delete_person(people["delete"]) == requests["delete"]

    stats = cio.control.stats()
    assert stats["people"] == 0
    assert stats["suppressed"] == 2  # suppress and suppress_and_delete
    assert stats["deleted"] == 2  # delete and suppress_and_delete
    assert stats["by_endpoint"]["suppress"] == {"200": 2}
    assert stats["by_endpoint"]["delete"] == {"200": 2}
    for mode, request_id in requests.items():
        status = producer.deletion_status(request_id)
        assert (status.mode, status.attempts) == (mode, 1)
    completed = [r for r in producer.audit.rows() if r["outcome"] == "completed"]
    assert len(completed) == len(MODES) and all(r["final_job_id"] for r in completed)
    assert verify(producer.audit).ok
    for p in by_mode.values():
        p.audit.dispose()
        p.celery.close()


def _in_flight(cio: SandboxServer) -> int:
    """Requests the sandbox has received and not yet answered."""
    stats = cio.control.stats()
    return int(stats["requests_total"]) - sum(stats["by_status"].values())


@pytest.mark.parametrize("batch", ["0", "1"])
def test_a_job_sent_before_the_erasure_and_redelivered_after_says_it_may_have_reached_cio(
    batch: str,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    """The worker dies while its identify is in flight, and the person's erasure is recorded
    before the job comes back. The redelivery drops it and the trail says that an earlier
    attempt may have reached Customer.io; the erasure then leaves nothing there."""
    env = {"CIOGUARD_BATCH": batch, "CIOGUARD_VISIBILITY_TIMEOUT_S": 5}
    cio.control.configure(latency_ms=2000)
    worker = start_worker(**env)
    job_id = producer.identify("late", {"plan": "pro"})
    wait_until(lambda: _in_flight(cio) >= 1, timeout_s=60, what="the identify in flight")
    request_id = producer.delete_person("late")
    worker.kill()
    killed_at = time.monotonic()
    cio.control.configure(latency_ms=0)
    time.sleep(max(0.0, killed_at + 6 - time.monotonic()))  # past the visibility timeout
    start_worker(**env)

    wait_for_finals(producer.audit, 2)
    row = _final(producer.audit, job_id)
    assert (row["outcome"], row["detail"]) == ("dropped", ERASED_AFTER_ATTEMPT_DETAIL)
    assert producer.deletion_status(request_id).state == "completed"
    assert cio.control.person("late") is None and cio.control.events("late") == []


@pytest.mark.parametrize("batch", ["0", "1"])
def test_jobs_queued_before_and_after_a_deletion_are_dropped_even_after_a_redis_flush(
    batch: str,
    env: dict[str, str],
    producer: Producer,
    redis_url: str,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    before = [producer.identify("ghost", {"plan": "pro"}), producer.track("ghost", "opened")]
    request_id = producer.delete_person("ghost")
    after = [producer.identify("ghost", {"plan": "max"}), producer.track("ghost", "clicked")]
    alive = producer.identify("alive", {"plan": "pro"})
    start_worker(CIOGUARD_BATCH=batch)  # only now: every ghost job is already in the queue

    wait_for_finals(producer.audit, len(before) + len(after) + 2)
    for job_id in before + after:
        row = _final(producer.audit, job_id)
        assert (row["outcome"], row["detail"]) == ("dropped", ERASED_DETAIL)
    assert _final(producer.audit, alive)["outcome"] == "delivered"
    assert producer.deletion_status(request_id).state == "completed"
    assert cio.control.person("ghost") is None and cio.control.events("ghost") == []
    assert cio.control.stats()["ops_by_action"] == {"identify": 1, "suppress": 1}  # alive; ghost

    client = redis.Redis.from_url(redis_url)
    client.flushall()  # the private test Redis: tombstone cache, queue and limiter are gone
    client.close()
    fresh = Producer(settings_from(env))  # declares the queue again
    late = fresh.identify("ghost", {"plan": "again"})
    wait_for_finals(producer.audit, len(before) + len(after) + 3)
    assert _final(producer.audit, late)["outcome"] == "dropped"
    assert cio.control.person("ghost") is None
    assert cio.control.stats()["ops_by_action"] == {"identify": 1, "suppress": 1}  # no new op
    fresh.audit.dispose()
    fresh.celery.close()


def _bulk(
    env: dict[str, str], *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``cioguard delete ...`` as a user runs it: a separate process, wide output."""
    child_env = {**os.environ, **env, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cioguard", "delete", *args], env=child_env, capture_output=True,
        text=True, timeout=timeout_s, check=False,
    )  # fmt: skip


def _summary(output: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            counts[cells[0]] = int(cells[1])
    return counts


def _run_bulk(
    env: dict[str, str], tmp_path: Path, producer: Producer, cio: SandboxServer, count: int
) -> None:
    ids = [f"bulk-{i}" for i in range(count)]
    lines = [*ids[:10], "poison-1", " spaced-id", "", "bulk-3", *ids[10:], "bulk-4"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(lines) + "\n")

    run = _bulk(env, "--file", str(ids_file), "--wait", "--timeout-s", "600", timeout_s=900)
    assert run.returncode == 1, run.stderr  # a bad line and a failed request
    assert "line 12:" in run.stderr and "spaced-id" not in run.stdout + run.stderr
    summary = _summary(run.stdout)
    assert summary["new requests"] == count + 1
    assert summary["duplicates: repeated in the file"] == 2
    assert summary["bad lines (not submitted)"] == 1
    assert (summary["completed"], summary["failed"], summary["still open"]) == (count, 1, 0)

    rows = final_rows(producer.audit)
    assert len(rows) == count + 1
    assert max(collections.Counter(r["final_job_id"] for r in rows).values()) == 1
    assert collections.Counter(r["outcome"] for r in rows) == {"completed": count,
                                                               "dead_lettered": 1}  # fmt: skip
    assert cio.control.stats()["suppressed"] == count

    again = _bulk(env, "--file", str(ids_file))
    summary = _summary(again.stdout)
    assert summary["duplicates: already requested"] == count
    assert summary["new requests"] == 1  # the failed one is asked again
    assert verify(producer.audit).ok


def test_bulk_file_with_a_poisoned_id_completes_every_other_request(
    env: dict[str, str],
    tmp_path: Path,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    poisoned: str,
) -> None:
    start_worker(concurrency=2)
    _run_bulk(env, tmp_path, producer, cio, 1500)


@pytest.mark.skipif(not SOAK, reason="soak test: set CIOGUARD_SOAK=1")
def test_soak_10000_ids_in_one_file(
    env: dict[str, str],
    tmp_path: Path,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    poisoned: str,
) -> None:
    start_worker(concurrency=2, CIOGUARD_RATE_LIMIT=1000)
    _run_bulk(env, tmp_path, producer, cio, 10_000)
