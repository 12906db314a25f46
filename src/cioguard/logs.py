"""Structured logs: JSON lines in production, readable lines on a terminal.

Only a fixed set of context fields is ever emitted (job id, kind, outcome, a prefix of the keyed
person hash, status, error class, countdown); anything else a caller attaches is ignored. Log
messages themselves are fixed text: no payload or raw id is ever formatted into them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

CONTEXT_FIELDS = (
    "job_id",
    "kind",
    "outcome",
    "person_hash",
    "status",
    "error_class",
    "countdown_s",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{f}={getattr(record, f)}"
            for f in CONTEXT_FIELDS
            if getattr(record, f, None) is not None
        )
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f" [{record.exc_info[0].__name__}]"
        return f"{line} {context}".rstrip()


def configure_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    """Attach one handler to the ``cioguard`` logger (idempotent)."""
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
