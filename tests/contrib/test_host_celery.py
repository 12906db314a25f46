"""cioguard beside an application's own Celery app: the application keeps every one of its tasks.

Celery binds every ``@shared_task`` to the *current* app. cioguard builds its apps lazily (the
producer on the first ``identify``, the webhook sender on first use), so an app of cioguard's that
made itself current would take over the application's tasks: their ``.delay()`` would land in
cioguard's queue, where cioguard's worker drops them as unregistered. Here the application's app is
created first, cioguard is used (producer, webhook sender, worker module imported in the
application's worker), and every application task must still reach the application's worker.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import celery
import pytest
import redis

from cioguard.broker.celeryconf import QUEUE, build_celery
from cioguard.config import Settings
from cioguard.producer.api import Producer
from cioguard.sandbox.devstack import WorkerProcess
from cioguard.webhooks.intake import event_sender
from tests.conftest import settings_from
from tests.helpers import wait_for_finals, wait_until

ROOT = Path(__file__).resolve().parents[2]


class HostWorker(WorkerProcess):
    """The application's own worker: ``celery -A tests.contrib.host_celery_app worker``."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "tests.contrib.host_celery_app", "worker",
            "-Q", "hostapp", "--concurrency", "1", "--hostname", self.name, "--pool", "prefork",
            "--without-gossip", "--without-mingle", "--loglevel", "INFO",
        ]  # fmt: skip


def test_build_celery_leaves_the_current_and_default_app_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = celery.current_app._get_current_object()
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "not_imported.settings")
    app = build_celery(Settings(CIOGUARD_BROKER_URL="redis://127.0.0.1:1/0"), "isolation")
    assert celery.current_app._get_current_object() is before
    assert app is not before
    assert app._fixups == []  # Celery's Django fix-up would set it as default and hook signals
    app.close()


@pytest.fixture
def host_worker(tmp_path: Path, env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker_env = {
        **env, "HOSTAPP_BROKER_URL": env["CIOGUARD_BROKER_URL"],
        "CIOGUARD_AUDIT_URL": f"sqlite:///{tmp_path / 'host-audit.db'}",  # cioguard's start-up
        # would create it (celeryd_init migrates the audit store): it must stay absent
        "HOSTAPP_IMPORT_CIOGUARD_WORKER": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    worker = HostWorker(worker_env, log_path=tmp_path / "host-worker.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.mark.e2e
def test_the_application_keeps_its_tasks_after_using_cioguard(
    env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    host_worker: WorkerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTAPP_BROKER_URL", env["CIOGUARD_BROKER_URL"])
    monkeypatch.delitem(sys.modules, "tests.contrib.host_celery_app", raising=False)
    previous = celery.current_app._get_current_object()
    host = importlib.import_module("tests.contrib.host_celery_app")  # the application starts
    assert celery.current_app._get_current_object() is host.app
    cioguard_worker = start_worker()

    producer = Producer(settings_from(env))  # builds cioguard's producer app after the host's
    sender = event_sender(settings_from(env))
    try:
        jobs = [producer.identify("user-7", {"plan": "pro"}), producer.track("user-7", "signed_up")]
        assert celery.current_app._get_current_object() is host.app
        for user in range(5):
            host.send_welcome_email.delay(user)
            host.bill.delay(user)
        host.send_welcome_email.apply_async(args=[99], countdown=0)

        client = redis.Redis.from_url(env["CIOGUARD_BROKER_URL"])
        expected = {f"send_welcome_email {u}" for u in [*range(5), 99]}
        expected |= {f"bill {u}" for u in range(5)}

        def all_done() -> bool:
            return {line.decode() for line in client.lrange(host.DONE, 0, -1)} >= expected

        wait_until(all_done, timeout_s=60, what="the application's tasks on its worker")
        assert client.llen(host.DONE) == len(expected)  # each ran once, none lost or doubled
        wait_for_finals(producer.audit, len(jobs), timeout_s=60)
        assert client.llen(QUEUE) == 0
        client.close()
    finally:
        celery._state._set_current_app(previous)  # the next tests start as before
        host.app.close()
        sender._celery.close()
        producer.celery.close()
        producer.audit.dispose()
    cioguard_worker.stop()
    host_worker.stop()
    cioguard_log = (tmp_path / "worker-0.log").read_text(errors="replace")
    host_log = (tmp_path / "host-worker.log").read_text(errors="replace")
    assert "unregistered task" not in cioguard_log.lower()
    assert "hostapp." not in cioguard_log  # none of the application's tasks reached cioguard
    assert "unregistered task" not in host_log.lower()
    assert not (tmp_path / "host-audit.db").exists()  # cioguard's worker set-up never ran there
