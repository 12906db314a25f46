"""Erasure under faults: a worker killed with -9, a Redis restart, the audit store away.

Each test runs a bulk erasure against real processes, breaks something in the middle, and then
checks the end state only: every request completed, exactly one final row per job, every
person suppressed at the sandbox. The visibility timeout is lowered to 10 s so that messages a
dead worker had fetched come back within the test.
"""

from __future__ import annotations

import collections
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu.pools
import pytest
from sqlalchemy import create_engine, select, text

from cioguard.audit.chain import verify
from cioguard.audit.schema import audit_log
from cioguard.audit.store import AuditStore
from cioguard.producer import bulk
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess, free_port
from tests.conftest import PG_URL, settings_from
from tests.helpers import final_count, final_rows, wait_for_finals, wait_until

pytestmark = pytest.mark.e2e
VISIBILITY_S = 10
BATCH_OPS = 25
FAST_REDELIVERY = {
    "CIOGUARD_VISIBILITY_TIMEOUT_S": VISIBILITY_S,
    "CIOGUARD_BATCH_MAX_OPS": BATCH_OPS,
}
IN_FLIGHT = 2 * BATCH_OPS + 8
"""Erasures a kill may catch sent but not yet recorded: one batch per pool process (2), which
run again; suppressing twice is harmless (idempotent), recording twice is what must not happen."""


@pytest.fixture
def slow_sandbox(cio: SandboxServer) -> Iterator[SandboxServer]:
    """Every Track request takes 150 ms more, so a run lasts long enough to break it midway
    (batched, 300 erasures are 12 requests of 25 operations: about 1 s on two processes)."""
    cio.control.configure(latency_ms=150)
    yield cio
    cio.control.configure(latency_ms=0)


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


def _assert_all_completed_once(
    store: AuditStore, cio: SandboxServer, submitted: bulk.Submitted
) -> None:
    count = len(submitted.request_ids)
    rows = final_rows(store)
    assert len(rows) == count
    assert max(collections.Counter(r["final_job_id"] for r in rows).values()) == 1
    assert {r["outcome"] for r in rows} == {"completed"}
    states = collections.Counter(
        s for s in _states(store, submitted.request_ids).values()
    )  # fmt: skip
    assert states == {"completed": count}
    with store.reading() as conn:
        completed = conn.execute(
            select(audit_log.c.request_id).where(audit_log.c.outcome == "completed")
        ).all()
    assert len(completed) == len({r.request_id for r in completed}) == count
    stats = cio.control.stats()
    assert stats["suppressed"] == count
    suppress_calls = stats["ops_by_action"]["suppress"]  # v1 requests or v2 batch operations
    assert count <= suppress_calls <= count + IN_FLIGHT  # only jobs caught mid-flight ran twice
    assert verify(store).ok


def _states(store: AuditStore, request_ids: list[str]) -> dict[str, str]:
    from cioguard.erasure import requests as deletions

    return deletions.states(store, request_ids)


def _after_visibility_timeout(since: float) -> None:
    """Unacked messages of a dead consumer come back once they are older than the timeout."""
    time.sleep(max(0.0, since + VISIBILITY_S + 1 - time.monotonic()))


def test_kill_9_of_a_worker_mid_run_loses_no_request_and_completes_none_twice(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    slow_sandbox: SandboxServer,
) -> None:
    first = start_worker(concurrency=2, **FAST_REDELIVERY)
    submitted = bulk.submit(producer, _ids("kill", 300))
    wait_until(lambda: final_count(producer.audit) >= 30, what="a tenth of the run")
    first.kill()
    killed_at = time.monotonic()
    assert final_count(producer.audit) < 300, "the run ended before the kill"
    _after_visibility_timeout(killed_at)
    start_worker(concurrency=2, **FAST_REDELIVERY)
    wait_for_finals(producer.audit, 300, timeout_s=180)
    _assert_all_completed_once(producer.audit, slow_sandbox, submitted)


def test_a_redis_restart_with_aof_loses_no_request(
    env: dict[str, str],
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
    slow_sandbox: SandboxServer,
) -> None:
    data_dir, port = tmp_path / "redis-aof", free_port()
    data_dir.mkdir()
    server = RedisServer(appendonly=True, port=port, data_dir=data_dir).start()
    aof = {"CIOGUARD_BROKER_URL": server.url, **FAST_REDELIVERY}
    producer = Producer(settings_from({**env, **{k: str(v) for k, v in aof.items()}}))
    producer.audit.migrate()
    try:
        first = start_worker(concurrency=2, **aof)
        submitted = bulk.submit(producer, _ids("aof", 300))
        wait_until(lambda: final_count(producer.audit) >= 30, what="a tenth of the run")
        server.stop()  # SIGTERM; with appendfsync always every queued message is on disk
        stopped_at = time.monotonic()
        server = RedisServer(appendonly=True, port=port, data_dir=data_dir).start()
        assert final_count(producer.audit) < 300, "the run ended before the restart"
        first.stop()  # whatever it held unacked is in the restored AOF
        _after_visibility_timeout(stopped_at)
        kombu.pools.reset()  # this process's pooled broker connections died with the old Redis
        start_worker(concurrency=2, **aof)
        wait_for_finals(producer.audit, 300, timeout_s=180)
        _assert_all_completed_once(producer.audit, slow_sandbox, submitted)
    finally:
        producer.audit.dispose()
        producer.celery.close()
        server.stop()


@pytest.fixture
def pg_audit_db() -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A throwaway PostgreSQL database, and a switch that refuses/allows its connections."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"cioguard_fault_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def available(allow: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}'))
            if not allow:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = :name"),
                    {"name": name},
                )  # fmt: skip

    yield PG_URL.rsplit("/", 1)[0] + f"/{name}", available
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_an_unavailable_audit_store_makes_jobs_retry_not_finish_unrecorded(
    env: dict[str, str],
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
    slow_sandbox: SandboxServer,
    pg_audit_db: tuple[str, Callable[[bool], None]],
) -> None:
    url, available = pg_audit_db
    producer = Producer(settings_from({**env, "CIOGUARD_AUDIT_URL": url}))
    producer.audit.migrate()
    try:
        start_worker(concurrency=2, CIOGUARD_AUDIT_URL=url, **FAST_REDELIVERY)
        submitted = bulk.submit(producer, _ids("pg", 60))
        available(False)
        identifies = [producer.identify(f"live-{i}", {"plan": "pro"}) for i in range(40)]
        time.sleep(4)  # the outage: every job the worker takes now finds no audit store
        available(True)
        wait_for_finals(producer.audit, 100, timeout_s=180)
        rows = final_rows(producer.audit)
        assert max(collections.Counter(r["final_job_id"] for r in rows).values()) == 1
        by_job = {r["final_job_id"]: r["outcome"] for r in rows}
        assert all(by_job[j] == "delivered" for j in identifies)
        assert slow_sandbox.control.stats()["people"] == 40
        states = _states(producer.audit, submitted.request_ids)
        assert set(states.values()) == {"completed"}
        retried = [
            line for line in _log_lines(tmp_path / "worker-0.log")
            if line.get("msg") == "job retrying"
            and line.get("error_class") == "AuditUnavailableError"
        ]  # fmt: skip
        assert retried, "no job met the outage"
        assert verify(producer.audit).ok
    finally:
        producer.audit.dispose()
        producer.celery.close()


def _log_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines
