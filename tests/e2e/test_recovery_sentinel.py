"""A real Redis Sentinel failover under load: a master, a replica and three sentinels.

All are Debian's ``redis-server`` on free loopback ports (the sentinels as ``redis-server
CONF --sentinel``, which is what Debian's ``redis-sentinel`` runs). The worker, the producer, the
limiter and the tombstones reach Redis through a ``sentinel://`` URL. The master is killed with
-9 (or demoted by ``SENTINEL FAILOVER``) while jobs are being delivered; the sentinels promote
the replica, the worker reconnects to it by itself with cioguard's reliable channel, and every
job, published before or after the failover, ends with exactly one final audit row. The default
visibility timeout (900 s) is left alone: what the old channel held comes back through the
ownership sweep (15 s), not the visibility timeout. ``CIOGUARD_SOAK=1`` runs a larger load.

Regression: kombu took the ``;``-separated sentinel URL's later parts for failover alternates
and, on the first reconnect that failed (no master promoted yet), switched to one of them with
kombu's own transport (``Connection.switch`` takes the transport from the URL scheme): the worker
then consumed with stock BRPOP, no reliable channel swept the old channel's messages, and they
stayed unacknowledged until the visibility timeout. The in-flight registry check below fails then.
A second cause of the same symptom: Celery clears its event loop's timer on a lost connection,
which stopped celery-batches' flush timer for good, so the last messages of a buffer that never
filled again were never run (see ``cioguard.broker.batches`` and its test in test_recovery.py).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cioguard.broker.transport import INFLIGHT_REGISTRY
from cioguard.cli import check
from cioguard.config import Settings
from cioguard.erasure.tombstones import SET_KEY
from cioguard.errors import BrokerUnavailableError
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess, free_port
from tests.conftest import settings_from
from tests.helpers import final_count, final_rows, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]
MASTER = "mymaster"
SOAK = os.environ.get("CIOGUARD_SOAK") == "1"
QUEUE_SUFFIX = ":cioguard"
"""In-flight lists of the task queue end so (``_cioguard.inflight:<token>:cioguard``)."""


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
                ["redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        wait_until(self._replica_known, timeout_s=30, what="the sentinels to see the replica")

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[n], socket_timeout=1)

    def _replica_known(self) -> bool:
        try:
            return all(
                any(r.get("port") == self.replica_port for r in s.sentinel_slaves(MASTER))
                for s in (self.sentinel(n) for n in range(3))
            )
        except redis.RedisError:
            return False

    def master_now(self) -> int | None:
        with contextlib.suppress(redis.RedisError):
            _, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER)
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


def _tokens(client: redis.Redis) -> set[str]:
    """The channel tokens of the task queue's in-flight lists in the registry."""
    keys = (k.decode() for k in client.zrange(INFLIGHT_REGISTRY, 0, -1))
    return {k.split(":")[1] for k in keys if k.endswith(QUEUE_SUFFIX)}


def _fail_over(group: Group, how: str) -> None:
    """Kill the master, or have the sentinels demote it; returns once the replica is master
    and the old master, if alive, has stopped taking writes (it is a replica then)."""
    if how == "kill -9":
        group.kill("master")  # the sentinels notice after ~1 s (down-after) and promote
    else:
        group.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER)
    wait_until(lambda: group.master_now() == group.replica_port, timeout_s=60, what="failover")
    if how != "kill -9":
        old = redis.Redis(port=group.master_port, socket_timeout=1)
        wait_until(lambda: old.info("replication")["role"] == "slave", what="old master demoted")


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


def _dump_stacks(workers: list[WorkerProcess]) -> None:
    """On a failure, have each live worker write its threads' stacks to its log (Celery's
    SIGUSR1 handler), to see where a stalled event loop waits."""
    for worker in workers:
        if worker._proc is not None and worker._proc.poll() is None:
            os.kill(worker._proc.pid, signal.SIGUSR1)
    time.sleep(2)


