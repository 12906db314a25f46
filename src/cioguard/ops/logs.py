"""Structured logs: JSON lines in production, readable lines on a terminal.

Only a fixed set of context fields is ever emitted (job id, kind, outcome, a prefix of the keyed
person hash, status, error class, countdown); anything else a caller attaches is ignored. Log
messages themselves are fixed text: no payload or raw id is ever formatted into them.

E-mail addresses are redacted (``[REDACTED:email]``) from messages and error texts as a last
line of defence: the default policy keeps e-mail addresses in payloads, so they are the personal
data most likely to be formatted into a line by mistake.

Exceptions: a record's exception is rendered as its class name (``exc_type``); its message is
added (``error``) only for cioguard's own errors, whose text is PII-free by construction
(errors.py). A third-party message (``customerio``'s carries the URL with the person id and the
request body) and the traceback are never rendered.

Note:
    Celery's own log lines (``Task ... received``, ``... succeeded``) keep Celery's text format;
    they carry task names, job ids and return values (outcome words), never arguments, because
    every task is sent with a redacted ``argsrepr``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from cioguard.errors import CioguardError
from cioguard.privacy.detectors import redact_emails

CONTEXT_FIELDS = (
    "job_id",
    "kind",
    "outcome",
    "person_hash",
    "status",
    "reason",
    "error_class",
    "handler",
    "handler_error",
    "countdown_s",
    "jobs",
    "outcomes",
)

# -- why a job failed: one fixed code per cause ----------------------------------------------

REASONS = (
    "credentials_rejected",  # 401/403: the site id / API key pair was refused
    "rate_limited",  # 429 from Customer.io
    "throttled",  # no token from cioguard's own fleet-wide limiter in time
    "server_error",  # 5xx from Customer.io
    "timeout",  # no answer in CIOGUARD_HTTP_TIMEOUT_S (or a 408)
    "unreachable",  # no connection (DNS, refused, TLS)
    "operation_rejected",  # another 4xx: the request will never succeed as it is
    "audit_unavailable",  # the audit store could not be read or written
    "broker_unavailable",  # Redis did not answer
    "configuration",  # a setting is missing or malformed
    "secret_source_unavailable",  # the Customer.io credentials could not be read right now
    "unreadable_payload",  # no configured payload key opens the job
    "handler_failed",  # a webhook handler raised
    "person_in_flight",  # a delete-mode erasure waits for a delivery to its person (leases)
    "transient",  # another condition worth waiting out (error_class says which)
    "internal_error",  # anything else: a bug
)
"""Every value :func:`reason_code` returns. Alert on them; the list only grows."""

# Classes defined in layers above this one (delivery, webhooks, broker), known by name so this
# module stays importable by them. tests/ops/test_logs.py holds each name to its real class.
_BY_CLASS_NAME = {
    "RateLimitedError": "throttled",
    "RateLimiterUnavailableError": "broker_unavailable",
    "LeaseUnavailableError": "broker_unavailable",
    "SecretSourceUnavailableError": "secret_source_unavailable",
    "WebhookHandlerError": "handler_failed",
    "EnvelopeError": "unreadable_payload",
    "InvalidToken": "unreadable_payload",
}


def reason_code(exc: BaseException | None = None, status: int | None = None) -> str:
    """The fixed reason code (one of :data:`REASONS`) for a failure: pure, no I/O.

    ``status`` (the HTTP status) wins when given, else the exception's ``status`` attribute;
    then the exception's class decides. An exception class may declare its own code with a
    ``reason_code`` class attribute (a value of :data:`REASONS`).
    """
    from cioguard.errors import (
        AuditUnavailableError,
        BrokerUnavailableError,
        ConfigurationError,
        CredentialsError,
        PermanentError,
        RetryableError,
    )

    declared = getattr(exc, "reason_code", None)
    if isinstance(declared, str) and declared in REASONS:
        return declared
    status = status if status is not None else getattr(exc, "status", None)
    if isinstance(status, int) and status >= 400:
        return _by_status(status)
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls.__name__ in _BY_CLASS_NAME:
            return _BY_CLASS_NAME[cls.__name__]
    if isinstance(exc, CredentialsError):
        return "credentials_rejected"
    if isinstance(exc, PermanentError):  # e.g. an operation refused inside a 207
        return "operation_rejected"
    if isinstance(exc, AuditUnavailableError):
        return "audit_unavailable"
    if isinstance(exc, BrokerUnavailableError) or type(exc).__module__.startswith("redis"):
        return "broker_unavailable"
    if isinstance(exc, ConfigurationError):
        return "configuration"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, RetryableError):  # no HTTP answer: delivery/customerio.py's wording
        text = str(exc)
        if text.startswith("Customer.io did not answer"):
            return "timeout"
        if text.startswith("Customer.io unreachable"):
            return "unreachable"
        return "transient"
    return "internal_error"


def _by_status(status: int) -> str:
    if status in (401, 403):
        return "credentials_rejected"
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "operation_rejected"


def failure_fields(exc: BaseException, status: int | None = None) -> dict[str, object]:
    """Log context for a failure: ``reason``, ``status``, ``error_class`` and, for a webhook
    handler failure, ``handler`` (qualified names) and ``handler_error`` (exception types).

    Never a message: a handler's exception text may quote the event. Spread it into ``extra``.
    """
    status = status if status is not None else getattr(exc, "status", None)
    fields: dict[str, object] = {
        "reason": reason_code(exc, status),
        "status": status if isinstance(status, int) else None,
        "error_class": type(exc).__name__,
    }
    names = getattr(exc, "handler_names", None)
    errors = getattr(exc, "exceptions", None)
    if isinstance(names, tuple) and isinstance(errors, tuple):
        fields["handler"] = ",".join(str(n) for n in names)
        fields["handler_error"] = ",".join(type(e).__name__ for e in errors)
    return fields


def context(record: logging.LogRecord) -> dict[str, object]:
    """The whitelisted context fields a record carries (others are ignored)."""
    found: dict[str, object] = {}
    for field in CONTEXT_FIELDS:
        value = getattr(record, field, None)
        if value is not None:
            found[field] = value
    return found


def exception_fields(record: logging.LogRecord) -> dict[str, str]:
    """``exc_type`` for any exception; ``error`` (its message) only for cioguard's errors."""
    if not record.exc_info or record.exc_info[0] is None:
        return {}
    exc_type, exc = record.exc_info[0], record.exc_info[1]
    fields = {"exc_type": exc_type.__name__}
    if isinstance(exc, CioguardError):
        fields["error"] = redact_emails(str(exc))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, whitelisted context, exception class."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_emails(record.getMessage()),
        }
        entry.update(context(record))
        entry.update(exception_fields(record))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message [ExcType: our message] key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in context(record).items())
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        message = redact_emails(record.getMessage())
        line = f"{ts} {record.levelname:<7} {record.name}: {message}"
        exc = exception_fields(record)
        if exc:
            error = f": {exc['error']}" if "error" in exc else ""
            line += f" [{exc['exc_type']}{error}]"
        return f"{line} {fields}".rstrip()


def configure_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    """Attach one handler to the ``cioguard`` logger (idempotent).

    ``auto`` picks JSON unless stderr is a terminal. The logger does not propagate, so a root
    handler installed by Celery or the application never formats cioguard's records.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    logger = logging.getLogger("cioguard")
    for handler in list(logger.handlers):
        if getattr(handler, "_cioguard", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler._cioguard = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
