"""Sentry events carry no person data: captured with a custom ``Transport``, then searched.

Canary values are generated at run time (never literals): Sentry sends source context lines, so a
literal in this file would show up in every event's stack frames.
"""

from __future__ import annotations

import http.server
import json
import logging
import secrets
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from celery import Celery
from customerio import CustomerIOException
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from cioguard.config import Settings
from cioguard.errors import RetryableError
from cioguard.ops.sentry import FILTERED, before_breadcrumb, init_sentry, redact_text, release
from tests.leaks import card_number, ssn


class CapturingTransport(Transport):
    """Keeps every envelope instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        sentry_sdk.flush()
        return [
            json.loads(item.get_bytes())
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == "event"
        ]

    def text(self) -> str:
        return "\n".join(json.dumps(event) for event in self.events())


@pytest.fixture
def transport() -> Iterator[CapturingTransport]:
    capture = CapturingTransport()
    settings = Settings(CIOGUARD_ENVIRONMENT="unit-test")
    assert init_sentry(settings, role="unit", transport=capture)
    for scope in (sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()):
        scope.clear_breadcrumbs()  # earlier tests' HTTP calls would show up in these events
    yield capture
    sentry_sdk.init(dsn=None)


@pytest.fixture
def pii() -> dict[str, str]:
    tag = secrets.token_hex(6)
    return {
        "person": f"person-{tag}",
        "email": f"e.{tag}@example.test",
        "card": card_number(),
        "ssn": ssn(),
        "phone": "+1415" + str(2_000_000 + secrets.randbelow(7_999_999)),  # exchange 2-9
    }


def _assert_clean(text: str, pii: dict[str, str]) -> None:
    leaked = [name for name, value in pii.items() if value in text]
    assert leaked == [], f"leaked to Sentry: {leaked}"


def _deliver(person_id: str, attributes: dict[str, str]) -> None:
    """Stands for a task body: its parameters and locals hold PII when it raises."""
    email = attributes["email"]  # noqa: F841  (a local holding PII)
    raise RetryableError("Customer.io answered 503 to identify", status=503)


def test_no_locals_from_a_frame_holding_pii(transport: CapturingTransport, pii: dict[str, str]):
    try:
        _deliver(pii["person"], {"email": pii["email"], "card": pii["card"]})
    except RetryableError:
        sentry_sdk.capture_exception()
    (event,) = transport.events()
    _assert_clean(json.dumps(event), pii)
    (exc,) = event["exception"]["values"]
    assert exc["type"] == "RetryableError"
    assert exc["value"] == "Customer.io answered 503 to identify"  # ours: PII-free, kept
    frames = exc["stacktrace"]["frames"]
    assert frames and all("vars" not in frame for frame in frames)


def test_third_party_exception_text_is_not_sent(
    transport: CapturingTransport, pii: dict[str, str]
) -> None:
    url = f"https://track.customer.io/api/v1/customers/{pii['person']}"
    try:
        raise CustomerIOException(f"400: {url} {{'email': '{pii['email']}'}} bad")
    except CustomerIOException:
        sentry_sdk.capture_exception()
    try:
        raise KeyError(pii["email"])
    except KeyError:
        sentry_sdk.capture_exception()
    events = transport.events()
    _assert_clean(json.dumps(events), pii)
    values = [event["exception"]["values"][-1] for event in events]
    assert [(v["type"], v["value"]) for v in values] == [
        ("CustomerIOException", FILTERED),
        ("KeyError", FILTERED),
    ]


def test_celery_job_arguments_are_dropped(transport: CapturingTransport, pii: dict[str, str]):
    app = Celery("sentry-unit", broker="memory://", set_as_current=False)

    @app.task(name="unit.leaky")
    def leaky(person_id: str, attributes: dict[str, str]) -> None:
        raise RuntimeError("the task failed")

    result = leaky.apply(args=[pii["person"]], kwargs={"attributes": {"email": pii["email"]}})
    assert result.state == "FAILURE"
    (event,) = transport.events()
    _assert_clean(json.dumps(event), pii)
    job = event["extra"]["celery-job"]
    assert job["task_name"] == "unit.leaky"
    assert "args" not in job and "kwargs" not in job


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def info_logs() -> Iterator[None]:
    """cioguard's logger at INFO (as in the worker), restored afterwards."""
    logger = logging.getLogger("cioguard")
    saved = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(saved)


