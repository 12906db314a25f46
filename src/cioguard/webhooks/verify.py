"""Customer.io reporting webhooks: signature verification and the handler registry.

Verification follows Customer.io's scheme: ``X-CIO-Signature`` is the hex HMAC-SHA256 of
``b"v0:" + X-CIO-Timestamp + b":" + raw_body`` keyed with the reporting-webhook signing key. The
shape is stripe-python's ``_webhook.py`` (raw bytes in, verify before parsing JSON, constant-time
comparison, one error type), with its known gap fixed: the timestamp tolerance applies in both
directions, is on by default and has no off switch; the clock is injectable instead.

Every failure raises :class:`~cioguard.errors.WebhookVerificationError` with a fixed ``reason``
code. Messages are fixed text (plus numbers at most): they never carry the body, the payload, the
signature or a secret, so they are safe to log.

The registry maps a ``metric`` (``"delivered"``, ``"opened"``, ... or ``"*"`` for every metric) to
handlers. It is module-level on purpose: handlers register at import time with
:func:`on_webhook`, and the worker task calls :func:`dispatch` for each verified event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from cioguard.errors import CioguardError, InvalidInputError, InvalidTypeError
from cioguard.errors import WebhookVerificationError as WebhookVerificationError

DEFAULT_TOLERANCE_S = 300
"""Accepted clock difference, both ways. Customer.io recommends none; 300 s is Stripe's choice."""

WILDCARD = "*"
"""The metric under which a handler receives every event."""

_SCHEME = b"v0"
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")

WebhookHandler = Callable[[dict[str, Any]], None]
_HandlerT = TypeVar("_HandlerT", bound=WebhookHandler)
_handlers: dict[str, list[WebhookHandler]] = {}


