"""Input checks run in the application process before anything is enqueued.

Each check raises :class:`InvalidInputError` (a ``ValueError``) or :class:`InvalidTypeError`
(a ``TypeError``) with a message naming the problem and never the offending value: ids, names
and data may be personal data. Limits are Customer.io's documented ones (customerio-api.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cioguard.errors import InvalidInputError, InvalidTypeError

MAX_ID_BYTES = 150
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_REASON_CHARS = 32
MAX_MANNER_CHARS = 32


def person_id(value: object) -> str:
    """A non-empty string of at most 150 UTF-8 bytes, without surrounding whitespace."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"person_id must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError("person_id is empty")
    if value != value.strip():
        raise InvalidInputError("person_id has leading or trailing whitespace")
    if len(_utf8(value, "person_id")) > MAX_ID_BYTES:
        raise InvalidInputError(f"person_id is longer than {MAX_ID_BYTES} bytes")
    return value


def _utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} is not valid Unicode (a lone surrogate)") from None


def attributes(value: object, *, what: str = "attributes") -> dict[str, Any]:
    """A mapping with string keys whose values serialize to JSON; returned as a plain dict."""
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"{what} must be a mapping, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidTypeError(f"{what} keys must be str, found a {type(key).__name__} key")
    data = dict(value)
    encoded_size(data, what=what)
    return data


def encoded_size(value: object, *, what: str) -> int:
    """The JSON size in bytes; refuses non-serializable values and NaN/Infinity."""
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except TypeError:
        bad = _first_bad_type(value)
        raise InvalidTypeError(
            f"{what} contains a value that is not JSON-serializable ({bad})"
        ) from None
    except ValueError as exc:
        if "Circular reference" in str(exc):
            raise InvalidInputError(f"{what} contains a circular reference") from None
        raise InvalidInputError(
            f"{what} contains NaN or Infinity, which JSON cannot carry"
        ) from None
    return len(_utf8(encoded, what))


def _first_bad_type(value: object) -> str:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"a {type(key).__name__} key"
            found = _first_bad_type(item)
            if found:
                return found
        return ""
    if isinstance(value, list | tuple):
        for item in value:
            found = _first_bad_type(item)
            if found:
                return found
        return ""
    if value is None or isinstance(value, str | int | float | bool):
        return ""
    return type(value).__name__


def event_name(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"event name must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError("event name is empty")
    if len(_utf8(value, "event name")) > MAX_EVENT_NAME_BYTES:
        raise InvalidInputError(f"event name is longer than {MAX_EVENT_NAME_BYTES} bytes")
    return value


def event_data(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    data = attributes(value, what="event data")
    if encoded_size(data, what="event data") > MAX_EVENT_DATA_BYTES:
        raise InvalidInputError(f"event data is larger than {MAX_EVENT_DATA_BYTES} bytes as JSON")
    return data


UNIX_SECONDS_MAX = 10_000_000_000
"""Whole seconds before November 2286. A larger value is milliseconds (or a finer unit), which
Customer.io would store as a date thousands of years ahead."""

TIMESTAMP_ATTRIBUTES = ("created_at", "_timestamp")
"""Attributes Customer.io defines as Unix timestamps (``created_at``: when the person was created;
``_timestamp``: when the update happened)."""


def unix_seconds(value: object, *, what: str = "timestamp") -> int:
    """Whole Unix seconds from an int or a datetime (naive means UTC; fractions are floored).

    Refused: other types (floats and strings included: ``1.7e9`` and ``"1700000000"`` look right
    but are not what the spec's ``integer`` means, and converting them would hide a unit or
    parsing mistake), negative values, and values of milliseconds or finer.
    """
    if isinstance(value, bool) or not isinstance(value, int | datetime):
        raise InvalidTypeError(f"{what} must be an int or a datetime, not {type(value).__name__}")
    if isinstance(value, datetime):
        seconds = value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
        value = math.floor(seconds)
    if value < 0:
        raise InvalidInputError(f"{what} is negative")
    if value >= UNIX_SECONDS_MAX:
        raise InvalidInputError(
            f"{what} looks like milliseconds (or a finer unit): Customer.io takes whole Unix "
            "seconds, divide by 1000"
        )
    return int(value)


def timestamp(value: object, *, now: Callable[[], float] = time.time) -> int:
    """An event's time in whole Unix seconds; ``None`` means the time of this call.

    Why not leave it out when ``None``: Customer.io then dates the event on arrival, which after
    a backlog or retries is not when it happened.
    """
    if value is None:
        return math.floor(now())
    return unix_seconds(value, what="timestamp")


def timestamp_attributes(value: object) -> object:
    """``value`` with its :data:`TIMESTAMP_ATTRIBUTES` as whole Unix seconds (datetimes
    converted), or unchanged when it is not a mapping (:func:`attributes` refuses that)."""
    if not isinstance(value, Mapping) or not any(name in value for name in TIMESTAMP_ATTRIBUTES):
        return value
    converted = dict(value)
    for name in TIMESTAMP_ATTRIBUTES:
        if name in converted:
            converted[name] = unix_seconds(converted[name], what=name)
    return converted


def reason(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"reason must be a str, not {type(value).__name__}")
    if not value.strip() or len(value) > MAX_REASON_CHARS:
        raise InvalidInputError(f"reason must be 1-{MAX_REASON_CHARS} characters")
    return value.strip()


def manner(value: object) -> str:
    """How a deletion request was made (``api``, ``bulk``, ``email``...): 1-32 characters."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"manner must be a str, not {type(value).__name__}")
    if not value.strip() or len(value) > MAX_MANNER_CHARS:
        raise InvalidInputError(f"manner must be 1-{MAX_MANNER_CHARS} characters")
    return value.strip()
