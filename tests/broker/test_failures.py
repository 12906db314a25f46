"""Broker failures name their cause, in the application, in ``cioguard check``, never a secret.

Against real servers: a Redis user with a wrong password (ACL), a Redis at ``maxmemory``, a real
replica, a Redis Cluster node, a TLS server whose certificate is not trusted (the sandbox), and a
port nobody listens on.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cioguard.broker import failures
from cioguard.cli import check
from cioguard.config import Settings
from cioguard.errors import BrokerUnavailableError
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, free_port
from tests.conftest import settings_from

SECRET = "hunter2-Secret"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _producer(env: dict[str, str], url: str) -> Producer:
    return Producer(settings_from({**env, "CIOGUARD_BROKER_URL": url}))


def _enqueue_error(env: dict[str, str], url: str) -> str:
    producer = _producer(env, url)
    try:
        with pytest.raises(BrokerUnavailableError) as caught:
            producer.identify("person-1", {"email": "p1@example.com"})
    finally:
        producer.celery.close()
    message = str(caught.value)
    assert SECRET not in message and "p1@example.com" not in message and "person-1" not in message
    return message


def _check(url: str) -> str:
    found = check.check_broker(Settings(CIOGUARD_BROKER_URL=url))
    assert not found.ok
    assert SECRET not in found.line()
    return found.message


def test_a_wrong_password_says_authentication(
    env: dict[str, str], redis_server: RedisServer, client: redis.Redis
) -> None:
    client.acl_setuser("cioguard-app", enabled=True, passwords=["+right-one"], keys="*",
                       commands=["+@all"])  # fmt: skip
    try:
        url = f"redis://cioguard-app:{SECRET}@127.0.0.1:{redis_server.port}/0"
        assert "refused the credentials" in _enqueue_error(env, url)
        assert "refused the credentials" in _check(url)
    finally:
        client.acl_deluser("cioguard-app")


def test_redis_out_of_memory_says_so(
    env: dict[str, str], redis_url: str, client: redis.Redis
) -> None:
    client.config_set("maxmemory", "1")
    try:
        assert "is out of memory" in _enqueue_error(env, redis_url)
    finally:
        client.config_set("maxmemory", "0")


@pytest.fixture
def replica(redis_server: RedisServer) -> Iterator[RedisServer]:
    with RedisServer() as server:
        c = redis.Redis(port=server.port)
        c.replicaof("127.0.0.1", redis_server.port)
        deadline = time.monotonic() + 10
        while c.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield server
        c.replicaof("NO", "ONE")
        c.close()


def test_a_read_only_replica_is_refused_and_named(
    env: dict[str, str], replica: RedisServer
) -> None:
    assert "read-only replica" in _enqueue_error(env, replica.url)
    assert "read-only replica" in _check(replica.url)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_cluster_node_is_refused_with_the_reason(tmp_path: Any) -> None:
    port = free_port()
    while port + 10000 > 65535:  # a cluster node also binds its bus port, port + 10000
        port = free_port()
    nodes = str(tmp_path / "nodes.conf")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", nodes, "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 60  # a loaded machine can be slow to start a server
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port).ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server (cluster mode) exited at start"
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "Redis Cluster node" in _check(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_untrusted_certificate_says_tls_verification(
    env: dict[str, str], cio: SandboxServer
) -> None:
    url = f"rediss://:{SECRET}@127.0.0.1:{cio.port}/0"  # a TLS server whose CA is not given
    assert "failed TLS verification" in _enqueue_error(env, url)
    assert "failed TLS verification" in _check(url)


def test_nobody_listening_says_unreachable(env: dict[str, str]) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    assert "did not answer" in _enqueue_error(env, url)
    assert "does not answer" in _check(url)


def test_check_warns_when_tls_verification_is_off() -> None:
    assert check._tls_unverified("rediss://h:6380/0?ssl_cert_reqs=none")
    assert check._tls_unverified("rediss://h:6380/0?ssl_cert_reqs=CERT_NONE")
    assert not check._tls_unverified("rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem")
    assert not check._tls_unverified("redis://h:6379/0")


def test_the_classifier_reads_causes_not_messages() -> None:
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = redis.exceptions.ReadOnlyError("READONLY You can't write against a replica")
    assert failures.classify(wrapped) == failures.READ_ONLY
    assert "READONLY" not in failures.describe(wrapped)