def test_breadcrumbs_carry_no_pii(
    transport: CapturingTransport, pii: dict[str, str], info_logs: None
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.handle_request, daemon=True).start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/api/v1/customers/{pii['person']}?email={pii['email']}"
    urllib.request.urlopen(url, timeout=10).close()
    server.server_close()
    logging.getLogger("cioguard.delivery.pipeline").info(
        "job delivered",
        extra={"job_id": "01JOB", "outcome": "delivered", "contact": pii["phone"],
               "person_id": pii["person"]},
    )  # fmt: skip
    logging.getLogger("thirdparty").warning("saw card %s for %s", pii["card"], pii["email"])
    logging.getLogger("thirdparty.raw").warning("card " + pii["card"] + " ssn " + pii["ssn"])
    sentry_sdk.capture_message("cioguard: identify job dead-lettered (PermanentError)")
    (event,) = transport.events()
    _assert_clean(json.dumps(event), pii)
    crumbs = event["breadcrumbs"]["values"]
    http_crumb = next(c for c in crumbs if c.get("category") == "httplib")
    assert http_crumb["data"]["url"] == f"http://127.0.0.1:{port}"
    log_crumb = next(c for c in crumbs if c.get("category") == "cioguard.delivery.pipeline")
    assert log_crumb["data"] == {"job_id": "01JOB", "outcome": "delivered"}
    foreign = next(c for c in crumbs if c.get("category") == "thirdparty")
    assert foreign["message"] == "saw card %s for %s"  # other libraries: the template only
    raw = next(c for c in crumbs if c.get("category") == "thirdparty.raw")
    assert raw["message"] == "card [REDACTED:card] ssn [REDACTED:ssn]"


def test_log_events_from_other_libraries_keep_only_the_template(
    transport: CapturingTransport, pii: dict[str, str]
) -> None:
    logging.getLogger("kombu.thirdparty").error(
        "Task %(name)s[%(id)s] raised unexpected: %(exc)s",
        {"name": "cioguard.deliver", "id": "01JOB", "exc": f"ValueError('{pii['email']}')"},
    )
    logging.getLogger("cioguard.tasks").error(
        "unexpected error in %s", "identify", extra={"job_id": "01JOB", "email": pii["email"]}
    )
    events = transport.events()
    _assert_clean(json.dumps(events), pii)
    foreign, own = events
    assert foreign["logentry"] == {"message": "Task %(name)s[%(id)s] raised unexpected: %(exc)s"}
    assert own["logentry"]["formatted"] == "unexpected error in identify"
    assert own["extra"] == {"job_id": "01JOB"}


def test_message_text_goes_through_the_detectors(
    transport: CapturingTransport, pii: dict[str, str]
) -> None:
    card = pii["card"]
    with sentry_sdk.isolation_scope() as scope:
        scope.set_tag("note", f"ssn {pii['ssn']}")
        scope.set_extra("detail", {"text": [f"call {pii['phone']}"]})
        sentry_sdk.capture_message(f"card {card[:4]} {card[4:8]} {card[8:12]} {card[12:]}")
    (event,) = transport.events()
    _assert_clean(json.dumps(event), pii)
    assert event["tags"]["note"] == "ssn [REDACTED:ssn]"
    assert event["extra"]["detail"] == {"text": ["call [REDACTED:phone]"]}
    assert "[REDACTED:card]" in json.dumps(event)
    assert "sys.argv" not in event["extra"]


def test_environment_release_and_server_name(transport: CapturingTransport) -> None:
    sentry_sdk.capture_message("hello")
    (event,) = transport.events()
    assert event["environment"] == "unit-test"
    assert event["release"] == release() and event["release"].startswith("cioguard@")
    assert event["server_name"] == "unit"


def test_off_without_a_dsn() -> None:
    assert init_sentry(Settings(), role="unit") is False


def test_http_breadcrumb_without_a_url_and_nested_redaction() -> None:
    crumb = before_breadcrumb({"type": "http", "data": {"url": "/relative/only", "x": 1}}, None)
    assert crumb["data"] == {"url": FILTERED}
    card = card_number()
    assert redact_text({"a": [card, 3, None]}) == {"a": ["[REDACTED:card]", 3, None]}
