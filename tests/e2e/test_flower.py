"""Flower against a real worker: it shows the work (names, ids, states, runtimes), never people.

Flower runs as an operator would start it (:func:`cioguard.ops.flower.flower_command`: basic auth
from ``FLOWER_BASIC_AUTH``, ``--read_only``, not persistent) against the private Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

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
