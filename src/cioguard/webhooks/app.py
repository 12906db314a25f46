"""The ASGI app that receives Customer.io reporting webhooks: verify, dedupe, enqueue, answer.

Customer.io waits 4 s for an answer, retries any non-2xx for up to 7 days and holds later webhooks
back behind a failing one. So the request does only cheap, bounded work: read the body under a size
cap, verify the signature, claim the ``event_id`` in Redis, hand the event to ``enqueue`` (a Celery
``send_task`` in production) and answer. Handlers run later, in the worker.

Status codes: 200 ``accepted`` or ``duplicate``; 400 malformed event (signed, but not a JSON object
with string ``event_id`` and ``metric``); 401 verification failed; 413 body over the cap; 503
Redis or ``enqueue`` failed, or the same event is still being enqueued by another delivery, so
Customer.io retries and nothing is lost; 500 anything else. Error bodies carry no detail, and
nothing here logs a body or a header: logs hold reason codes and exception type names only.

Warning: ``enqueue`` receives the parsed event, which carries personal data (``identifiers``,
``recipient``). Encrypt or sanitize it in ``enqueue`` as the rest of the data path does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Any

import uvicorn
from redis import Redis, RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from cioguard.errors import ConfigurationError
from cioguard.webhooks.verify import WebhookVerificationError, verify_webhook

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/customerio"
TIMESTAMP_HEADER = "X-CIO-Timestamp"
SIGNATURE_HEADER = "X-CIO-Signature"
CUSTOMERIO_RETRY_WINDOW_S = 7 * 24 * 3600
"""How long Customer.io keeps retrying; the dedupe TTL must outlive it."""

_CLAIM_TTL_S = 60
_PENDING = b"pending"
_DONE = b"done"
_MALFORMED_REASONS = frozenset({"bad_json", "not_an_object"})

Enqueue = Callable[[dict[str, Any]], None]


class _BodyTooLarge(Exception):
    """The body passed ``max_body_bytes``; internal to this module."""


class _WebhookEndpoint:
    """The ``POST`` handler, holding the app's settings so each step stays a small method."""

    def __init__(
        self,
        *,
        secrets: tuple[str, ...],
        redis: Redis,
        enqueue: Enqueue,
        max_body_bytes: int,
        tolerance_s: int,
        dedupe_ttl_s: int,
        key_prefix: str,
    ) -> None:
        self._secrets = secrets
        self._redis = redis
        self._enqueue = enqueue
        self._max_body_bytes = max_body_bytes
        self._tolerance_s = tolerance_s
        self._dedupe_ttl_s = dedupe_ttl_s
        self._key_prefix = key_prefix

    async def receive(self, request: Request) -> JSONResponse:
        """Answer every request, even on a bug: a 500 without detail, never a traceback."""
        try:
            return await self._handle(request)
        except Exception as exc:
            logger.error("webhook request failed unexpectedly (%s)", type(exc).__name__)
            return _reply(500, error="internal")

    async def _handle(self, request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, self._max_body_bytes)
        except _BodyTooLarge:
            logger.warning("webhook rejected: body_too_large")
            return _reply(413, error="payload too large")
        except ClientDisconnect:
            return _reply(400, error="bad request")
        try:
            event = verify_webhook(
                body,
                timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
                signature=request.headers.get(SIGNATURE_HEADER, ""),
                secrets=self._secrets,
                tolerance_s=self._tolerance_s,
            )
        except WebhookVerificationError as exc:
            logger.warning("webhook rejected: %s", exc.reason)
            if exc.reason in _MALFORMED_REASONS:
                return _reply(400, error="malformed event")
            return _reply(401, error="unauthorized")
        if not _is_well_formed(event):
            logger.warning("webhook rejected: malformed_event")
            return _reply(400, error="malformed event")
        return await run_in_threadpool(self._accept, event)

    def _accept(self, event: dict[str, Any]) -> JSONResponse:
        """Claim the event id, enqueue, confirm. Blocking I/O, so it runs in the thread pool.

        The claim is written as ``pending`` with a short TTL (``_CLAIM_TTL_S``) and becomes
        ``done`` for ``dedupe_ttl_s`` only once ``enqueue`` returned. Only ``done`` is answered
        "duplicate"; a delivery that finds ``pending`` (another delivery in flight, or a claim
        left by a crash or by a failed release) gets a 503, so Customer.io retries it and the
        event cannot be lost. A stale claim lapses within a minute.
        Note: this costs one extra ``GET``, on duplicates only.
        """
        key = self._dedupe_key(event["event_id"])
        try:
            claimed = self._redis.set(key, _PENDING, nx=True, ex=_CLAIM_TTL_S)
            if not claimed:
                return self._answer_repeat(key)
        except RedisError as exc:
            logger.warning("webhook dedupe store unavailable (%s)", type(exc).__name__)
            return _reply(503, error="unavailable")
        try:
            self._enqueue(event)
        except Exception as exc:
            logger.warning("webhook enqueue failed (%s), answering 503", type(exc).__name__)
            self._redis_quietly("release", lambda: self._redis.delete(key))
            return _reply(503, error="unavailable")
        self._redis_quietly("confirm", lambda: self._redis.set(key, _DONE, ex=self._dedupe_ttl_s))
        return _reply(200, status="accepted")

    def _answer_repeat(self, key: str) -> JSONResponse:
        """A delivery of an id already claimed: a duplicate if it was enqueued, else retry later."""
        if self._redis.get(key) == _DONE:
            return _reply(200, status="duplicate")
        logger.warning("webhook event still in flight, answering 503")
        return _reply(503, error="in flight")

    def _dedupe_key(self, event_id: str) -> str:
        """Hashed so an untrusted id of any length or content makes a short, safe key."""
        digest = hashlib.sha256(event_id.encode("utf-8", errors="surrogatepass")).hexdigest()
        return self._key_prefix + digest

    @staticmethod
    def _redis_quietly(step: str, command: Callable[[], object]) -> None:
        """Run a follow-up command whose failure the claim TTL already covers."""
        try:
            command()
        except RedisError as exc:
            logger.warning("webhook dedupe %s failed (%s)", step, type(exc).__name__)


