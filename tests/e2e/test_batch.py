"""Batching through a real worker, for each API (Track ``/api/v2/batch``, Pipelines
``/v1/batch``): many people per request, each its own fate."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest

from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import final_rows, wait_for_finals

pytestmark = pytest.mark.e2e


def test_batched_delivery_isolates_a_refused_person(
    producer: Producer, start_worker: Callable[..., WorkerProcess], cio: SandboxServer, api: str
) -> None:
    cio.control.configure(reject_id_prefix="poison-")
    jobs = [producer.identify(f"b-{i}", {"email": f"b{i}@example.com"}) for i in range(300)]
    jobs += [producer.track(f"b-{i}", "viewed", {"page": i}) for i in range(100)]
    poisoned = producer.identify("poison-1", {"email": "p@example.com"})
    requests = [producer.delete_person(f"gone-{i}") for i in range(10)]
    start_worker(CIOGUARD_BATCH="1", CIOGUARD_BATCH_MAX_OPS="100")

    wait_for_finals(producer.audit, len(jobs) + 1 + len(requests))
    rows = final_rows(producer.audit)
    counts = collections.Counter(r["final_job_id"] for r in rows)
    assert max(counts.values()) == 1
    outcome = {r["final_job_id"]: r["outcome"] for r in rows}
    assert all(outcome[j] == "delivered" for j in jobs)
    assert outcome[poisoned] == "dead_lettered"
    assert all(producer.deletion_status(r).state == "completed" for r in requests)

    stats = cio.control.stats()
    assert stats["people"] == 300
    assert stats["events_unique"] == 100
    assert stats["suppressed"] == 10
    # Pipelines has no per-call results: the batch holding the refused person is refused whole
    # and its items are sent again one request each (at most CIOGUARD_BATCH_MAX_OPS of them)
    resent = 100 if api == "pipelines" else 0
    assert stats["requests_total"] < (len(jobs) + len(requests)) / 5 + resent, stats


def test_batched_retries_after_5xx_and_429(
    producer: Producer, start_worker: Callable[..., WorkerProcess], cio: SandboxServer, api: str
) -> None:
    cio.control.configure(fail_5xx_ratio=0.3, fail_429_ratio=0.2, retry_after_s=1, seed=3)
    jobs = [producer.track(f"r-{i}", "clicked", {"n": i}) for i in range(200)]
    start_worker(CIOGUARD_BATCH="1", CIOGUARD_BATCH_MAX_OPS="20")
    wait_for_finals(producer.audit, len(jobs), timeout_s=180)
    rows = final_rows(producer.audit)
    assert {r["outcome"] for r in rows} == {"delivered"}
    assert len(rows) == len(jobs)
    assert cio.control.stats()["events_unique"] == len(jobs)
