"""Structured logs: whitelisted fields only, and no third-party exception text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from customerio import CustomerIOException

from cioguard.errors import PermanentError
from cioguard.ops.logs import CONTEXT_FIELDS, JsonFormatter, TextFormatter, configure_logging

PERSON = "person-7f3a9c"
EMAIL = "someone.7f3a9c@example.test"


def _record(msg: str = "job %s", *args: object, exc: BaseException | None = None,
            **extra: object) -> logging.LogRecord:  # fmt: skip
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord(
        "cioguard.delivery.pipeline", logging.INFO, __file__, 1, msg, args, exc_info
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_json_line_with_job_context() -> None:
    record = _record("job %s", "delivered", job_id="01JOB", kind="identify",
                     outcome="delivered", person_hash="ab12cd34ef56ab12", status=200)  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "job delivered"
    assert entry["level"] == "info" and entry["logger"] == "cioguard.delivery.pipeline"
    assert {k: entry[k] for k in ("job_id", "kind", "outcome", "person_hash", "status")} == {
        "job_id": "01JOB", "kind": "identify", "outcome": "delivered",
        "person_hash": "ab12cd34ef56ab12", "status": 200,
    }  # fmt: skip
    assert entry["ts"].endswith("+00:00")


def test_fields_outside_the_whitelist_are_dropped() -> None:
    record = _record(job_id="01JOB", person_id=PERSON, email=EMAIL, attributes={"email": EMAIL},
                     error="customerio said " + EMAIL)  # fmt: skip
    line = JsonFormatter().format(record)
    text = TextFormatter().format(record)
    for output in (line, text):
        assert PERSON not in output and EMAIL not in output
    assert set(json.loads(line)) == {"ts", "level", "logger", "msg", "job_id"}
    assert "job_id=01JOB" in text


def test_third_party_exception_messages_are_not_rendered() -> None:
    url = f"https://track.customer.io/api/v1/customers/{PERSON}"
    exc = _raised(CustomerIOException(f"400: {url} {{'email': '{EMAIL}'}}"))
    record = _record("request failed", exc=exc, job_id="01JOB")
    line, text = JsonFormatter().format(record), TextFormatter().format(record)
    for output in (line, text):
        assert PERSON not in output and EMAIL not in output and "Traceback" not in output
    entry = json.loads(line)
    assert entry["exc_type"] == "CustomerIOException" and "error" not in entry
    assert "[CustomerIOException]" in text


def test_our_exception_messages_are_rendered() -> None:
    exc = _raised(PermanentError("Customer.io rejected identify with 400", status=400))
    record = _record("request failed", exc=exc)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exc_type"] == "PermanentError"
    assert entry["error"] == "Customer.io rejected identify with 400"
    assert "[PermanentError: Customer.io rejected identify with 400]" in (
        TextFormatter().format(record)
    )


def test_whitelist_is_what_the_docs_promise() -> None:
    assert set(CONTEXT_FIELDS) == {
        "job_id", "kind", "outcome", "person_hash", "status", "reason", "error_class", "handler",
        "handler_error", "countdown_s", "jobs", "outcomes",
    }  # fmt: skip


@pytest.fixture
def cioguard_logger() -> Iterator[logging.Logger]:
    """The ``cioguard`` logger, restored afterwards (handlers bound to pytest's capture)."""
    logger = logging.getLogger("cioguard")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield logger
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]


def test_configure_logging_is_idempotent_and_does_not_propagate(
    cioguard_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json")
    configure_logging("json")
    assert sum(getattr(h, "_cioguard", False) for h in cioguard_logger.handlers) == 1
    assert cioguard_logger.propagate is False
    logging.getLogger("cioguard.tasks").info("job retrying", extra={"job_id": "01JOB",
                                                                    "email": EMAIL})  # fmt: skip
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["job_id"] == "01JOB" and EMAIL not in line


def test_text_format_for_terminals(
    cioguard_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text")
    logging.getLogger("cioguard.delivery.pipeline").info(
        "job %s", "delivered", extra={"kind": "track"}
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert "INFO" in line and "cioguard.delivery.pipeline: job delivered kind=track" in line