def create_app(
    *,
    secrets: Sequence[str],
    redis: Redis,
    enqueue: Enqueue,
    max_body_bytes: int = 256 * 1024,
    tolerance_s: int = 300,
    dedupe_ttl_s: int = 8 * 24 * 3600,
    key_prefix: str = "cioguard:webhook:seen:",
) -> Starlette:
    """Build the webhook app: ``POST /webhooks/customerio`` and ``GET /healthz``.

    Mount it in an existing app with ``Mount("/hooks", app=create_app(...))``. ``/healthz`` is a
    liveness check only: it does not touch Redis, so a Redis outage shows as 503s on webhooks
    rather than as a restart loop. Settings are checked here, so a bad one fails at start.

    Warning: give ``redis`` short socket timeouts and few retries. redis-py's default retries
    with backoff for seconds during an outage, past Customer.io's 4-s timeout; a quick 503 is
    better, since Customer.io retries it anyway.
    """
    active = _check_settings(secrets, max_body_bytes, tolerance_s, dedupe_ttl_s, key_prefix)
    endpoint = _WebhookEndpoint(
        secrets=active,
        redis=redis,
        enqueue=enqueue,
        max_body_bytes=max_body_bytes,
        tolerance_s=tolerance_s,
        dedupe_ttl_s=dedupe_ttl_s,
        key_prefix=key_prefix,
    )
    routes = [
        Route(WEBHOOK_PATH, endpoint.receive, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def build_server(app: ASGIApp, *, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server with quiet logs: warnings only, no access log, no ``Server`` header."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, server_header=False
    )
    return uvicorn.Server(config)


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (blocking)."""
    build_server(app, host=host, port=port).run()


def _check_settings(
    secrets: Sequence[str],
    max_body_bytes: int,
    tolerance_s: int,
    dedupe_ttl_s: int,
    key_prefix: str,
) -> tuple[str, ...]:
    """Refuse settings that would silently weaken the endpoint; return the non-empty secrets."""
    if isinstance(secrets, str):
        raise ConfigurationError("secrets must be a sequence of signing keys, not one string")
    active = tuple(secret for secret in secrets if secret)
    if not active:
        raise ConfigurationError("secrets must hold at least one non-empty signing key")
    if max_body_bytes <= 0:
        raise ConfigurationError("max_body_bytes must be positive")
    if tolerance_s <= 0:
        raise ConfigurationError("tolerance_s must be positive")
    if dedupe_ttl_s <= CUSTOMERIO_RETRY_WINDOW_S:
        raise ConfigurationError("dedupe_ttl_s must exceed Customer.io's 7-day retry window")
    if not key_prefix:
        raise ConfigurationError("key_prefix must not be empty")
    return active


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """Read the raw body, refusing early on a declared length and again while streaming.

    The streaming check covers chunked uploads, which declare no length.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > max_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def _is_well_formed(event: dict[str, Any]) -> bool:
    """The fields the endpoint relies on: a non-empty string ``event_id`` and ``metric``."""
    return all(
        isinstance(event.get(field), str) and event[field] for field in ("event_id", "metric")
    )


def _reply(status_code: int, /, **content: str) -> JSONResponse:
    return JSONResponse(content, status_code=status_code)


async def _healthz(request: Request) -> JSONResponse:
    return _reply(200, status="ok")
