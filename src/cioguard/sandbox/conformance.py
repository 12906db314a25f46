"""Is this request one Customer.io's published Track API spec allows? Pure: bytes in, verdict out.

Checked, in order: the route (path and method of an operation of the spec), the encoding of the
path parameters, the query string, the shape of the Basic ``Authorization`` header, the media
type, strict JSON, the body schema (with the spec's formats; for v2 the schema the operation's
``type``/``action`` selects), and the limits tables of the spec's ``info.description``, measured
on the bytes received (:mod:`cioguard.sandbox.rawjson`). Each violation has a short code
(:data:`CODES`); the routes answer it the way Customer.io documents and count it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

from cioguard.sandbox import bodies, openapi, rawjson
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
)

CODES: Mapping[str, str] = {
    "route.unknown": "no operation of the spec has this path (404)",
    "route.method": "the path exists in the spec, not with this method (404)",
    "route.unserved": "an operation of the spec the sandbox does not emulate (404)",
    "path.id_encoding": "a path id has an unencoded reserved character, a bad %-escape or "
    "non-UTF-8 bytes (400)",
    "path.id_dot_segment": "a path id is '.' or '..', which clients and proxies remove (400)",
    "query.unknown": "a query parameter the operation does not define (400)",
    "auth.missing": "no Authorization header (401)",
    "auth.malformed": "Authorization is not Basic base64(site_id:api_key) (401)",
    "body.content_type": "a body that is not application/json (400)",
    "body.json": "a body that is not UTF-8 JSON (NaN and Infinity included) (400)",
    "body.duplicate_key": "an object names a member twice (400)",
    "schema.<keyword>": "the body violates that JSON Schema keyword of the spec (400 or 207)",
    "format.ulid": "an event id that is not a ULID (400 or 207)",
    "format.unix_seconds": "a timestamp that is not whole Unix seconds, e.g. milliseconds",
    "format.email": "an e-mail field that is not an e-mail address (400 or 207)",
    "identifier.empty": "an empty person identifier (400 or 207)",
    "limit.id_bytes": f"a person id over {ID_MAX_BYTES} bytes",
    "limit.attribute_name_bytes": f"an attribute name over {ATTRIBUTE_NAME_MAX_BYTES} bytes",
    "limit.attribute_value_bytes": f"an attribute value over {ATTRIBUTE_VALUE_MAX_BYTES} bytes",
    "limit.attribute_count": f"more than {ATTRIBUTES_MAX} attributes in one call",
    "limit.event_name_bytes": f"an event name over {EVENT_NAME_MAX_BYTES} bytes",
    "limit.event_data_bytes": f"event data over {EVENT_DATA_MAX_BYTES} bytes",
    "limit.entity_bytes": f"a /api/v2/entity body over {ENTITY_MAX_BYTES} bytes (400)",
    "limit.batch_bytes": f"a /api/v2/batch body over {BATCH_MAX_BYTES} bytes (400)",
    "limit.operation_bytes": f"a batch operation over {BATCH_OP_MAX_BYTES} bytes (207)",
    "sandbox.unserved_action": "a valid v2 operation the sandbox does not emulate (400 or 207)",
}
"""Every violation code, with what it means and the status it is answered with."""

SERVED = {
    "getRegion": "region",
    "identify": "identify",
    "delete": "delete",
    "track": "event",
    "suppress": "suppress",
    "unsuppress": "unsuppress",
    "batch": "batch",
    "entity": "entity",
}
"""The spec's operationIds the sandbox emulates, and its name for each."""

SERVED_V2_ACTIONS = frozenset({"identify", "event", "delete", "suppress", "unsuppress"})

_PCHAR = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+")


def _routes() -> list[tuple[str, list[str], str]]:
    return [(m, p.split("/")[1:], op) for m, p, op in openapi.load().routes()]


def _match(method: str, parts: list[str]) -> tuple[str | None, dict[str, str], bool]:
    """``(operationId, raw path params, path known)`` for a request path split on ``/``."""
    path_known = False
    for route_method, template, operation_id in _routes():
        if len(template) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(template, parts, strict=True):
            if want.startswith("{") and got:
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            path_known = True
            if route_method == method:
                return operation_id, params, True
    return None, {}, path_known


def _path_param(raw: str) -> str | tuple[str, str]:
    """The decoded path parameter, or ``(code, message)`` when it is not properly encoded."""
    if not _PCHAR.fullmatch(raw):
        return "path.id_encoding", "the path id must be percent-encoded"
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return "path.id_encoding", "the path id is not UTF-8 once percent-decoded"
    if decoded in {".", ".."}:
        return "path.id_dot_segment", "the path id is a dot segment"
    return decoded


def _auth_problem(header: str | None) -> tuple[str, str] | None:
    if not header:
        return "auth.missing", "Basic authentication is required"
    scheme, _, encoded = header.partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        decoded = ""
    if scheme.lower() != "basic" or ":" not in decoded:
        return "auth.malformed", "Authorization must be Basic base64(site_id:api_key)"
    return None


def check(
    method: str, raw_path: bytes, query: bytes, headers: Mapping[str, str], body: bytes
) -> Checked:
    """Check one request against the spec (pure: no state, no I/O)."""
    operation_id, params, path_known = _match(method, raw_path.decode("latin-1").split("/")[1:])
    if operation_id is None:
        code = "route.method" if path_known else "route.unknown"
        return Checked("unknown").refuse(404, code, "path", "no such Track API operation")
    if operation_id not in SERVED:
        return Checked("unknown").refuse(404, "route.unserved", "path", "not emulated")
    checked = Checked(SERVED[operation_id])
    for name, raw in params.items():
        decoded = _path_param(raw)
        if isinstance(decoded, tuple):
            return checked.refuse(400, decoded[0], name, decoded[1])
        checked.person_id = decoded
    if len(checked.person_id.encode()) > ID_MAX_BYTES:
        checked.refuse(400, "limit.id_bytes", "identifier", f"the id is over {ID_MAX_BYTES} bytes")
    if query:
        checked.refuse(400, "query.unknown", "query", "this operation takes no query parameters")
    auth = _auth_problem(headers.get("authorization"))
    if auth is not None:
        return checked.refuse(401, auth[0], "authorization", auth[1])
    if checked.endpoint in {"identify", "event", "batch", "entity"}:
        _check_body(checked, headers.get("content-type", ""), body)
    return checked


def _check_body(checked: Checked, content_type: str, body: bytes) -> None:
    """Media type, strict JSON, then the endpoint's schema and limits."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        checked.refuse(400, "body.content_type", "body", "the body must be application/json")
        return
    try:
        text = body.decode("utf-8")
        checked.body = rawjson.loads(text)
    except rawjson.DuplicateKeyError:
        checked.refuse(400, "body.duplicate_key", "body", "an object has a duplicate key")
        return
    except ValueError:
        checked.refuse(400, "body.json", "body", "the body must be UTF-8 JSON")
        return
    bodies.check_endpoint(checked, text)