def sign_webhook(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-CIO-Signature`` value Customer.io would send for ``body`` at ``timestamp``.

    For tests (ours and users'): sign a fixture, then feed it through :func:`verify_webhook` or
    POST it to the webhook app.
    """
    return _signature(body, secret, str(timestamp).encode("ascii"))


def verify_webhook(
    body: bytes,
    *,
    timestamp: str,
    signature: str,
    secrets: Sequence[str],
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a reporting webhook and return its event; raise ``WebhookVerificationError`` if not.

    ``body`` must be the raw request bytes: the signature covers them, not a re-serialization.
    ``secrets`` holds every active signing key (several during a rotation); the signature is
    compared with all of them, without stopping at the first match, so timing does not tell which
    key is in use. Empty strings in ``secrets`` are ignored: an empty HMAC key is a forgery anyone
    can compute. The signature is checked before the timestamp's age, so ``timestamp_too_old`` /
    ``timestamp_in_future`` mean an authentic but stale request (replay, backlog or clock skew),
    not a forgery. JSON is parsed only once the signature holds.

    Warning: ``tolerance_s`` cannot be disabled; replay old fixtures by passing ``now`` instead.
    """
    if tolerance_s <= 0:
        raise InvalidInputError("tolerance_s must be a positive number of seconds")
    if isinstance(secrets, str):
        raise InvalidTypeError("secrets must be a sequence of strings, not one string")
    if not timestamp:
        _fail("missing_timestamp", "the X-CIO-Timestamp header is missing")
    if not signature:
        _fail("missing_signature", "the X-CIO-Signature header is missing")
    if _TIMESTAMP_RE.fullmatch(timestamp) is None:
        _fail("bad_timestamp", "the timestamp is not a whole number of unix seconds")
    active = [secret for secret in secrets if secret]
    if not active:
        _fail("no_secrets", "no webhook signing secret is configured")
    _check_signature(body, timestamp.encode("ascii"), signature, active)
    _check_age(int(timestamp), tolerance_s, time.time() if now is None else now)
    return _parse_event(body)


def _signature(body: bytes, secret: str, timestamp: bytes) -> str:
    message = _SCHEME + b":" + timestamp + b":" + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _check_signature(body: bytes, timestamp: bytes, signature: str, secrets: list[str]) -> None:
    """Compare against every secret; a malformed signature simply matches none of them."""
    given = signature.lower().encode("utf-8", errors="replace")
    matched = False
    for secret in secrets:
        expected = _signature(body, secret, timestamp).encode("ascii")
        matched = hmac.compare_digest(expected, given) | matched
    if not matched:
        _fail("signature_mismatch", "the signature matches no active signing secret")


def _check_age(timestamp: int, tolerance_s: int, now: float) -> None:
    if timestamp < now - tolerance_s:
        _fail("timestamp_too_old", f"the timestamp is older than {tolerance_s} s")
    if timestamp > now + tolerance_s:
        _fail("timestamp_in_future", f"the timestamp is more than {tolerance_s} s in the future")


def _parse_event(body: bytes) -> dict[str, Any]:
    """Strict JSON (no NaN/Infinity); deep nesting is a parse error, not a crash."""
    try:
        event = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        _fail("bad_json", "the body is not valid JSON")
    if not isinstance(event, dict):
        _fail("not_an_object", "the body is not a JSON object")
    return event


def _reject_constant(name: str) -> NoReturn:
    raise ValueError("non-standard JSON constant")


def _fail(reason: str, message: str) -> NoReturn:
    raise WebhookVerificationError(reason, message) from None


class WebhookHandlerError(CioguardError):
    """One or more handlers raised while dispatching an event.

    ``handler_names`` and the message name the failed handlers and their exception types only.
    The original exceptions are kept in ``exceptions`` for callers that must decide (retry or
    not), but are not chained: their messages may quote the payload, and a chained cause is
    printed in tracebacks and sent to error trackers.
    """

    def __init__(self, handler_names: tuple[str, ...], exceptions: tuple[Exception, ...]) -> None:
        kinds = ", ".join(
            f"{name} ({type(exc).__name__})"
            for name, exc in zip(handler_names, exceptions, strict=True)
        )
        super().__init__(f"{len(exceptions)} webhook handler(s) failed: {kinds}")
        self.handler_names = handler_names
        self.exceptions = exceptions


def on_webhook(metric: str) -> Callable[[_HandlerT], _HandlerT]:
    """Register the decorated function for events whose ``metric`` equals ``metric`` (or ``"*"``).

    Registering the same function twice for one metric is a no-op, so re-importing a module
    does not make its handlers run twice. The function is returned unchanged.
    """
    if not isinstance(metric, str) or not metric:
        raise InvalidInputError("metric must be a non-empty string")

    def register(handler: _HandlerT) -> _HandlerT:
        registered = _handlers.setdefault(metric, [])
        if handler not in registered:
            registered.append(handler)
        return handler

    return register


def dispatch(event: dict[str, Any]) -> int:
    """Run every handler for ``event["metric"]``, then the ``"*"`` handlers; return how many ran.

    A failing handler does not stop the others: every handler runs, then one
    :class:`WebhookHandlerError` summarizes the failures. Handlers should therefore be idempotent,
    since a retry of the whole dispatch runs the successful ones again (webhooks are at-least-once
    anyway).
    """
    metric = event.get("metric")
    if not isinstance(metric, str) or not metric:
        raise InvalidInputError("the event has no string metric")
    handlers = [*_handlers.get(metric, ()), *_handlers.get(WILDCARD, ())]
    names: list[str] = []
    errors: list[Exception] = []
    for handler in handlers:
        try:
            handler(event)
        except Exception as exc:
            names.append(_handler_name(handler))
            errors.append(exc)
    if errors:
        raise WebhookHandlerError(tuple(names), tuple(errors))
    return len(handlers)


def clear_handlers() -> None:
    """Forget every registered handler (for tests)."""
    _handlers.clear()


def _handler_name(handler: WebhookHandler) -> str:
    module = getattr(handler, "__module__", None) or "?"
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{name}"
