"""The worker's outbox relay: re-publish erasure requests whose job never reached the broker.

A daemon thread in the worker's main process calls :func:`cioguard.erasure.outbox.requeue`
every few seconds (a tenth of ``CIOGUARD_REQUEUE_AFTER_S``, between 1 and 60 s); each request is
claimed in the store first, so several workers publish it at most once per period.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from cioguard.audit.store import AuditStore
from cioguard.broker.celeryconf import ERASE_TASK, PUBLISH_RETRY_POLICY
from cioguard.broker.jobs import SEALED_REPR
from cioguard.config import Settings
from cioguard.erasure import outbox
from cioguard.errors import CioguardError

log = logging.getLogger("cioguard.erasure")


def publisher(app: Celery) -> outbox.Publish:
    """Publishes a sealed erase job through ``app`` (raises if the broker does not take it)."""

    def publish(sealed: str, job_id: str) -> None:
        app.send_task(
            ERASE_TASK, args=[sealed], task_id=job_id, argsrepr=SEALED_REPR, kwargsrepr="{}",
            retry=True, retry_policy=PUBLISH_RETRY_POLICY,
        )  # fmt: skip

    return publish


class OutboxRelay(threading.Thread):
    """Runs :func:`~cioguard.erasure.outbox.requeue` until :meth:`stop`."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        super().__init__(name="cioguard-outbox-relay", daemon=True)
        self._publish = publisher(app)
        self._settings = settings
        self._stopped = threading.Event()
        self.period_s = min(60.0, max(1.0, settings.requeue_after_s / 10))

    def run(self) -> None:
        store = AuditStore.from_url(self._settings.audit_url)
        try:
            while not self._stopped.wait(self.period_s):
                self.once(store)
        finally:
            store.dispose()

    def once(self, store: AuditStore) -> int:
        try:
            return outbox.requeue(store, self._publish, older_than_s=self._settings.requeue_after_s)
        except CioguardError as exc:  # the store is down: try again next period
            log.warning("outbox relay skipped a round", extra={"error_class": type(exc).__name__})
            return 0

    def stop(self) -> None:
        self._stopped.set()
