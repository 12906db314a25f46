"""The sandbox's vocabulary: Customer.io's documented limits, a :class:`Violation`, the
:class:`Checked` verdict on a request, and the :class:`Op` a valid v1 call or v2 operation asks
for (:func:`v1_op`, :func:`v2_op`; the checks themselves are in
:mod:`cioguard.sandbox.conformance`).

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


ENTITY_MAX_BYTES = 32_000


@dataclass(frozen=True)
class Violation:
    """Why a request or one operation was refused; mirrors a v2 batch error. ``reason`` is a
    spec violation code (:data:`cioguard.sandbox.conformance.CODES`) or ``rejected`` (the
    poisoned-person fault). Never carries the data itself."""

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


@dataclass
class Checked:
    """The verdict on one request.

    ``violations`` refuse the whole request with ``status``; ``op_violations`` (v2 batch) refuse
    single operations by index. ``body`` is the parsed JSON when there was one.
    """

    endpoint: str
    person_id: str = ""
    body: Any = None
    status: int = 200
    violations: list[Violation] = field(default_factory=list)
    op_violations: dict[int, list[Violation]] = field(default_factory=dict)

    def refuse(self, status: int, code: str, field_: str, message: str) -> Checked:
        self.status = self.status if self.violations else status
        self.violations.append(Violation(field_, code, message))
        return self

    def codes(self) -> list[str]:
        """Every violation code of the request, operations included (one per violation)."""
        found = [v.reason for v in self.violations]
        return found + [v.reason for vs in self.op_violations.values() for v in vs]


class RequestRecord(TypedDict, total=False):
    """One track request as received, kept so tests can search bodies for canary values;
    ``violations`` lists the spec violation codes it had."""

    method: str
    path: str
    status: int
    body: str
    violations: list[str]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(body: bytes) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity``, as a real JSON API does."""
    return json.loads(body, parse_constant=_refuse_constant)


def poisoned(op: Op, reject_id_prefix: str | None) -> Violation | None:
    """The poisoned-person fault: a valid op refused because its id has the configured prefix."""
    if reject_id_prefix and op.person_id.startswith(reject_id_prefix):
        return Violation("identifiers", "rejected", "this person cannot be processed")
    return None


def _timestamp(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def v1_op(endpoint: str, person_id: str, body: Any) -> Op:
    """The operation a v1 call asks for, from a body :mod:`~cioguard.sandbox.conformance`
    accepted. Delete and (un)suppress take no body."""
    if endpoint == "identify":
        return Op(endpoint, person_id, dict(body))
    if endpoint == "event":
        data = body.get("data") or {}
        event_id, timestamp = body.get("id"), _timestamp(body.get("timestamp"))
        return Op(endpoint, person_id, dict(data), str(body["name"]), event_id, timestamp)
    return Op(endpoint, person_id)


def v2_op(raw: Mapping[str, Any]) -> Op:
    """The operation one accepted v2 person operation asks for (event data in ``attributes``)."""
    ((_, person_id),) = raw["identifiers"].items()
    action = str(raw["action"])
    attributes = dict(raw.get("attributes") or {})
    if action == "event":
        event_id, timestamp = raw.get("id"), _timestamp(raw.get("timestamp"))
        return Op(action, str(person_id), attributes, str(raw["name"]), event_id, timestamp)
    return Op(action, str(person_id), attributes if action == "identify" else {})
