"""Reason codes: every retry and dead letter says why with one fixed word (ops.logs).

The mapping is pure, but the exceptions it classifies come from the real boundary: a real TCP
server that never answers (timeout), a closed port (unreachable), the real classes of the layers
above ``ops`` that the mapping knows by name.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import pytest
import redis
from cryptography.fernet import InvalidToken

from cioguard.broker.envelope import EnvelopeError
from cioguard.delivery.credentials import SecretSourceUnavailableError
from cioguard.delivery.customerio import TrackClient
from cioguard.delivery.pipeline import OperationRejectedError
from cioguard.delivery.ratelimit import RateLimitedError, RateLimiterUnavailableError
from cioguard.erasure.leases import LeaseUnavailableError
from cioguard.errors import (
    AuditUnavailableError,
    ConfigurationError,
    CredentialsError,
    PermanentError,
    RetryableError,
)
from cioguard.ops.logs import REASONS, JsonFormatter, failure_fields, reason_code
from cioguard.sandbox.devstack import free_port
from cioguard.webhooks.verify import WebhookHandlerError, clear_handlers, dispatch, on_webhook

SECRET_TEXT = "person-7f3a9c someone@example.test"


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "credentials_rejected"), (403, "credentials_rejected"), (429, "rate_limited"),
     (408, "timeout"), (500, "server_error"), (503, "server_error"), (400, "operation_rejected"),
     (404, "operation_rejected"), (422, "operation_rejected")],
)  # fmt: skip
def test_http_status_decides(status: int, code: str) -> None:
    assert reason_code(None, status) == code
    assert reason_code(RetryableError("x", status=status)) == code
    assert reason_code(PermanentError("x", status=status)) == code


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (CredentialsError("x", status=401), "credentials_rejected"),
        (RateLimitedError("track", 0.5), "throttled"),
        (AuditUnavailableError("x"), "audit_unavailable"),
        (ConfigurationError("x"), "configuration"),
        (redis.ConnectionError("x"), "broker_unavailable"),
        (EnvelopeError("x"), "unreadable_payload"),
        (InvalidToken(), "unreadable_payload"),
        (WebhookHandlerError(("m.h",), (ValueError("x"),)), "handler_failed"),
        (OperationRejectedError("x", status=207), "operation_rejected"),
        (PermanentError("x"), "operation_rejected"),
        (RateLimiterUnavailableError("x"), "broker_unavailable"),
        (LeaseUnavailableError("x"), "broker_unavailable"),
        (SecretSourceUnavailableError("x"), "secret_source_unavailable"),
        (RetryableError("a delivery for this person is in flight"), "transient"),
        (KeyError("x"), "internal_error"),
    ],
)
def test_exception_class_decides(exc: BaseException, code: str) -> None:
    assert reason_code(exc) == code


def test_every_code_is_declared_and_a_class_may_declare_its_own() -> None:
    class Declared(Exception):
        reason_code = "server_error"

    class Bogus(Exception):
        reason_code = "not a code"

    assert reason_code(Declared()) == "server_error"
    assert reason_code(Bogus()) == "internal_error"
    assert len(set(REASONS)) == len(REASONS)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_a_real_timeout_and_a_real_refusal(silent_server: int) -> None:
    slow = TrackClient(site_id="s", api_key="k", base_url=f"https://127.0.0.1:{silent_server}",
                       timeout_s=0.2)  # fmt: skip
    with pytest.raises(RetryableError) as timed_out:
        slow.identify("person-1", {"plan": "pro"})
    assert reason_code(timed_out.value) == "timeout"
    closed = TrackClient(site_id="s", api_key="k", base_url=f"https://127.0.0.1:{free_port()}",
                         timeout_s=2)  # fmt: skip
    with pytest.raises(RetryableError) as refused:
        closed.identify("person-1", {"plan": "pro"})
    assert reason_code(refused.value) == "unreachable"


def test_failure_fields_carry_status_and_reason() -> None:
    fields = failure_fields(RetryableError("Customer.io answered 503", status=503))
    assert fields == {"reason": "server_error", "status": 503, "error_class": "RetryableError"}
    assert failure_fields(RateLimitedError("track", 1.0))["status"] is None


def test_a_failing_webhook_handler_is_named_with_its_type_never_its_message() -> None:
    clear_handlers()

    @on_webhook("email_bounced")
    def bounce_handler(event: dict[str, object]) -> None:
        raise LookupError(f"no row for {event['data']}")

    try:
        with pytest.raises(WebhookHandlerError) as failed:
            dispatch({"metric": "email_bounced", "data": SECRET_TEXT})
    finally:
        clear_handlers()
    record = logging.LogRecord("cioguard.webhooks", logging.INFO, __file__, 1, "webhook job "
                               "retrying", (), None)  # fmt: skip
    for key, value in failure_fields(failed.value).items():
        setattr(record, key, value)
    entry = json.loads(JsonFormatter().format(record))
    qualified = f"{__name__}.test_a_failing_webhook_handler_is_named_with_its_type_never_its_" \
        "message.<locals>.bounce_handler"  # fmt: skip
    assert entry["handler"] == qualified
    assert entry["handler_error"] == "LookupError"
    assert entry["reason"] == "handler_failed"
    assert "person-7f3a9c" not in json.dumps(entry) and "example.test" not in json.dumps(entry)
