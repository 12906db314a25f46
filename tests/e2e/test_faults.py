"""The fault-injection suite: a mixed workload while things break at random moments.

Identify, track and delete jobs flow through real batching workers while worker nodes are
killed with -9 at random moments and restarted, and the stand-in answers 5xx, 429 and slowly.
Afterwards, only end states are checked: no job lost (every job has a final audit row), none
with two final outcomes, every event recorded "delivered" accepted by the stand-in, no event
there that the audit does not explain, and no person resurrected (every identify/track enqueued
after that person's erasure request ends "dropped", and no erased person has data at the
stand-in).

It runs in both delivery modes, for each API (the ``api`` fixture). The short version (200
people, 2 kills) runs in CI;
``CIOGUARD_SOAK=1`` (``make soak``) runs 1,500 people with 6 kills. ``CIOGUARD_FAULT_SEED``
picks other kill points and erased people. The Redis restart and the
audit-database outage are in ``test_erasure_faults.py`` (also in ``make soak``).
"""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Callable

import pytest

from cioguard.delivery.pipeline import ERASED_AFTER_ATTEMPT_DETAIL
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import final_rows, wait_for_finals

pytestmark = pytest.mark.e2e
SOAK = os.environ.get("CIOGUARD_SOAK") == "1"
PEOPLE = 1500 if SOAK else 200
KILLS = 6 if SOAK else 2
FAST_REDELIVERY = {"CIOGUARD_VISIBILITY_TIMEOUT_S": 8, "CIOGUARD_BATCH_MAX_OPS": 25}


@pytest.mark.parametrize("batch", ["0", "1"])
def test_random_kills_and_flaky_customerio_lose_nothing_and_resurrect_no_one(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    batch: str,
    api: str,
) -> None:
    rng = random.Random(int(batch) + int(os.environ.get("CIOGUARD_FAULT_SEED", 7 if SOAK else 3)))
    cio.control.configure(
        fail_5xx_ratio=0.1, fail_429_ratio=0.02, retry_after_s=1, latency_ms=10, seed=11
    )
    env = {**FAST_REDELIVERY, "CIOGUARD_BATCH": batch}
    worker = start_worker(concurrency=2, **env)

    before: list[str] = []  # jobs that may be delivered or dropped
    after: list[str] = []  # jobs enqueued after their person's erasure request: must drop
    erased = set(rng.sample(range(PEOPLE), PEOPLE // 10))
    requests = []
    kill_points = sorted(rng.sample(range(PEOPLE // 4, PEOPLE), KILLS))
    for i in range(PEOPLE):
        before.append(producer.identify(f"f-{i}", {"email": f"f{i}@example.com", "n": i}))
        before.append(producer.track(f"f-{i}", "visited", {"n": i}))
        if i in erased:
            requests.append(producer.delete_person(f"f-{i}"))
            after.append(producer.identify(f"f-{i}", {"email": f"again{i}@example.com"}))
            after.append(producer.track(f"f-{i}", "came_back", {"n": i}))
        if kill_points and i == kill_points[0]:
            kill_points.pop(0)
            worker.kill()  # kill -9 of the node and its pool, mid-flight
            worker = start_worker(concurrency=2, **env)

    total = len(before) + len(after) + len(requests)
    try:
        wait_for_finals(producer.audit, total, timeout_s=600 if SOAK else 240)
    except AssertionError:
        _diagnose(producer, before + after, cio)
        raise

    rows = final_rows(producer.audit)
    finals = collections.Counter(r["final_job_id"] for r in rows)
    assert len(rows) == total and max(finals.values()) == 1  # nothing lost, nothing twice
    outcome = {r["final_job_id"]: r["outcome"] for r in rows}
    assert {outcome[j] for j in after} == {"dropped"}  # no resurrection
    assert {outcome[j] for j in before} <= {"delivered", "dropped"}
    assert all(producer.deletion_status(r).state == "completed" for r in requests)
    detail = {r["final_job_id"]: r["detail"] for r in rows}
    _assert_customerio_holds_what_the_audit_says(cio, before, after, outcome, detail, erased)


def _assert_customerio_holds_what_the_audit_says(
    cio: SandboxServer,
    before: list[str],
    after: list[str],
    outcome: dict[str, str],
    detail: dict[str, str | None],
    erased: set[int],
) -> None:
    """Compare the events Customer.io accepted (by event id = job id) with the audit.

    Every event recorded "delivered" reached Customer.io. An event may also have reached it
    while its job ends "dropped": the worker was killed after sending and before recording,
    and the redelivery found the person's erasure recorded in between. That is allowed only
    for erased people, whose data the deletion then removed, and the trail must say so.
    Nothing enqueued after an erasure request ever reaches Customer.io, and no erased person
    has data there at the end.
    """
    accepted = cio.control.event_ids()
    delivered = {j for j in before[1::2] if outcome[j] == "delivered"}
    assert delivered <= accepted
    erased_tracks = {before[2 * i + 1] for i in erased}  # before = [identify, track] per person
    assert accepted - delivered <= erased_tracks
    assert all(detail[j] == ERASED_AFTER_ATTEMPT_DETAIL for j in accepted - delivered)
    assert not accepted & set(after)
    for i in erased:
        assert cio.control.person(f"f-{i}") is None and cio.control.events(f"f-{i}") == []


def _diagnose(producer: Producer, jobs: list[str], cio: SandboxServer) -> None:
    import redis

    done = {r["final_job_id"] for r in final_rows(producer.audit)}
    missing = [j for j in jobs if j not in done]
    client = redis.Redis.from_url(producer.settings.broker_url)
    print("MISSING", missing)
    print(
        "queue",
        client.llen("cioguard"),
        "unacked",
        client.hlen("unacked"),
        "index",
        client.zcard("unacked_index"),
    )
    bodies = [r["body"] for r in cio.control.requests()]
    for j in missing:
        kind = "track" if j in jobs[1::2] else "identify"
        print("JOB", j, kind, "seen by sandbox:", sum(1 for b in bodies if j in b))
    for key, body in client.hgetall("unacked").items():
        print("UNACKED", key, body[:300])
