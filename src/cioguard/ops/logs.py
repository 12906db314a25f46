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
    "error_class",
    "countdown_s",
)


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
