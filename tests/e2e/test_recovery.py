"""Recovery at the shipped defaults (visibility timeout 900 s): nothing lost, nothing stuck.

Each scenario breaks something a real deployment sees and then waits for every job's final
audit row with a deadline far below the visibility timeout, so a pass proves the recovery came
from cioguard's ownership of claimed messages (:mod:`cioguard.broker.ownership`), the batch error
callback or the idempotent claim, not from the 900 s timeout. Nothing is recorded twice.

The measured recovery times are printed (run with ``-s``); they are reports, not assertions.
``CIOGUARD_SOAK=1`` runs the larger forms.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cioguard.broker.ownership import OWNED_PREFIX
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess
from tests.broker.proxy import DropOneReplyProxy
from tests.helpers import final_count, final_rows, wait_until

pytestmark = pytest.mark.e2e
SOAK = os.environ.get("CIOGUARD_SOAK") == "1"
DEADLINE_S = 90.0
"""Far below the 900 s visibility timeout: only cioguard's own recovery can meet it."""


def _owned(client: redis.Redis) -> int:
    return sum(int(client.hlen(k)) for k in client.scan_iter(match=f"{OWNED_PREFIX}*"))


def _assert_all_once(producer: Producer, jobs: list[str]) -> None:
    rows = final_rows(producer.audit)
    finals = collections.Counter(r["final_job_id"] for r in rows)
    assert set(finals) == set(jobs)  # nothing lost
    assert max(finals.values()) == 1  # nothing recorded twice
    assert {r["outcome"] for r in rows} == {"delivered"}


def _report(what: str, seconds: float) -> None:
    print(f"\nRECOVERY {what}: {seconds:.1f} s")