def _diagnose(group: Group, producer: Producer) -> None:
    """What is where when jobs are missing (job ids and message headers only, no payloads)."""
    new = redis.Redis(port=group.replica_port)
    keys = sorted(k.decode() for k in new.keys("_cioguard*"))
    print("DIAG queue", new.llen("cioguard"), "unacked", new.hlen("unacked"), "keys", keys)
    print("DIAG owners", new.zrange("_cioguard.owners", 0, -1, withscores=True), new.time())
    for key in keys:
        if key.startswith("_cioguard.owned:"):
            print("DIAG owned", key, new.hlen(key))
    finals = {r["final_job_id"] for r in final_rows(producer.audit)}
    for tag, raw in list(new.hscan_iter("unacked"))[:5]:
        message = json.loads(raw)[0]
        headers = message["headers"]
        print("DIAG unacked", tag.decode(), headers["id"], headers.get("retries"),
              headers.get("eta"), message["properties"]["delivery_info"].get("redelivered"),
              "final" if headers["id"] in finals else "not final")  # fmt: skip


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    g = Group(tmp_path / "sentinel")
    g.root.mkdir()
    try:
        g.start()
        yield g
    finally:
        g.stop()


@pytest.mark.parametrize("how", ["kill -9", "demoted"])
def test_a_sentinel_failover_loses_no_job_and_the_worker_follows_the_new_master(
    how: str,
    group: Group,
    env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    producer = Producer(settings_from({**env, "CIOGUARD_BROKER_URL": group.url}))
    producer.audit.migrate()
    started: list[WorkerProcess] = []
    bucket = "cioguard:rl:track:bucket"  # the worker's limiter bucket (CIOGUARD_API=track)
    try:
        cio.control.configure(latency_ms=1500)  # deliveries are under way when the master dies
        count = 3000 if SOAK else 600
        before = [producer.identify(f"s-{i}", {"email": f"s{i}@example.com"}) for i in range(count)]
        assert not producer.tombstones.is_erased("0" * 64)  # its client now knows the old master
        worker = start_worker(concurrency=2, CIOGUARD_BROKER_URL=group.url)
        started.append(worker)
        wait_until(lambda: final_count(producer.audit) >= 60, what="some deliveries")
        replica = redis.Redis(port=group.replica_port)
        master = redis.Redis(port=group.master_port)
        wait_until(
            lambda: replica.info("replication").get("master_link_status") == "up",
            what="the replica in sync",
        )
        assert replica.llen("cioguard") + master.hlen("unacked") > 0  # work still queued
        assert master.exists(bucket)  # the limiter works on this master
        old_tokens = _tokens(master)
        assert old_tokens  # the worker's reliable channel registered its in-flight list
        started = time.monotonic()
        _fail_over(group, how)
        failed_over = time.monotonic() - started
        replica.delete(bucket)  # comes back only if the worker's limiter reaches the new master
        cio.control.configure(latency_ms=0)
        after = [_track_when_the_broker_answers(producer, i) for i in range(100)]
        producer.tombstones.add("f" * 64)  # the producer's tombstone client follows too
        assert replica.sismember(SET_KEY, "f" * 64)
        wait_until(
            lambda: bool(_tokens(replica) - old_tokens),  # a new reliable channel, not kombu's
            timeout_s=30,
            what="the worker consuming from the new master with cioguard's channel",
        )
        found = check.check_broker(Settings(CIOGUARD_BROKER_URL=group.url))
        assert found.ok, found.message  # `cioguard check` follows the sentinels to the new master
        total = len(before) + len(after)
        try:
            wait_until(lambda: final_count(producer.audit) >= total, timeout_s=90, what="all jobs")
        except AssertionError:
            _diagnose(group, producer)
            raise
        print(f"\nRECOVERY sentinel failover ({how}) {failed_over:.1f} s, all {total} final "
              f"{time.monotonic() - started:.1f} s after it began")  # fmt: skip
        rows = final_rows(producer.audit)
        finals = collections.Counter(r["final_job_id"] for r in rows)
        assert set(finals) == set(before + after)  # nothing lost
        assert max(finals.values()) == 1  # nothing recorded twice
        assert {r["outcome"] for r in rows} == {"delivered"}
        assert replica.exists(bucket)  # the worker's limiter followed the failover
        assert worker._proc is not None and worker._proc.poll() is None  # reconnected, alive
    except AssertionError:
        _dump_stacks(started)
        raise
    finally:
        producer.audit.dispose()
        producer.celery.close()
