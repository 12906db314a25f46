"""Input checks run in the application process before anything is enqueued.

Each check raises :class:`InvalidInputError` (a ``ValueError``) or :class:`InvalidTypeError`
(a ``TypeError``) with a message naming the problem and never the offending value: ids, names
and data may be personal data. Limits are Customer.io's documented ones (customerio-api.md).

Ordinary Python values are converted to Customer.io's conventions (:func:`json_value`), so an
application does not write the same conversions by hand: an ``int`` person id is sent as its
decimal string; in attribute and event-data values ``datetime`` and ``date`` become Unix seconds
(what Customer.io's date attributes take), ``Decimal`` a JSON number when a float holds it exactly
and its string otherwise, ``UUID`` its string, ``Enum`` its value, tuples lists.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from datetime import time as day_time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from cioguard.errors import InvalidInputError, InvalidTypeError

MAX_ID_BYTES = 150
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_REASON_CHARS = 32
MAX_MANNER_CHARS = 32
MAX_WALK_DEPTH = 100
"""How deep :func:`json_value` walks; the sanitizer's own, lower limit applies to attributes."""
_FLOAT_EXACT_INT = 2**53


def person_id(value: object) -> str:
    """A non-empty string of at most 150 UTF-8 bytes, without surrounding whitespace.

    An ``int`` (a database primary key, not ``bool``) is taken as its decimal string, so
    ``identify(42, ...)``, ``delete_person(42)`` and ``delete_person("42")`` name the same person.
    """
    if isinstance(value, int) and not isinstance(value, bool | Enum):
        return str(int(value))
    if not isinstance(value, str):
        raise InvalidTypeError(f"person_id must be a str or an int, not {type(value).__name__}")
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
    """A mapping with string keys whose values are JSON data after :func:`json_value`.

    Returned as a new plain dict with the values converted (the caller's mapping is untouched).
    """
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"{what} must be a mapping, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidTypeError(f"{what} keys must be str, found a {type(key).__name__} key")
    data = {key: json_value(item, what=what, path=key) for key, item in value.items()}
    encoded_size(data, what=what)
    return data


def json_value(
    value: object,
    *,
    what: str = "attributes",
    path: str = "",
    depth: int = 0,
    _inside: frozenset[int] = frozenset(),
) -> Any:
    """``value`` as JSON data, converting the ordinary Python types (module docstring).

    * ``datetime``: Unix seconds (an int, floored); a naive datetime is taken as UTC, never local
      time, like ``track(timestamp=...)``. Dates before 1970 give negative seconds.
    * ``date``: Unix seconds of its midnight UTC. To send ISO text instead, pass
      ``value.isoformat()``.
    * ``Decimal``: an int or float when that holds the value exactly (``Decimal("19.5")`` ->
      ``19.5``, ``Decimal("10")`` -> ``10``), else its string (``Decimal("0.1")`` -> ``"0.1"``,
      since the float 0.1 is not exactly 0.1), so no amount is silently rounded.
    * ``UUID``: its canonical string; ``Enum``: its value (converted in turn); tuple: a list.

    Anything else raises :class:`InvalidTypeError` naming the key path and the type, never the
    value. Hand-written: ``json.dumps(default=...)`` cannot say where the bad value sits, and
    pydantic's encoder turns dates into ISO text, not the Unix seconds Customer.io's date
    attributes take.
    """
    if isinstance(value, Enum):
        return json_value(value.value, what=what, path=path, depth=depth)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return math.floor(aware.timestamp())
    if isinstance(value, date):
        return math.floor(datetime.combine(value, day_time(), tzinfo=UTC).timestamp())
    if isinstance(value, Decimal):
        return _decimal(value, what)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        if id(value) in _inside:
            raise InvalidInputError(f"{what} contains a circular reference")
        if depth >= MAX_WALK_DEPTH:
            raise InvalidInputError(f"{what} are nested deeper than {MAX_WALK_DEPTH} levels")
        inside = _inside | {id(value)}
        if isinstance(value, Mapping):
            return {
                key: json_value(item, what=what, path=f"{path}.{key}", depth=depth + 1,
                                _inside=inside)
                for key, item in value.items()
            }  # fmt: skip
        return [
            json_value(item, what=what, path=f"{path}[{index}]", depth=depth + 1, _inside=inside)
            for index, item in enumerate(value)
        ]
    raise InvalidTypeError(
        f"{what} contains a value that is not JSON-serializable ({type(value).__name__}) at {path}"
    )


def _decimal(value: Decimal, what: str) -> int | float | str:
    if not value.is_finite():
        raise InvalidInputError(f"{what} contains NaN or Infinity, which JSON cannot carry")
    if value == value.to_integral_value() and abs(value) < _FLOAT_EXACT_INT:
        return int(value)
    as_float = float(value)
    if math.isfinite(as_float) and Decimal(as_float) == value:
        return as_float
    return str(value)


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
