"""What a Track API request must look like: Customer.io's documented limits, strict JSON
parsing, and the parsers that turn a v1 request or a v2 batch operation into an :class:`Op`
or a :class:`Violation`.

Note: Customer.io states its size limits in "KB" without saying 1000 or 1024. The sandbox takes
the stricter decimal reading (500,000 and 32,000 bytes) so a client that passes here also passes
there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

ID_MAX_BYTES = 150


ATTRIBUTE_NAME_MAX_BYTES = 150


ATTRIBUTE_VALUE_MAX_BYTES = 1000


ATTRIBUTES_MAX = 300


EVENT_NAME_MAX_BYTES = 100


EVENT_DATA_MAX_BYTES = 100_000


BATCH_MAX_BYTES = 500_000


BATCH_OP_MAX_BYTES = 32_000


ACTIONS = frozenset({"identify", "event", "delete", "suppress", "unsuppress"})


IDENTIFIER_KEYS = frozenset({"id", "email", "cio_id"})


@dataclass(frozen=True)
class Violation:
    """Why one operation was refused; mirrors a v2 batch error. Never carries the data itself."""

    field: str
    reason: str
    message: str


@dataclass(frozen=True)
class Op:
    """One operation on one person, whether it came from a v1 call or a v2 batch entry.

    ``attributes`` holds identify attributes, or the event data for an event.
    """

    action: str
    person_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    event_id: str | None = None
    timestamp: int | None = None


class RequestRecord(TypedDict):
    """One track request as received, kept so tests can search bodies for canary values."""

    method: str
    path: str
    status: int
    body: str


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(body: bytes) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity``, as a real JSON API does."""
    return json.loads(body, parse_constant=_refuse_constant)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: how the limits are measured."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _utf8_len(text: str) -> int:
    return len(text.encode())


def _check_attributes(attributes: Mapping[str, Any]) -> Violation | None:
    """Customer.io's per-call attribute limits: count, name length, value length."""
    if len(attributes) > ATTRIBUTES_MAX:
        return Violation("attributes", "too_many", f"more than {ATTRIBUTES_MAX} attributes")
    for name, value in attributes.items():
        if _utf8_len(name) > ATTRIBUTE_NAME_MAX_BYTES:
            msg = f"an attribute name is longer than {ATTRIBUTE_NAME_MAX_BYTES} bytes"
            return Violation("attributes", "too_long", msg)
        size = _utf8_len(value) if isinstance(value, str) else json_size(value)
        if size > ATTRIBUTE_VALUE_MAX_BYTES:
            msg = f"an attribute value is longer than {ATTRIBUTE_VALUE_MAX_BYTES} bytes"
            return Violation("attributes", "too_long", msg)
    return None


def check_op(op: Op, reject_id_prefix: str | None) -> Violation | None:
    """Apply Customer.io's documented limits (and the poisoned-id fault) to one operation."""
    if not op.person_id:
        return Violation("identifiers", "required", "the person id is empty")
    if _utf8_len(op.person_id) > ID_MAX_BYTES:
        return Violation("identifiers", "too_long", f"the id is longer than {ID_MAX_BYTES} bytes")
    if reject_id_prefix and op.person_id.startswith(reject_id_prefix):
        return Violation("identifiers", "rejected", "this person cannot be processed")
    if op.action == "identify":
        return _check_attributes(op.attributes)
    if op.action == "event":
        if not op.name:
            return Violation("name", "required", "the event name is missing")
        if _utf8_len(op.name) > EVENT_NAME_MAX_BYTES:
            msg = f"the event name is longer than {EVENT_NAME_MAX_BYTES} bytes"
            return Violation("name", "too_long", msg)
        if json_size(op.attributes) > EVENT_DATA_MAX_BYTES:
            msg = f"the event data is larger than {EVENT_DATA_MAX_BYTES} bytes"
            return Violation("data", "too_long", msg)
    return None


def event_fields(body: Mapping[str, Any], data_key: str) -> tuple[Any, ...] | Violation:
    """Read ``(name, data, id, timestamp)`` of an event, checking their JSON types."""
    name, data = body.get("name"), body.get(data_key, {})
    event_id, timestamp = body.get("id"), body.get("timestamp")
    if not isinstance(name, str):
        return Violation("name", "invalid", "the event name must be a string")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return Violation(data_key, "invalid", "the event data must be an object")
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if event_id is not None and not isinstance(event_id, str):
        return Violation("id", "invalid", "the event id must be a string")
    if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
        return Violation("timestamp", "invalid", "the timestamp must be an integer")
    return name, data, event_id, timestamp


def parse_v1(action: str, person_id: str, body: bytes) -> Op | Violation:
    """Build the operation a v1 call asks for. Delete and (un)suppress ignore their body."""
    if action not in {"identify", "event"}:
        return Op(action, person_id)
    try:
        parsed = loads_strict(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return Violation("body", "invalid", "the body must be a JSON object")
    if action == "identify":
        return Op(action, person_id, parsed)
    fields_ = event_fields(parsed, "data")
    if isinstance(fields_, Violation):
        return fields_
    name, data, event_id, timestamp = fields_
    return Op(action, person_id, data, name, event_id, timestamp)


def _identifier(raw: Any) -> str | Violation:
    """The one identifier value of a batch op (``id``, ``email`` or ``cio_id``)."""
    if not isinstance(raw, dict) or len(raw) != 1:
        return Violation("identifiers", "invalid", "exactly one identifier is required")
    ((key, value),) = raw.items()
    if key not in IDENTIFIER_KEYS:
        return Violation("identifiers", "invalid", "the identifier must be id, email or cio_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return Violation("identifiers", "invalid", "the identifier must be a string")
    return value


def parse_batch_op(raw: Any) -> Op | Violation:
    """Build the operation one v2 batch entry asks for (event data sits in ``attributes``)."""
    if not isinstance(raw, dict):
        return Violation("batch", "invalid", "the operation must be an object")
    if json_size(raw) > BATCH_OP_MAX_BYTES:
        return Violation("batch", "too_long", f"the operation is over {BATCH_OP_MAX_BYTES} bytes")
    if raw.get("type") != "person":
        return Violation("type", "invalid", "only type person is supported")
    action = raw.get("action")
    if action not in ACTIONS:
        return Violation("action", "invalid", "unknown action")
    person_id = _identifier(raw.get("identifiers"))
    if isinstance(person_id, Violation):
        return person_id
    if action == "event":
        fields_ = event_fields(raw, "attributes")
        if isinstance(fields_, Violation):
            return fields_
        name, data, event_id, timestamp = fields_
        return Op(action, person_id, data, name, event_id, timestamp)
    attributes = raw.get("attributes") or {}
    if not isinstance(attributes, dict):
        return Violation("attributes", "invalid", "attributes must be an object")
    return Op(str(action), person_id, attributes if action == "identify" else {})