def test_kill_9_of_a_node_its_jobs_are_delivered_by_the_survivor(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    redis_url: str,
) -> None:
    count = 4000 if SOAK else 2400
    cio.control.configure(latency_ms=1000)  # ~200 jobs/s per node: each holds a full window
    jobs = [producer.identify(f"k-{i}", {"email": f"k{i}@example.com"}) for i in range(count)]
    client = redis.Redis.from_url(redis_url)
    doomed = start_worker(concurrency=2)
    wait_until(lambda: _owned(client) > 0, timeout_s=30, what="the doomed node to claim jobs")
    doomed_keys = list(client.scan_iter(match=f"{OWNED_PREFIX}*"))  # its token only, so far
    start_worker(concurrency=2)
    wait_until(lambda: final_count(producer.audit) >= count // 10, what="some deliveries")
    held = sum(int(client.hlen(k)) for k in doomed_keys)
    doomed.kill()  # kill -9 of the node and its pool
    killed_at = time.monotonic()
    assert held > 0
    wait_until(
        lambda: not any(client.exists(k) for k in doomed_keys),
        timeout_s=DEADLINE_S,
        what="the dead node's jobs to be handed back",
    )
    handed_back = time.monotonic() - killed_at
    wait_until(lambda: final_count(producer.audit) >= count, timeout_s=DEADLINE_S, what="every job")
    _report(f"kill -9 of a node: its {held} claimed jobs handed back", handed_back)
    _report(f"kill -9 of a node: all {count} jobs final", time.monotonic() - killed_at)
    _assert_all_once(producer, jobs)
    assert client.hlen("unacked") == 0
    client.close()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_kill_9_of_a_pool_child_mid_batch_hands_its_batch_back_at_once(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    redis_url: str,
) -> None:
    count = 1000 if SOAK else 300
    worker = start_worker(concurrency=1)  # one pool child: the one killed is the one sending
    [child] = _children(worker.pid)
    cio.control.configure(latency_ms=3000)  # every batch request waits 3 s in the stand-in
    before = int(cio.control.stats()["requests_total"])
    jobs = [producer.identify(f"c-{i}", {"email": f"c{i}@example.com"}) for i in range(count)]
    wait_until(
        lambda: int(cio.control.stats()["requests_total"]) > before,
        timeout_s=30,
        what="a batch request in flight",
    )
    os.kill(child, signal.SIGKILL)  # mid-request: the batch is neither sent nor acknowledged
    killed_at = time.monotonic()
    cio.control.configure(latency_ms=0)
    wait_until(lambda: final_count(producer.audit) >= count, timeout_s=DEADLINE_S, what="every job")
    _report(f"kill -9 of a pool child mid-batch, all {count} final", time.monotonic() - killed_at)
    _assert_all_once(producer, jobs)
    assert child not in _children(worker.pid)  # it really died (and was replaced)


def test_a_lost_reply_to_the_claim_loses_and_strands_nothing(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    redis_server: RedisServer,
) -> None:
    """A proxy between worker and Redis lets Redis run one claim and drops its reply; redis-py
    re-sends the EVAL. Without the claim id, the first claim's jobs would sit unacknowledged
    under a live owner until the visibility timeout."""
    count = 500
    jobs = [producer.identify(f"p-{i}", {"email": f"p{i}@example.com"}) for i in range(count)]
    proxy = DropOneReplyProxy(redis_server.port, b"Claim popped messages")
    try:
        started = time.monotonic()
        start_worker(concurrency=2, CIOGUARD_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/0")
        wait_until(
            lambda: final_count(producer.audit) >= count, timeout_s=DEADLINE_S, what="every job"
        )
        assert proxy.dropped == 1
        _report(f"a dropped claim reply, all {count} final", time.monotonic() - started)
    finally:
        proxy.close()
    _assert_all_once(producer, jobs)


def test_after_a_dropped_broker_connection_a_batch_that_never_fills_is_still_delivered(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
) -> None:
    """A reconnect restarts the batch buffers and their flush timer (see cioguard.broker.batches).

    Celery clears its event loop's timer when the connection drops. Without the restart, a
    buffer that never fills (3 jobs here, ``flush_every`` is 100) is never flushed again: neither
    the jobs buffered when the connection dropped nor those received after. The linger is the
    longest allowed (5 s) so the connection drops while the buffered jobs wait for their flush.
    """
    start_worker(concurrency=1, CIOGUARD_BATCH_LINGER_S=5)
    broker = redis.Redis.from_url(redis_url)
    first = [producer.identify(f"d-{i}", {"email": f"d{i}@example.com"}) for i in range(3)]
    wait_until(lambda: broker.hlen("unacked") == 3, what="the first jobs buffered")
    assert final_count(producer.audit) == 0  # still in the buffer: the flush is seconds away
    assert broker.client_kill_filter(_type="normal", skipme=True) > 0  # the worker's too
    dropped_at = time.monotonic()
    then = [producer.identify(f"e-{i}", {"email": f"e{i}@example.com"}) for i in range(3)]
    wait_until(lambda: final_count(producer.audit) >= 6, timeout_s=DEADLINE_S, what="every job")
    _report("a dropped broker connection, 3 + 3 jobs final", time.monotonic() - dropped_at)
    _assert_all_once(producer, first + then)


def test_a_dropped_pub_sub_connection_does_not_freeze_the_worker(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
) -> None:
    """The event loop's connections reconnect through kombu, never inside redis-py.

    redis-py retries a failed read once after reconnecting; kombu's pub/sub connection (Celery's
    broadcast commands) does not re-subscribe then, so the retried read, which has no timeout,
    waited for good and froze the worker's event loop whenever Redis (or, after a Sentinel
    failover, the new master) answered the reconnect: here, only the pub/sub clients are dropped.
    """
    start_worker(concurrency=1)
    broker = redis.Redis.from_url(redis_url)
    assert broker.client_kill_filter(_type="pubsub", skipme=True) > 0  # the worker's
    dropped_at = time.monotonic()
    jobs = [producer.identify(f"p-{i}", {"email": f"p{i}@example.com"}) for i in range(3)]
    wait_until(lambda: final_count(producer.audit) >= 3, timeout_s=DEADLINE_S, what="every job")
    _report("a dropped pub/sub connection, 3 jobs final", time.monotonic() - dropped_at)
    _assert_all_once(producer, jobs)
