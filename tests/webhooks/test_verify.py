"""Unit tests for webhook verification and the handler registry (no network, fixed clock)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cioguard.errors import InvalidInputError, InvalidTypeError, WebhookVerificationError
from cioguard.webhooks.verify import (
    WebhookHandlerError,
    clear_handlers,
    dispatch,
    on_webhook,
    sign_webhook,
    verify_webhook,
)

NOW = 1_700_000_000
SECRET = "whsec-current"
OLD_SECRET = "whsec-previous"
MARKER = "jane.doe+marker@example.com"
BODY = json.dumps(
    {"event_id": "01HXEVENT", "metric": "opened", "data": {"identifiers": {"email": MARKER}}}
).encode()


def signed(
    body: bytes = BODY, *, secret: str = SECRET, ts: int = NOW, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for a verify_webhook call that passes, unless overridden."""
    kwargs: dict[str, Any] = {
        "timestamp": str(ts),
        "signature": sign_webhook(body, secret, ts),
        "secrets": [SECRET],
        "now": float(NOW),
    }
    kwargs.update(overrides)
    return kwargs


def reason_of(body: bytes, **kwargs: Any) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_webhook(body, **kwargs)
    text = str(caught.value)
    assert MARKER not in text
    assert body.decode("utf-8", "replace") not in text or not body
    return caught.value.reason


# --- signing -------------------------------------------------------------------------------


def test_sign_webhook_matches_an_independent_implementation() -> None:
    # printf 'v0:1700000000:<body>' | openssl dgst -sha256 -hmac whsec-vector
    body = b'{"event_id":"01HX","metric":"opened"}'
    expected = "e932c8c3511b1e0a8f3f7e7bebbc29e73a2167e418906142997afb0d7a249168"
    assert sign_webhook(body, "whsec-vector", 1_700_000_000) == expected


# --- verify_webhook: success -----------------------------------------------------------------


def test_valid_webhook_returns_the_event() -> None:
    assert verify_webhook(BODY, **signed()) == json.loads(BODY)


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_each_secret_verifies_during_rotation(secret: str) -> None:
    event = verify_webhook(BODY, **signed(secret=secret, secrets=[SECRET, OLD_SECRET]))
    assert event["event_id"] == "01HXEVENT"


def test_uppercase_hex_signature_is_accepted() -> None:
    kwargs = signed()
    kwargs["signature"] = kwargs["signature"].upper()
    assert verify_webhook(BODY, **kwargs)["metric"] == "opened"


@pytest.mark.parametrize("offset_s", [-300, 300])
def test_timestamp_exactly_at_the_tolerance_edge_is_accepted(offset_s: int) -> None:
    assert verify_webhook(BODY, **signed(ts=NOW + offset_s))["metric"] == "opened"


def test_clock_defaults_to_real_time() -> None:
    import time

    ts = int(time.time())
    kwargs = signed(ts=ts)
    del kwargs["now"]
    assert verify_webhook(BODY, **kwargs)["metric"] == "opened"


# --- verify_webhook: one reason per failure --------------------------------------------------


def test_missing_timestamp() -> None:
    assert reason_of(BODY, **signed(timestamp="")) == "missing_timestamp"


def test_missing_signature() -> None:
    assert reason_of(BODY, **signed(signature="")) == "missing_signature"


@pytest.mark.parametrize(
    "bad", ["12.5", "-5", " 1700000000", "1_700_000_000", "abc", "\u0661\u0667\u0660\u0660", "1e9"]
)
def test_bad_timestamp(bad: str) -> None:
    assert reason_of(BODY, **signed(timestamp=bad)) == "bad_timestamp"


def test_timestamp_too_old() -> None:
    assert reason_of(BODY, **signed(ts=NOW - 301)) == "timestamp_too_old"


def test_timestamp_in_future() -> None:
    assert reason_of(BODY, **signed(ts=NOW + 301)) == "timestamp_in_future"


def test_tolerance_is_configurable() -> None:
    assert reason_of(BODY, **signed(ts=NOW - 61, tolerance_s=60)) == "timestamp_too_old"


@pytest.mark.parametrize("secrets", [[], [""], ("", "")])
def test_no_secrets(secrets: list[str]) -> None:
    assert reason_of(BODY, **signed(secrets=secrets)) == "no_secrets"


def test_empty_secret_is_never_a_valid_key() -> None:
    assert reason_of(BODY, **signed(secret="", secrets=["", SECRET])) == "signature_mismatch"


def test_wrong_secret_is_a_mismatch() -> None:
    assert reason_of(BODY, **signed(secret="whsec-attacker")) == "signature_mismatch"


def test_tampered_body_is_a_mismatch() -> None:
    tampered = BODY.replace(b"opened", b"clicked")
    assert reason_of(tampered, **signed(BODY)) == "signature_mismatch"


def test_signature_over_the_body_alone_is_a_mismatch() -> None:
    # The seed document's recipe (HMAC over the body only) is not Customer.io's scheme.
    import hashlib
    import hmac

    body_only = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert reason_of(BODY, **signed(signature=body_only)) == "signature_mismatch"


