"""What a Data Pipelines API request must look like: Customer.io's OpenAPI document
(``customerio-pipelines-openapi.json``, kept verbatim beside this module, sha256 in
``../shared/spec/SOURCE.md``) as JSON Schema checks, and the documented size limits measured on
the bytes received.

Why ``jsonschema``: the request bodies of an OpenAPI 3.1 document are JSON Schema 2020-12, which
``jsonschema`` implements; the limits (32,000 bytes a request, 500,000 a batch, 32,000 a call
inside it, decimal "KB" as the stricter reading) are outside any schema and are checked here on
the raw bytes, each call of a batch by its own span in the body (:func:`batch_call_sizes`).

Amendments, in memory only, each for a reason:

* every ``oneOf`` is read as ``anyOf``: the document's unions overlap, so no body satisfies them
  exactly once (a known-user ``track`` inside a batch also satisfies the anonymous variant,
  whose ``anonymousId`` is optional there; every semantic event is also a custom event);
* a semantic event (``User Deleted``, ``User Suppressed``, ...) is checked against its own
  schema as well, since the ``anyOf`` alone would let its custom-event reading excuse it;
* ``format: date-time`` is checked (``timestamp``, ``sentAt`` of each call), which JSON Schema
  leaves to an optional format checker.

Messages name the rule and the field path, never a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from cioguard.sandbox.wire import loads_strict

SPEC_FILE = "customerio-pipelines-openapi.json"
REQUEST_MAX_BYTES = 32_000
BATCH_MAX_BYTES = 500_000
CALL_MAX_BYTES = 32_000
ENDPOINT_SCHEMAS = {"identify": "identify", "track": "track", "batch": "batch"}
SEMANTIC_SCHEMAS = {"User Deleted": "delete_person", "User Suppressed": "suppress_person",
                    "User Unsuppressed": "unsuppress_person"}  # fmt: skip
DATE_FIELDS = ("timestamp", "sentAt", "originalTimestamp")
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class SpecViolation:
    """Why a request is not what the spec allows: a rule name and where (no values)."""

    rule: str
    where: str
    message: str


def _any_of(node: Any) -> Any:
    if isinstance(node, dict):
        return {("anyOf" if k == "oneOf" else k): _any_of(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    return node


@cache
def components() -> dict[str, Any]:
    """The document's ``components``, amended (see the module docs)."""
    text = resources.files("cioguard.sandbox").joinpath(SPEC_FILE).read_text(encoding="utf-8")
    amended: dict[str, Any] = _any_of(json.loads(text)["components"])
    return amended


@cache
def validator(schema: str) -> Any:
    """A 2020-12 validator for ``#/components/schemas/{schema}`` of the document."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": components()}
    return jsonschema.Draft202012Validator(root)


def _schema_errors(schema: str, value: Any, where: str) -> Iterator[SpecViolation]:
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "body"
        yield SpecViolation(f"schema:{schema}", f"{where}{path}", f"not valid as {schema}")


def _call_errors(call: Any, where: str) -> Iterator[SpecViolation]:
    """Checks beyond the schema for one call (a request body or one batch entry)."""
    if not isinstance(call, dict):
        return
    event, kind = call.get("event"), call.get("type", "track")
    semantic = SEMANTIC_SCHEMAS.get(event) if isinstance(event, str) and kind == "track" else None
    if semantic is not None:
        yield from _schema_errors(semantic, call, where)
    for name in DATE_FIELDS:
        if name in call and not _is_date_time(call[name]):
            yield SpecViolation("date-time", f"{where}{name}", f"{name} is not an ISO-8601 time")


def _is_date_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def check(endpoint: str, body: bytes) -> tuple[Any, list[SpecViolation]]:
    """The parsed body and every way it breaks the spec or a limit (empty: valid)."""
    limit = BATCH_MAX_BYTES if endpoint == "batch" else REQUEST_MAX_BYTES
    problems: list[SpecViolation] = []
    if len(body) > limit:
        problems.append(SpecViolation("limit", "body", f"the request is over {limit} bytes"))
    try:
        parsed = loads_strict(body)
    except (ValueError, UnicodeDecodeError):
        return None, [*problems, SpecViolation("json", "body", "the body is not JSON")]
    problems += _schema_errors(ENDPOINT_SCHEMAS[endpoint], parsed, "")
    if endpoint != "batch":
        problems += _call_errors(parsed, "")
        return parsed, problems
    calls = parsed.get("batch") if isinstance(parsed, dict) else None
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        problems += _call_errors(call, f"batch/{index}/")
    for index, size in enumerate(batch_call_sizes(body.decode("utf-8")) or []):
        if size > CALL_MAX_BYTES:
            msg = f"a call is over {CALL_MAX_BYTES} bytes"
            problems.append(SpecViolation("limit", f"batch/{index}", msg))
    return parsed, problems


def _skip(text: str, index: int) -> int:
    match = _WS.match(text, index)
    return match.end() if match else index


def batch_call_sizes(text: str) -> list[int] | None:
    """The size in bytes, as received, of each entry of the top-level ``batch`` array.

    Hand-written: ``json`` gives values, not where they were in the text; this walks the top
    level with ``raw_decode`` (the standard decoder) and measures each entry's own span. Call it
    on a body that already parsed; ``None`` when there is no ``batch`` array."""
    sizes: list[int] | None = None
    index = _skip(text, 0)
    if text[index : index + 1] != "{":
        return None
    index = _skip(text, index + 1)
    while text[index : index + 1] not in ("}", ""):
        key, index = _DECODER.raw_decode(text, index)
        index = _skip(text, _skip(text, index) + 1)  # past the colon
        if key == "batch" and text[index : index + 1] == "[":
            sizes, index = [], _skip(text, index + 1)
            while text[index : index + 1] not in ("]", ""):
                _, end = _DECODER.raw_decode(text, index)
                sizes.append(len(text[index:end].encode()))
                index = _skip(text, end)
                index = _skip(text, index + 1) if text[index : index + 1] == "," else index
            index += 1
        else:
            _, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        index = _skip(text, index + 1) if text[index : index + 1] == "," else index
    return sizes
