"""Customer.io's person-attribute limits, checked on sanitized attributes.

Customer.io refuses attribute names over 150 UTF-8 bytes, more than 300 top-level attributes
and values over 1000 bytes (a string's UTF-8 bytes, any other value's compact JSON). Checking
after sanitizing means what is measured is what is sent; messages name the attribute and the
limit, never the value. Split from :mod:`.sanitizer`, which re-exports these names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from cioguard.errors import InvalidInputError

MAX_NAME_BYTES: Final = 150
MAX_ATTRIBUTES: Final = 300
MAX_VALUE_BYTES: Final = 1000


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 64 else repr(name[:64]) + "..."


def check_limits(attributes: Mapping[str, Any]) -> None:
    """Refuse sanitized attributes past Customer.io's limits (names, count, value size).

    Messages name the attribute and the limit, never the value.

    Note:
        Only top-level names are held to 150 bytes: nested keys are part of the value, which
        is held to 1000 bytes as compact JSON.
    """
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInputError(
            f"{len(attributes)} attributes after sanitizing; "
            f"Customer.io accepts at most {MAX_ATTRIBUTES}"
        )
    for name, value in attributes.items():
        # A character is at most 4 UTF-8 bytes: short names and strings need no encoding.
        if len(name) * 4 > MAX_NAME_BYTES and len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidInputError(
                f"attribute name {_shown(name)} is {len(name.encode('utf-8'))} bytes; "
                f"Customer.io accepts at most {MAX_NAME_BYTES}"
            )
        kind = type(value)
        if kind is str:
            if len(value) * 4 <= MAX_VALUE_BYTES:
                continue
            size = len(value.encode("utf-8"))
        elif value is None or kind is bool or kind is int or kind is float:
            continue  # a number's JSON form is far below the limit
        else:
            encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            size = len(encoded.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise InvalidInputError(
                f"attribute {_shown(name)} is {size} bytes after sanitizing; "
                f"Customer.io accepts at most {MAX_VALUE_BYTES} bytes per value"
            )
