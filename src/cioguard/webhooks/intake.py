"""How a verified webhook event becomes a sealed job on the queue, and the app built from settings.

The webhook app (:mod:`cioguard.webhooks.app`) only verifies, deduplicates and calls ``enqueue``.
This module supplies the production ``enqueue``: seal the whole event with the payload
:class:`~cioguard.broker.envelope.Envelope` (it carries e-mails under ``data.identifiers`` and
``recipient``), then ``send_task("cioguard.webhook")`` with the redacted ``argsrepr``, exactly as
the rest of the data path does. It also defines the sealed payload's format, which the worker
task (:mod:`cioguard.webhooks.handlers`) opens.

The job id (the Celery task id) is derived from the event's ``event_id``: a second enqueue of the
same event (Customer.io delivers at least once, and the app's dedupe claim can lapse) lands on the
same job id, whose final audit row makes the re-run a no-op.

Note: the intake needs only ``CUSTOMERIO_WEBHOOK_SECRET``, ``CIOGUARD_PAYLOAD_KEY`` and the
broker; it never sees ``CIOGUARD_HASH_KEY`` or Customer.io credentials. Person hashes are
computed in the worker.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cioguard.broker.celeryconf import WEBHOOK_TASK, build_celery
from cioguard.broker.envelope import Envelope
from cioguard.broker.jobs import SEALED_REPR
from cioguard.config import Settings, get_settings
from cioguard.errors import InvalidInputError

if TYPE_CHECKING:
    from starlette.applications import Starlette


PAYLOAD_VERSION = 1
PAYLOAD_KIND = "webhook"
JOB_ID_PREFIX = "webhook-"

INTAKE_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
"""One quick retry: a publish must end well inside Customer.io's 4-s timeout (a 503 is retried)."""


@dataclass(frozen=True)
class SealedEvent:
    """What the worker gets back from a sealed webhook payload."""

    event: dict[str, Any]
    received_at: float


def webhook_job_id(event_id: str) -> str:
    """The job (Celery task) id of an event: the same ``event_id`` always gives the same id.

    Hashed, so any ``event_id`` (length, characters) makes a short id that fits the audit columns.
    """
    digest = hashlib.sha256(event_id.encode("utf-8", errors="surrogatepass")).hexdigest()
    return JOB_ID_PREFIX + digest[:40]


def seal_event(envelope: Envelope, event: dict[str, Any], *, now: float | None = None) -> str:
    """Seal the whole event (PII included) with the time the intake received it."""
    received_at = time.time() if now is None else now
    payload = {"v": PAYLOAD_VERSION, "kind": PAYLOAD_KIND, "received_at": received_at}
    return envelope.seal({**payload, "event": event})


def open_event(envelope: Envelope, sealed: str) -> SealedEvent:
    """Open a payload made by :func:`seal_event`.

    Raises :class:`~cioguard.broker.envelope.EnvelopeError` when no key opens it and ``ValueError``
    (fixed text, no payload) when it is not a webhook payload.
    """
    payload = envelope.open(sealed)
    if payload.get("v") != PAYLOAD_VERSION or payload.get("kind") != PAYLOAD_KIND:
        raise ValueError("payload is not a webhook payload this worker understands")
    event, received_at = payload.get("event"), payload.get("received_at")
    if not isinstance(event, dict) or not isinstance(received_at, int | float):
        raise ValueError("webhook payload is incomplete")
    if not isinstance(event.get("event_id"), str) or not isinstance(event.get("metric"), str):
        raise ValueError("webhook event has no string event_id or metric")
    return SealedEvent(event=event, received_at=float(received_at))


class EventSender:
    """The production ``enqueue`` of the webhook app: seal, then publish the task.

    Also usable on its own after :func:`cioguard.verify_webhook` (Django, Flask): the worker then
    handles the event like one from the app. Publish errors propagate (kombu's
    ``OperationalError``); answer 503 then, so Customer.io retries and nothing is lost.
    """

    def __init__(self, envelope: Envelope, celery: Celery) -> None:
        self._envelope = envelope
        self._celery = celery

    def __call__(self, event: dict[str, Any]) -> None:
        if not all(isinstance(event.get(f), str) and event[f] for f in ("event_id", "metric")):
            raise InvalidInputError("the event has no string event_id and metric")
        self._celery.send_task(
            WEBHOOK_TASK, args=[seal_event(self._envelope, event)],
            task_id=webhook_job_id(event["event_id"]), argsrepr=SEALED_REPR, kwargsrepr="{}",
            retry=True, retry_policy=INTAKE_PUBLISH_RETRY_POLICY,
        )  # fmt: skip


def intake_redis(url: str) -> Redis:
    """The dedupe store client: 1-s timeouts and no retry loop, so an outage is a quick 503."""
    return Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )


def intake_celery(settings: Settings) -> Celery:
    """A publishing-only Celery app with shorter broker timeouts than the worker's."""
    app = build_celery(settings, "cioguard-webhooks")
    transport = dict(app.conf.broker_transport_options)
    transport.update(socket_connect_timeout=1, socket_timeout=2)
    app.conf.broker_transport_options = transport
    app.conf.broker_connection_timeout = 1
    return app


def app_from_settings(
    settings: Settings | None = None,
    *,
    celery: Celery | None = None,
    redis: Redis | None = None,
) -> Starlette:
    """The webhook app configured from the environment, ready to serve or to mount.

    Reads ``CUSTOMERIO_WEBHOOK_SECRET`` (comma-separated during a rotation),
    ``CIOGUARD_PAYLOAD_KEY``, ``CIOGUARD_WEBHOOK_MAX_BODY_BYTES`` and ``CIOGUARD_BROKER_URL``;
    raises :class:`~cioguard.errors.ConfigurationError` naming the variable when one is missing.
    Pass ``celery`` or ``redis`` to reuse clients the application already has.
    """
    from cioguard.webhooks.app import create_app

    settings = settings or get_settings()
    secrets = settings.webhook_secrets()
    return create_app(
        secrets=secrets,
        redis=redis or intake_redis(settings.broker_url),
        enqueue=event_sender(settings, celery=celery),
        max_body_bytes=settings.webhook_max_body_bytes,
    )


def event_sender(settings: Settings | None = None, *, celery: Celery | None = None) -> EventSender:
    """An :class:`EventSender` from the environment (``CIOGUARD_PAYLOAD_KEY``, the broker).

    Build it once per process and reuse it: it holds the broker connection pool.
    """
    settings = settings or get_settings()
    return EventSender(Envelope(settings.payload_keys()), celery or intake_celery(settings))
