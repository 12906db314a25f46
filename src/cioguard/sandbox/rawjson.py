"""JSON parsed strictly, with the size in received bytes of every member the limits talk about.

Customer.io's limits (an attribute value of 1,000 bytes, event data of 100,000, an operation of
32 KB) are checked on the bytes that arrived, not on a re-serialization: a client that sends
``\\u00e9`` escapes or ``", "`` separators pays for them. Neither :mod:`json` nor ``jsonschema``
reports where a value sat in the text, so :func:`members` and :func:`items` walk one level of an
object or array and let :meth:`json.JSONDecoder.raw_decode` (the standard library's C scanner)
parse each value and report where it ended. Hand-written on purpose and kept to that walk: all
parsing is the standard library's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()

_WHITESPACE = " \t\n\r"


class DuplicateKeyError(ValueError):
    """An object names the same member twice: RFC 8259 leaves the meaning to the receiver."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DuplicateKeyError("an object has a duplicate key")
    return result


def loads(text: str) -> Any:
    """Strict JSON: no ``NaN``/``Infinity``, no duplicate keys (:class:`DuplicateKeyError`)."""
    return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_pairs)


@dataclass(frozen=True)
class Span:
    """Where a value sits in the received text: ``text[start:end]``; sizes are UTF-8 bytes."""

    start: int
    end: int

    def size(self, text: str) -> int:
        """Bytes of the value as received (the text was decoded from UTF-8, so this round-trips)."""
        return len(text[self.start : self.end].encode())

    def content_size(self, text: str) -> int:
        """Bytes as received without the quotes of a string (a string's own length as sent)."""
        raw = text[self.start : self.end]
        if raw.startswith('"'):
            raw = raw[1:-1]
        return len(raw.encode())


@dataclass(frozen=True)
class Member:
    """One ``"name": value`` of an object, with both spans."""

    name: str
    name_span: Span
    value_span: Span


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _expect(text: str, index: int, chars: str) -> tuple[str, int]:
    index = _skip(text, index)
    if index >= len(text) or text[index] not in chars:
        raise ValueError("unexpected character in JSON")
    return text[index], index + 1


def _value_end(text: str, index: int) -> int:
    _, end = _DECODER.raw_decode(text, index)
    return int(end)


def span_of(text: str) -> Span:
    """The span of the whole document's value (without surrounding whitespace)."""
    start = _skip(text, 0)
    return Span(start, _value_end(text, start))


def members(text: str, span: Span) -> Iterator[Member]:
    """The members of the object at ``span`` (already validated by :func:`loads`)."""
    _, index = _expect(text, span.start, "{")
    if text[_skip(text, index)] == "}":
        return
    while True:
        name_start = _skip(text, index)
        name, name_end = _DECODER.raw_decode(text, name_start)
        _, index = _expect(text, name_end, ":")
        value_start = _skip(text, index)
        value_end = _value_end(text, value_start)
        yield Member(str(name), Span(name_start, name_end), Span(value_start, value_end))
        sep, index = _expect(text, value_end, ",}")
        if sep == "}":
            return


def member(text: str, span: Span, name: str) -> Member | None:
    """The member called ``name`` of the object at ``span``, or ``None``."""
    return next((m for m in members(text, span) if m.name == name), None)


def items(text: str, span: Span) -> Iterator[Span]:
    """The spans of the elements of the array at ``span`` (already validated by :func:`loads`)."""
    _, index = _expect(text, span.start, "[")
    if text[_skip(text, index)] == "]":
        return
    while True:
        start = _skip(text, index)
        end = _value_end(text, start)
        yield Span(start, end)
        sep, index = _expect(text, end, ",]")
        if sep == "]":
            return
