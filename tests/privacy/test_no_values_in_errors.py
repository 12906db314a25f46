"""Issue 16 item 5: error messages carry no values, and the log/Sentry scrubbers drop e-mails.

Key paths past the top level are keyed hashes in errors (a nested key is often data itself:
``friends["bob@example.com"]``); the logs and Sentry redact e-mail addresses from any text.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from cioguard.errors import InvalidInputError, InvalidTypeError
from cioguard.ops.logs import JsonFormatter, TextFormatter
from cioguard.ops.sentry import before_send, redact_text
from cioguard.privacy.detectors import redact_emails
from cioguard.privacy.hashing import value_hash
from cioguard.privacy.policy import default_policy
from cioguard.privacy.sanitizer import MAX_DEPTH, Sanitizer

KEY = b"errors-test-key"
SANITIZER = Sanitizer(default_policy(), KEY)


@pytest.mark.parametrize(
    "data",
    [
        {"friends": {"bob@example.com": {1: "x"}}},  # a non-str key under an e-mail key
        {"friends": {"bob@example.com": [object()]}},  # a non-JSON value under it
        {"friends": [{"bob@example.com": {"x": {2: "y"}}}]},
    ],
)
def test_error_paths_never_show_nested_key_text(data: dict[str, Any]) -> None:
    with pytest.raises((InvalidTypeError, InvalidInputError)) as caught:
        SANITIZER.apply(data)
    message = str(caught.value)
    assert "bob" not in message and "example.com" not in message
    assert message.startswith(("a key at friends", "friends"))  # the top level is named
    assert f"[#{value_hash(KEY, 'bob@example.com')[:8]}]" in message  # findable with the key


def test_depth_error_path_is_hashed_too() -> None:
    data: dict[str, Any] = {"leaf": 1}
    for level in range(MAX_DEPTH + 2):
        data = {f"person{level}@example.com": data}
    with pytest.raises(InvalidInputError) as caught:
        SANITIZER.apply({"top": data})
    assert "example.com" not in str(caught.value)
    assert str(caught.value).startswith("top[#")


def test_safe_path_keeps_positions_and_the_top_level_name() -> None:
    path = 'profile.cards[0]["odd key"].number'
    safe = SANITIZER.safe_path(path)
    hashed = [value_hash(KEY, k)[:8] for k in ("cards", "odd key", "number")]
    assert safe == f"profile[#{hashed[0]}][0][#{hashed[1]}][#{hashed[2]}]"
    assert SANITIZER.safe_path('["top key"].x') == f'["top key"][#{value_hash(KEY, "x")[:8]}]'


def test_redact_emails_finds_addresses_in_text() -> None:
    text = "failed for bob.smith+tag@mail.example.co.uk and ALICE@EXAMPLE.COM; not a@b or @home"
    assert redact_emails(text) == (
        "failed for [REDACTED:email] and [REDACTED:email]; not a@b or @home"
    )


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("cioguard.test", logging.ERROR, __file__, 1, message, args, exc_info)


def test_log_formatters_redact_emails_in_messages_and_our_errors() -> None:
    error = InvalidInputError("person bob@example.com is odd")  # a bug: an e-mail in our error
    record = _record("delivery failed for %s", "ada@example.com", exc=error)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "example.com" not in line
    assert entry["msg"] == "delivery failed for [REDACTED:email]"
    assert entry["error"] == "person [REDACTED:email] is odd"
    text = TextFormatter().format(record)
    assert "example.com" not in text and "[REDACTED:email]" in text


def test_sentry_scrubber_redacts_emails_and_detector_hits() -> None:
    assert redact_text({"m": ["to ada@example.com, card 4111 1111 1111 1111"]}) == {
        "m": ["to [REDACTED:email], card [REDACTED:card]"]
    }
    try:
        raise InvalidInputError("bad data for ada@example.com")
    except InvalidInputError:
        exc_type, exc, _ = sys.exc_info()
    assert exc_type is not None
    event = {
        "message": "ada@example.com failed",
        "exception": {"values": [{"module": "cioguard.errors", "value": str(exc)}]},
    }
    cleaned = before_send(event, {})
    assert "example.com" not in json.dumps(cleaned)
