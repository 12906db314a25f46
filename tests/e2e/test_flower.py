"""Flower against a real worker: it shows the work (names, ids, states, runtimes), never people.

Flower runs as an operator would start it (:func:`cioguard.ops.flower.flower_command`: basic auth
from ``FLOWER_BASIC_AUTH``, ``--read_only``, not persistent) against the private Redis; the
first test starts it with ``cioguard flower``, the command itself, next to a full environment.

Task events: cioguard workers send them from their first job (``CIOGUARD_TASK_EVENTS``, default
on), so Flower sees every job without switching events on itself; the switch turns them off.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cioguard.broker.celeryconf import QUEUE, build_celery
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import final_count, wait_until
from tests.leaks import (
    Canary,
    FlowerProcess,
    canary_attributes,
    dump_flower,
    enable_events,
    find_hits,
    make_canaries,
)

pytestmark = pytest.mark.e2e

SEALED = "('<sealed>',)"


@pytest.fixture
def flower(env: dict[str, str], tmp_path: Path) -> Iterator[FlowerProcess]:
    password = secrets.token_urlsafe(16)
    with FlowerProcess(env["CIOGUARD_BROKER_URL"], user="ops", password=password,
                       log_path=tmp_path / "flower.log") as process:  # fmt: skip
        yield process


@pytest.mark.parametrize("batch", ["0", "1"])
def test_flower_needs_auth_and_shows_work_without_people(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    flower: FlowerProcess,
    batch: str,
) -> None:
    worker = start_worker(concurrency=2, CIOGUARD_BATCH=batch)
    enable_events(producer.settings, worker.name)
    sets = [make_canaries(f"-fl{i}") for i in range(5)]
    jobs = {producer.identify(c["person"].value, canary_attributes(c)): "delivered" for c in sets}
    jobs[producer.track(sets[0]["person"].value, "checkout", {"plan": "pro"})] = "delivered"
    gone = make_canaries("-gone")["person"].value
    producer.delete_person(gone)
    wait_until(lambda: final_count(producer.audit) >= len(jobs) + 1, what="final rows")

    with flower.client() as client:
        wait_until(lambda: _finished(client.get("/api/tasks").json()) >= len(jobs) + 1,
                   timeout_s=60, what="Flower to see every task")  # fmt: skip
        tasks = client.get("/api/tasks").json()
    for job_id, outcome in jobs.items():
        task = tasks[job_id]
        assert (task["name"], task["uuid"], task["state"]) == ("cioguard.deliver", job_id,
                                                              "SUCCESS")  # fmt: skip
        assert isinstance(task["runtime"], float)
        assert (task["args"], task["kwargs"], task["result"]) == (SEALED, "{}", repr(outcome))
    erase = [t for t in tasks.values() if t["name"] == "cioguard.erase"]
    assert len(erase) == 1 and erase[0]["state"] == "SUCCESS" and erase[0]["args"] == SEALED

    surfaces = dump_flower(flower, [worker.name])
    assert all("Unknown worker" not in text for text in surfaces.values())
    people = [c for s in sets for c in s.values()]
    assert find_hits(surfaces, [*people, Canary("gone", gone, (gone,))]) == []


def _finished(tasks: dict[str, dict[str, object]]) -> int:
    return sum(1 for t in tasks.values() if t.get("state") == "SUCCESS")


def test_flower_refuses_anonymous_and_control(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    flower: FlowerProcess,
) -> None:
    worker = start_worker(concurrency=1)
    with flower.client(auth=False) as anonymous:
        for path in ("/api/tasks", "/api/workers", "/api/task/info/x", "/", "/tasks",
                     f"/worker/{worker.name}"):  # fmt: skip
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/healthcheck").status_code == 200
    with flower.client() as client:
        client.auth = ("ops", "not-the-password")
        assert client.get("/api/tasks").status_code == 401

    client_redis = redis.Redis.from_url(producer.settings.broker_url)
    try:
        with flower.client() as client:
            sent = client.post("/api/task/send-task/cioguard.erase", json={"args": ["x"]})
            assert sent.status_code == 403 and "Read only" in sent.text
            assert client.post(f"/api/worker/shutdown/{worker.name}").status_code == 403
            assert client.post(f"/api/worker/pool/restart/{worker.name}").status_code == 403
            assert client.post("/api/task/revoke/some-id").status_code == 403
        assert client_redis.llen(QUEUE) == 0
    finally:
        client_redis.close()
    control = build_celery(producer.settings, "flower-test-ping")
    try:
        assert control.control.ping(destination=[worker.name], timeout=5)
    finally:
        control.close()


# -- a fresh worker's first jobs, through `cioguard flower` -----------------------------------


class CliFlower(FlowerProcess):
    """Flower started by ``cioguard flower`` with a worker's whole environment (keys included):
    the command must hand Flower the broker URL and its own auth only."""

    def __init__(self, env: dict[str, str], *, password: str, log_path: Path) -> None:
        super().__init__(env["CIOGUARD_BROKER_URL"], user="ops", password=password,
                         log_path=log_path)  # fmt: skip
        self.env = {**os.environ, **env, "FLOWER_BASIC_AUTH": f"ops:{password}"}

    def start(self, timeout_s: float = 60) -> CliFlower:
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        command = [sys.executable, "-m", "cioguard", "flower", "--address=127.0.0.1",
                   f"--port={self.port}"]  # fmt: skip
        self._proc = subprocess.Popen(command, env=self.env, stdout=self._log,
                                      stderr=self._log, start_new_session=True)  # fmt: skip
        wait_until(self._healthy, timeout_s=timeout_s, what="cioguard flower to answer")
        return self

    def _healthy(self) -> bool:
        assert self._proc is not None and self._proc.poll() is None, "flower exited"
        try:
            return httpx.get(f"{self.url}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def environment(self) -> dict[str, str]:
        """The running Flower's environment (exec kept the pid)."""
        assert self._proc is not None
        raw = Path(f"/proc/{self._proc.pid}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _listening_for_events(client: redis.Redis) -> bool:
    """Flower's event receiver has subscribed (kombu's Redis fanout: PSUBSCRIBE on celeryev)."""
    patterns = int(client.pubsub_numpat())
    channels = [c.decode() if isinstance(c, bytes) else str(c) for c in client.pubsub_channels()]
    return patterns > 0 or any("celeryev" in c for c in channels)


def test_flower_sees_every_first_job_of_a_fresh_worker(
    env: dict[str, str], producer: Producer, start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer, tmp_path: Path,
) -> None:  # fmt: skip
    cio.control.configure(fail_429_ratio=0.3, retry_after_s=1, seed=7)  # some jobs run twice
    password = secrets.token_urlsafe(16)
    broker = redis.Redis.from_url(env["CIOGUARD_BROKER_URL"])
    flower = CliFlower(env, password=password, log_path=tmp_path / "flower.log").start()
    try:
        seen = flower.environment()
        assert "CIOGUARD_PAYLOAD_KEY" not in seen and "CIOGUARD_HASH_KEY" not in seen
        assert "CUSTOMERIO_TRACK_API_KEY" not in seen and "CIOGUARD_AUDIT_URL" not in seen
        assert seen["CIOGUARD_BROKER_URL"] == env["CIOGUARD_BROKER_URL"]
        wait_until(lambda: _listening_for_events(broker), what="Flower to listen for events")
        # queued before the worker exists: they are its very first jobs
        jobs = [producer.identify(f"fresh-{i}", {"plan": "pro"}) for i in range(30)]
        jobs += [producer.track(f"fresh-{i}", "signed_up", {}) for i in range(10)]
        start_worker(concurrency=2)  # no enable_events: the worker sends them by default
        wait_until(lambda: final_count(producer.audit) >= len(jobs), timeout_s=120,
                   what="every job final")  # fmt: skip
        with flower.client() as client:
            wait_until(lambda: _delivered(client.get("/api/tasks").json(), jobs) == len(jobs),
                       timeout_s=60, what="Flower to show every job delivered")  # fmt: skip
            tasks = client.get("/api/tasks").json()
    finally:
        flower.stop()
        broker.close()
    assert {tasks[j]["state"] for j in jobs} == {"SUCCESS"}
    assert all(tasks[j]["args"] == SEALED for j in jobs)


def _delivered(tasks: dict[str, dict[str, Any]], jobs: list[str]) -> int:
    return sum(1 for j in jobs if tasks.get(j, {}).get("result") == repr("delivered"))


def _task_events(env: dict[str, str], run: Callable[[], None], count: int) -> list[str]:
    """Task event types a real Celery event receiver captured while ``run`` ran ``count`` jobs.

    It stops at ``count`` successes, or at the first worker heartbeat after ``run`` returned:
    the worker publishes its events in order, so nothing it sent for the jobs is still coming.
    """
    from cioguard.config import Settings

    url = env["CIOGUARD_BROKER_URL"]
    app = build_celery(Settings(CIOGUARD_BROKER_URL=url), "events-probe")
    seen: list[tuple[float, str]] = []
    broker = redis.Redis.from_url(url)
    try:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(
                conn, handlers={"*": lambda e: seen.append((time.monotonic(), e["type"]))}
            )
            thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False},
                                      daemon=True)  # fmt: skip
            thread.start()
            wait_until(lambda: _listening_for_events(broker), what="the receiver to subscribe")
            run()
            done_at = time.monotonic()

            def settled() -> bool:
                types = [t for _, t in seen]
                late_beat = any(t == "worker-heartbeat" and at > done_at for at, t in seen)
                return types.count("task-succeeded") >= count or late_beat

            wait_until(settled, timeout_s=60, what="the worker's events to settle")
            receiver.should_stop = True
            thread.join(timeout=10)
    finally:
        broker.close()
        app.close()
    return [t for _, t in seen if t.startswith("task-")]


@pytest.mark.parametrize("events", ["1", "0"])
def test_the_task_events_switch(
    env: dict[str, str], producer: Producer, start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer, events: str,
) -> None:  # fmt: skip
    jobs = [producer.identify(f"ev-{i}", {"plan": "pro"}) for i in range(5)]

    def run() -> None:
        start_worker(concurrency=1, CIOGUARD_TASK_EVENTS=events, CIOGUARD_BATCH="0")
        wait_until(lambda: final_count(producer.audit) >= len(jobs), what="every job final")

    types = _task_events(env, run, len(jobs))
    if events == "1":
        assert types.count("task-succeeded") == len(jobs)
        assert types.count("task-received") == len(jobs)
    else:
        assert types == []