def test_signature_from_another_timestamp_is_a_mismatch() -> None:
    kwargs = signed()
    kwargs["timestamp"] = str(NOW + 1)
    assert reason_of(BODY, **kwargs) == "signature_mismatch"


@pytest.mark.parametrize(
    "malformed",
    ["zz" * 32, "abc", "0" * 63, "0" * 65, "é" * 64, "\x00" * 64, "v0=" + "0" * 64, "0" * 10_000],
)
def test_malformed_signature_is_a_mismatch(malformed: str) -> None:
    assert reason_of(BODY, **signed(signature=malformed)) == "signature_mismatch"


def test_signature_is_checked_before_the_age() -> None:
    # A forged, stale request reads as a forgery, not as clock skew.
    kwargs = signed(ts=NOW - 10_000, secret="whsec-attacker")
    assert reason_of(BODY, **kwargs) == "signature_mismatch"


@pytest.mark.parametrize(
    "body", [b"not json", b"{", b"\xff\xfe\xfa", b"[" * 200_000, b'{"a": NaN}', b""]
)
def test_bad_json_after_a_valid_signature(body: bytes) -> None:
    assert reason_of(body, **signed(body)) == "bad_json"


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null", b"true"])
def test_not_an_object(body: bytes) -> None:
    assert reason_of(body, **signed(body)) == "not_an_object"


def test_non_positive_tolerance_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        verify_webhook(BODY, **signed(tolerance_s=0))


def test_a_single_string_as_secrets_is_refused() -> None:
    with pytest.raises(InvalidTypeError):
        verify_webhook(BODY, **signed(secrets=SECRET))


header_text = st.text(st.characters(codec="utf-8"), max_size=80)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), timestamp=header_text, signature=header_text)
def test_random_input_only_ever_raises_the_verification_error(
    body: bytes, timestamp: str, signature: str
) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, timestamp=timestamp, signature=signature, secrets=[SECRET], now=NOW)


json_objects = st.dictionaries(
    st.text(max_size=10), st.one_of(st.integers(), st.text(), st.booleans()), max_size=5
)


@settings(max_examples=100, deadline=None)
@given(event=json_objects, ts=st.integers(NOW - 300, NOW + 300))
def test_sign_then_verify_round_trips(event: dict[str, Any], ts: int) -> None:
    body = json.dumps(event).encode()
    assert verify_webhook(body, **signed(body, ts=ts)) == event


# --- registry and dispatch -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    clear_handlers()
    yield
    clear_handlers()


def test_on_webhook_returns_the_function_unchanged() -> None:
    def handler(event: dict[str, Any]) -> None:
        pass

    assert on_webhook("opened")(handler) is handler


def test_dispatch_runs_handlers_for_the_metric_and_wildcard() -> None:
    seen: list[str] = []

    @on_webhook("opened")
    def opened(event: dict[str, Any]) -> None:
        seen.append("opened")

    @on_webhook("clicked")
    def clicked(event: dict[str, Any]) -> None:
        seen.append("clicked")

    @on_webhook("*")
    def every(event: dict[str, Any]) -> None:
        seen.append("*")

    assert dispatch({"metric": "opened"}) == 2
    assert seen == ["opened", "*"]


def test_dispatch_with_no_handler_returns_zero() -> None:
    assert dispatch({"metric": "bounced"}) == 0


def test_registering_twice_runs_once() -> None:
    calls: list[dict[str, Any]] = []
    on_webhook("sent")(calls.append)
    on_webhook("sent")(calls.append)
    assert dispatch({"metric": "sent"}) == 1
    assert len(calls) == 1


def test_clear_handlers_forgets_everything() -> None:
    on_webhook("*")(lambda event: None)
    clear_handlers()
    assert dispatch({"metric": "sent"}) == 0


def test_failing_handler_does_not_stop_the_others() -> None:
    ran: list[str] = []

    @on_webhook("opened")
    def broken(event: dict[str, Any]) -> None:
        raise ValueError(f"cannot handle {event['data']}")

    @on_webhook("*")
    def audit(event: dict[str, Any]) -> None:
        ran.append("audit")

    with pytest.raises(WebhookHandlerError) as caught:
        dispatch({"metric": "opened", "data": MARKER})
    assert ran == ["audit"]
    error = caught.value
    assert error.handler_names == (f"{__name__}.{broken.__qualname__}",)
    assert isinstance(error.exceptions[0], ValueError)
    assert "ValueError" in str(error)


def test_handler_error_never_carries_the_payload() -> None:
    @on_webhook("opened")
    def broken(event: dict[str, Any]) -> None:
        raise ValueError(f"cannot handle {event['data']}")

    with pytest.raises(WebhookHandlerError) as caught:
        dispatch({"metric": "opened", "data": MARKER})
    assert MARKER not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


def test_dispatch_refuses_an_event_without_a_metric() -> None:
    with pytest.raises(InvalidInputError):
        dispatch({"event_id": "x"})


def test_on_webhook_refuses_an_empty_metric() -> None:
    with pytest.raises(InvalidInputError):
        on_webhook("")
