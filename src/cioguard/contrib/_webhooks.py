"""The webhook receiver for frameworks other than Starlette's: the same steps and answers.

:mod:`cioguard.webhooks.app` verifies, deduplicates and enqueues inside a Starlette endpoint. A
Django view or a Flask blueprint gets the raw body and two headers instead; :class:`Receiver`
takes those, runs the same verification (:func:`~cioguard.webhooks.verify.verify_webhook`) and
then the app's own claim-enqueue-confirm step, so the dedupe keys, status codes and bodies are
those of ``cioguard webhooks serve`` (an event received by either is a duplicate for the other).
The endpoint is reused rather than copied: its pending/done claim is the subtle part.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from cioguard.config import Settings
from cioguard.webhooks import app as webhook_app
from cioguard.webhooks.intake import event_sender, intake_redis
from cioguard.webhooks.verify import WebhookVerificationError, verify_webhook

log = logging.getLogger("cioguard.contrib.webhooks")

TIMESTAMP_HEADER = webhook_app.TIMESTAMP_HEADER
SIGNATURE_HEADER = webhook_app.SIGNATURE_HEADER
TOLERANCE_S = 300
DEDUPE_TTL_S = 8 * 24 * 3600
KEY_PREFIX = "cioguard:webhook:seen:"
"""The defaults of :func:`cioguard.webhooks.app.create_app`, so both receivers share claims."""


@dataclass(frozen=True)
class Answer:
    """What to send back: a status code and a small JSON body without detail."""

    status: int
    body: dict[str, str]

    def json(self) -> bytes:
        return json.dumps(self.body).encode()


class Receiver:
    """Verify, dedupe and enqueue one delivery; build once per process (it holds the clients).

    Reads ``CUSTOMERIO_WEBHOOK_SECRET``, ``CIOGUARD_PAYLOAD_KEY``, ``CIOGUARD_BROKER_URL`` and
    ``CIOGUARD_WEBHOOK_MAX_BODY_BYTES`` from ``settings``; a missing one raises
    :class:`~cioguard.errors.ConfigurationError` naming it.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_body_bytes = settings.webhook_max_body_bytes
        self._secrets = tuple(settings.webhook_secrets())
        self._sender = event_sender(settings)
        self._redis = intake_redis(settings.broker_url)
        self.endpoint = webhook_app._WebhookEndpoint(
            secrets=self._secrets, redis=self._redis, enqueue=self._sender,
            max_body_bytes=self.max_body_bytes, tolerance_s=TOLERANCE_S,
            dedupe_ttl_s=DEDUPE_TTL_S, key_prefix=KEY_PREFIX,
        )  # fmt: skip

    def too_large(self, declared_length: str | None) -> bool:
        """Whether a declared ``Content-Length`` is over the cap (refuse before reading)."""
        value = declared_length or ""
        return value.isascii() and value.isdigit() and int(value) > self.max_body_bytes

    def receive(self, body: bytes, *, timestamp: str, signature: str) -> Answer:
        """Answer one delivery; never raises (a bug answers 500 without detail)."""
        try:
            return self._receive(body, timestamp=timestamp, signature=signature)
        except Exception as exc:
            log.error("webhook request failed unexpectedly (%s)", type(exc).__name__)
            return Answer(500, {"error": "internal"})

    def _receive(self, body: bytes, *, timestamp: str, signature: str) -> Answer:
        if len(body) > self.max_body_bytes:
            log.warning("webhook rejected: body_too_large")
            return Answer(413, {"error": "payload too large"})
        try:
            event: dict[str, Any] = verify_webhook(
                body, timestamp=timestamp, signature=signature, secrets=self._secrets,
                tolerance_s=TOLERANCE_S,
            )  # fmt: skip
        except WebhookVerificationError as exc:
            log.warning("webhook rejected: %s", exc.reason)
            if exc.reason in webhook_app._MALFORMED_REASONS:
                return Answer(400, {"error": "malformed event"})
            return Answer(401, {"error": "unauthorized"})
        if not webhook_app._is_well_formed(event):
            log.warning("webhook rejected: malformed_event")
            return Answer(400, {"error": "malformed event"})
        response = self.endpoint._accept(event)
        return Answer(response.status_code, json.loads(bytes(response.body)))

    def close(self) -> None:
        self._redis.close()
        self._sender._celery.close()
