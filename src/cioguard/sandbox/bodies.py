"""The body checks of each served endpoint: the spec's schema, then its limits on received bytes.

A request-level problem refuses the whole request (v1 calls, ``/api/v2/entity``, the size or the
envelope of ``/api/v2/batch``); a problem with one batch operation refuses that operation alone
(Customer.io's 207). Ids, names and string values are measured as sent between their quotes
(escapes included), other values as their JSON text as sent: the strict reading, so a client that
passes here passes whichever way Customer.io counts.
"""

from __future__ import annotations

from cioguard.sandbox import openapi, rawjson
from cioguard.sandbox.openapi import Issue
from cioguard.sandbox.rawjson import Span
from cioguard.sandbox.wire import (
    ATTRIBUTE_NAME_MAX_BYTES,
    ATTRIBUTE_VALUE_MAX_BYTES,
    ATTRIBUTES_MAX,
    BATCH_MAX_BYTES,
    BATCH_OP_MAX_BYTES,
    ENTITY_MAX_BYTES,
    EVENT_DATA_MAX_BYTES,
    EVENT_NAME_MAX_BYTES,
    ID_MAX_BYTES,
    Checked,
    Violation,
)

SERVED_V2 = frozenset({"identify", "event", "delete", "suppress", "unsuppress"})
"""The person actions the sandbox applies; other valid v2 operations are not emulated."""

NOT_ATTRIBUTES = frozenset({"cio_relationships"})
"""Members of an identify body that are instructions, not attributes with a size limit."""


def _violations(issues: list[Issue]) -> list[Violation]:
    return [Violation(issue.field, issue.code, issue.message) for issue in issues]


def _over(code: str, field: str, what: str, limit: int) -> Violation:
    return Violation(field, code, f"{what} is over {limit} bytes")


def attribute_limits(text: str, span: Span, field: str) -> list[Violation]:
    """Count, name and value limits of the attributes object at ``span``."""
    found: list[Violation] = []
    count = 0
    for member in rawjson.members(text, span):
        if member.name in NOT_ATTRIBUTES:
            continue
        count += 1
        if member.name_span.content_size(text) > ATTRIBUTE_NAME_MAX_BYTES:
            limit = ATTRIBUTE_NAME_MAX_BYTES
            found.append(_over("limit.attribute_name_bytes", field, "an attribute name", limit))
        if member.value_span.content_size(text) > ATTRIBUTE_VALUE_MAX_BYTES:
            limit = ATTRIBUTE_VALUE_MAX_BYTES
            found.append(_over("limit.attribute_value_bytes", field, "an attribute value", limit))
    if count > ATTRIBUTES_MAX:
        message = f"more than {ATTRIBUTES_MAX} attributes"
        found.append(Violation(field, "limit.attribute_count", message))
    return found


def event_limits(text: str, span: Span, data_key: str) -> list[Violation]:
    """Name and data limits of the event object at ``span`` (data in ``data_key``)."""
    found: list[Violation] = []
    name = rawjson.member(text, span, "name")
    if name is not None and name.value_span.content_size(text) > EVENT_NAME_MAX_BYTES:
        found.append(
            _over("limit.event_name_bytes", "name", "the event name", EVENT_NAME_MAX_BYTES)
        )
    data = rawjson.member(text, span, data_key)
    if data is not None and data.value_span.size(text) > EVENT_DATA_MAX_BYTES:
        limit = EVENT_DATA_MAX_BYTES
        found.append(_over("limit.event_data_bytes", data_key, "the event data", limit))
    return found


def operation(text: str, span: Span, raw: object) -> list[Violation]:
    """One v2 operation (a batch item or an entity body): schema, then limits."""
    found = _violations(openapi.load().operation_issues(raw))
    if found or not isinstance(raw, dict):
        return found
    identifiers = rawjson.member(text, span, "identifiers")
    for identifier in rawjson.members(text, identifiers.value_span) if identifiers else ():
        size = identifier.value_span.content_size(text)
        if size == 0:
            found.append(Violation("identifiers", "identifier.empty", "the identifier is empty"))
        elif size > ID_MAX_BYTES:
            found.append(_over("limit.id_bytes", "identifiers", "the identifier", ID_MAX_BYTES))
    action = raw.get("action")
    if action == "identify":
        attributes = rawjson.member(text, span, "attributes")
        if attributes is not None:
            found += attribute_limits(text, attributes.value_span, "attributes")
    elif action == "event":
        found += event_limits(text, span, "attributes")
    if not found and (raw.get("type") != "person" or action not in SERVED_V2):
        message = "the sandbox emulates only person identify, event, delete, (un)suppress"
        found.append(Violation("action", "sandbox.unserved_action", message))
    return found


def check_endpoint(checked: Checked, text: str) -> None:
    """The schema and limit checks of ``checked.endpoint`` on its parsed, strict-JSON body."""
    spec, span, body = openapi.load(), rawjson.span_of(text), checked.body
    if checked.endpoint == "identify":
        found = _violations(spec.issues("x-sandbox-v1-identify", body))
        if isinstance(body, dict):
            found += attribute_limits(text, span, "body")
    elif checked.endpoint == "event":
        found = _violations(spec.event_issues(body))
        if isinstance(body, dict):
            found += event_limits(text, span, "data")
    elif checked.endpoint == "entity":
        size = len(text.encode())
        if size > ENTITY_MAX_BYTES:
            found = [_over("limit.entity_bytes", "body", "the request", ENTITY_MAX_BYTES)]
        else:
            found = operation(text, span, body)
    else:
        _check_batch(checked, text, span)
        return
    for violation in found:
        checked.refuse(400, violation.reason, violation.field, violation.message)


def _check_batch(checked: Checked, text: str, span: Span) -> None:
    if len(text.encode()) > BATCH_MAX_BYTES:
        checked.refuse(400, "limit.batch_bytes", "body", f"the batch is over {BATCH_MAX_BYTES}")
        return
    envelope = openapi.load().issues("x-sandbox-batch-envelope", checked.body)
    for issue in envelope:
        checked.refuse(400, issue.code, issue.field, issue.message)
    if envelope:
        return
    batch = rawjson.member(text, span, "batch")
    assert batch is not None  # the envelope schema requires it
    for index, (item_span, raw) in enumerate(
        zip(rawjson.items(text, batch.value_span), checked.body["batch"], strict=True)
    ):
        if item_span.size(text) > BATCH_OP_MAX_BYTES:
            found = [_over("limit.operation_bytes", "", "the operation", BATCH_OP_MAX_BYTES)]
        else:
            found = operation(text, item_span, raw)
        if found:
            checked.op_violations[index] = found
