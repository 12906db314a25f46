"""A retry the broker will not take is never dropped (issue 13, item 4), at the shipped defaults.

Customer.io answers 503 to everything while Redis is at ``maxmemory`` with ``noeviction`` (what a
growing backlog during an outage leads to): Celery's ``retry()`` cannot publish and would turn
that into ``Reject(requeue=False)``, dropping the message. cioguard keeps it: every job ends with
a final row, or is still in Redis (queued, or unacknowledged and owned), in both modes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess
from tests.conftest import settings_from
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e
JOBS = 6


def _present(client: redis.Redis, job_id: str) -> bool:
    """Whether a message of ``job_id`` is anywhere in Redis (a queue, an in-flight list, the
    unacknowledged hash)."""
    needle = job_id.encode()
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = list(client.hvals(key))
        else:
            continue
        if any(needle in value for value in values):
            return True
    return False


@pytest.mark.parametrize("batch", ["0", "1"])
def test_retries_during_a_5xx_storm_with_redis_out_of_memory_are_kept(
    batch: str, env: dict[str, str], tmp_path: Path, cio: SandboxServer
) -> None:
    with RedisServer() as broker:
        live = {**env, "CIOGUARD_BROKER_URL": broker.url, "CIOGUARD_BATCH": batch}
        app = Producer(settings_from(live))
        client = redis.Redis.from_url(broker.url)
        cio.control.configure(fail_5xx_ratio=1.0)
        log = tmp_path / "worker.log"
        worker = WorkerProcess(live, concurrency=2, log_path=log).start()
        try:
            jobs = [app.identify(f"storm-{n}", {"plan": "pro"}) for n in range(JOBS)]
            wait_until(
                lambda: cio.control.stats()["requests_total"] >= 3, what="the first attempts"
            )
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "1")  # every write that allocates is refused (OOM)
            time.sleep(12)  # countdowns of 2-8 s come due and cannot be published
            client.config_set("maxmemory", "0")
            cio.control.configure(fail_5xx_ratio=0.0)
            time.sleep(3)
            for job_id in jobs:
                final = app.audit.final_row(job_id)
                assert final is not None or _present(client, job_id), f"{job_id} was dropped"
        finally:
            client.config_set("maxmemory", "0")
            worker.stop()
            client.close()
            app.audit.dispose()
            app.celery.close()
        text = log.read_text(errors="replace")
        if batch == "0":  # batched, the claim (BLMOVE) is refused too: the retries stay queued
            assert "could not re-publish; message kept" in text
        assert not any(f"storm-{n}" in text for n in range(JOBS))
