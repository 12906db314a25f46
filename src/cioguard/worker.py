"""The Celery app the worker runs (``celery -A cioguard.worker`` / ``cioguard worker``).

Configuration is checked when this module is imported: a missing or malformed setting stops the
worker with one line naming the variable, before Celery starts anything. Signals initialize
logging and Sentry early enough for the Celery integration to hook in (celery-pitfalls.md), and
again in each forked pool process.

Celery's signals are process-global: each receiver here first checks that the worker sending it
runs this module's ``app``, so a process that imports this module beside another Celery app (an
application's own worker, a test) never gets cioguard's logging, Sentry or metrics set-up.
``app`` itself is never current or default outside its own worker (``build_celery``).
"""

from __future__ import annotations

import sys
from typing import Any

from celery import signals
from celery._state import get_current_app

from cioguard.broker.celeryconf import build_celery
from cioguard.config import Settings, get_settings
from cioguard.delivery.credentials import source_from_spec
from cioguard.errors import CioguardError, ConfigurationError
from cioguard.ops import metrics
from cioguard.privacy.policy import load_policy


def _checked_settings() -> Settings:
    """Settings plus everything delivery needs; exits with one line on a configuration error."""
    try:
        settings = get_settings()
        settings.require_application()
        load_policy(settings.policy_path)
        source_from_spec(settings.secrets_source, api=settings.api).get()  # the chosen API's key
    except ConfigurationError as exc:
        sys.exit(f"cioguard: configuration error: {exc}")
    return settings


settings = _checked_settings()
app = build_celery(settings)
app.conf.worker_send_task_events = settings.task_events  # Flower sees every job (-E by default)

from cioguard import tasks  # noqa: E402
from cioguard.webhooks import handlers  # noqa: E402

tasks.register(app, settings)
handlers.register(app)


def _ours(instance: Any = None) -> bool:
    """Whether the signal comes from a worker of ``app`` (the sender's app, else the current)."""
    sender_app = getattr(instance, "app", None)
    return (sender_app if sender_app is not None else get_current_app()) is app


@signals.celeryd_init.connect
def _on_worker_init(instance: Any = None, **_: Any) -> None:
    if not _ours(instance):
        return
    from cioguard.audit.store import AuditStore
    from cioguard.ops.observability import init_process

    init_process(settings, role="worker")
    if settings.metrics_port:
        metrics.setup_multiprocess()  # before the pool forks (see metrics.py)
    store = AuditStore.from_url(settings.audit_url)
    try:
        store.migrate()
    except CioguardError as exc:  # SystemExit passes through Celery's signal dispatch
        sys.exit(f"cioguard: audit store not usable at start: {exc}")
    finally:
        store.dispose()


@signals.worker_process_init.connect
def _on_pool_process_init(**_: Any) -> None:
    if not _ours():
        return
    from cioguard.ops.observability import init_process

    init_process(settings, role="worker-process")


_relay: list[Any] = []


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    from cioguard.delivery.relay import OutboxRelay

    if not _ours(sender):
        return
    if settings.metrics_port:
        metrics.start_server(
            settings.metrics_port, settings.audit_url, addr=settings.metrics_addr,
            broker_url=settings.broker_url,
        )  # fmt: skip
    relay = OutboxRelay(app, settings)
    relay.start()
    _relay.append(relay)


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    for relay in _relay:  # started only by this app's worker_ready
        relay.stop()


@signals.worker_process_shutdown.connect
def _on_pool_process_exit(pid: int, **_: Any) -> None:
    if _ours():
        metrics.process_exited(pid)
