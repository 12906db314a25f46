"""Shared fixtures: a private Redis, the TLS sandbox, settings and a worker factory.

Path tests use real processes only: a private ``redis-server`` per session (so a flush never
touches anything else), the sandbox subprocess over TLS, and ``cioguard worker`` subprocesses.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cioguard.broker.envelope import new_key
from cioguard.config import Settings
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess
from cioguard.sandbox.state import FaultConfig

PG_URL = os.environ.get("CIOGUARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    ca = tmp_path_factory.mktemp("sandbox") / "ca.pem"
    with SandboxServer(ca_path=ca) as server:
        yield server


@pytest.fixture
def cio(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    """The shared sandbox, reset; at teardown, every request it received must have been one
    Customer.io's published spec allows (``spec_violations`` names the codes, never payloads)."""
    sandbox.control.reset()
    sandbox.control.configure(**FaultConfig().as_dict())
    sandbox.control.set_credentials([(sandbox.site_id, sandbox.api_key)])
    yield sandbox
    stats = sandbox.control.stats()
    assert stats["spec_violations"] == 0, (
        f"requests violating Customer.io's Track API spec: {stats['spec_violations_by_code']}"
    )


@pytest.fixture
def env(tmp_path: Path, redis_url: str, cio: SandboxServer) -> dict[str, str]:
    """The environment of a worker (and the producer) pointed at the sandbox."""
    return {
        "CIOGUARD_BROKER_URL": redis_url,
        "CIOGUARD_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}",
        "CIOGUARD_HASH_KEY": secrets.token_urlsafe(48),
        "CIOGUARD_PAYLOAD_KEY": new_key(),
        "CIOGUARD_TRACK_URL": cio.url,
        "CIOGUARD_CA_BUNDLE": str(cio.ca_path),
        "CUSTOMERIO_SITE_ID": cio.site_id,
        "CUSTOMERIO_TRACK_API_KEY": cio.api_key,
        "CIOGUARD_RATE_LIMIT": "500",
        "CIOGUARD_LOG_FORMAT": "json",
        "CIOGUARD_SECRETS": "env",
        "CIOGUARD_BATCH": "1",
    }


def settings_from(env: dict[str, str]) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


@pytest.fixture
def producer(env: dict[str, str]) -> Iterator[Producer]:
    p = Producer(settings_from(env))
    p.audit.migrate()
    yield p
    p.audit.dispose()
    p.celery.close()


@pytest.fixture
def start_worker(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(concurrency: int = 2, **overrides: Any) -> WorkerProcess:
        worker_env = {**env, **{k: str(v) for k, v in overrides.items()}}
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(worker_env, concurrency=concurrency, log_path=log)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
