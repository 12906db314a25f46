"""The sandbox's validator against Customer.io's own examples, and hand-made breaks of them.

Every valid request here is an example of the published spec (read from the packaged document,
so they cannot drift apart); every invalid one changes one thing of a valid request and must be
refused with one expected code. A validator that lets anything through fails the second half;
one that refuses too much fails the first.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from importlib import resources
from typing import Any

import pytest

from cioguard.sandbox import conformance, openapi
from cioguard.sandbox import spec as spec_package
from cioguard.sandbox.wire import Checked

AUTH = "Basic " + base64.b64encode(b"site:key").decode()
JSON_HEADERS = {"authorization": AUTH, "content-type": "application/json"}
ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
CANARY = "canary-value-7f3a"

SPEC = openapi.load()
SCHEMAS = SPEC.document["components"]["schemas"]
V1_IDENTIFY_EXAMPLE = json.loads(
    resources.files(spec_package).joinpath(spec_package.SPEC_FILE).read_text("utf-8")
)["paths"]["/api/v1/customers/{identifier}"]["put"]["requestBody"]["content"]["application/json"][
    "example"
]
EVENT_EXAMPLES = {v["title"]: v["example"] for v in SCHEMAS["eventsRequest"]["oneOf"]}
V2_EXAMPLES = {
    name: SCHEMAS[name]["example"]
    for name in (
        "identify_person",
        "person_event",
        "person_delete",
        "person_suppress",
        "person_unsuppress",
    )
}


def dumps(value: Any, **kwargs: Any) -> bytes:
    return json.dumps(value, **kwargs).encode()


def check(
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    query: bytes = b"",
) -> Checked:
    content = raw if raw is not None else (b"" if body is None else dumps(body))
    return conformance.check(
        method, path.encode(), query, JSON_HEADERS if headers is None else headers, content
    )


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(base)
    result.update(changes)
    return result


def test_packaged_spec_is_the_published_document() -> None:
    data = resources.files(spec_package).joinpath(spec_package.SPEC_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec_package.SPEC_SHA256


def test_v2_operations_are_read_from_the_spec() -> None:
    person = SPEC.operations["person"]
    assert person["identify"] == ["identify_person"]
    assert person["event"] == ["person_event"]
    assert {"delete", "suppress", "unsuppress", "merge", "add_device"} <= person.keys()
    assert set(SPEC.operations) == {"person", "object", "delivery"}


# -- valid: the spec's own examples ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/v1/customers/5", V1_IDENTIFY_EXAMPLE),
        ("POST", "/api/v1/customers/5/events", EVENT_EXAMPLES["Standard event"]),
        ("POST", "/api/v1/customers/5/events", EVENT_EXAMPLES["Page view"]),
        ("POST", "/api/v1/customers/cio_03000001/events", EVENT_EXAMPLES["Standard event"]),
        ("PUT", "/api/v1/customers/person%40example.com", {"first_name": "Bob"}),
        ("DELETE", "/api/v1/customers/5", None),
        ("POST", "/api/v1/customers/5/suppress", None),
        ("POST", "/api/v1/customers/5/unsuppress", None),
        ("GET", "/api/v1/accounts/region", None),
        *(("POST", "/api/v2/entity", example) for example in V2_EXAMPLES.values()),
        ("POST", "/api/v2/batch", {"batch": list(V2_EXAMPLES.values())}),
    ],
)
def test_spec_examples_are_valid(method: str, path: str, body: Any) -> None:
    checked = check(method, path, body)
    assert checked.codes() == []
    assert checked.endpoint != "unknown"


def test_docs_over_spec_nested_and_float_attribute_values_are_valid() -> None:
    """The spec's v1 identify allows string/integer/boolean values; the docs accept any JSON."""
    body = {"score": 1.5, "address": {"city": "Berlin", "tags": ["a", None]}, "vip": None}
    assert check("PUT", "/api/v1/customers/5", body).codes() == []


def test_the_official_clients_empty_bodies_on_delete_and_suppress_are_valid() -> None:
    assert check("DELETE", "/api/v1/customers/5", {}).codes() == []
    assert check("POST", "/api/v1/customers/5/suppress", {}).codes() == []


def test_the_spec_batch_example_person_op_is_valid_object_ops_are_not_served() -> None:
    """The example's third op trips the spec's own schema: the relationship ``identifiers`` is a
    ``oneOf`` whose branches require nothing, so ``{"id": "42"}`` matches all of them."""
    example = SPEC.document["paths"]["/api/v2/batch"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["example"]
    checked = check("POST", "/api/v2/batch", example)
    assert checked.violations == []
    codes = {i: [v.reason for v in vs] for i, vs in checked.op_violations.items()}
    assert codes == {1: ["sandbox.unserved_action"], 2: ["schema.oneOf"]}


# -- invalid: one thing broken each -----------------------------------------------------------

EVENT = EVENT_EXAMPLES["Standard event"]
V2_EVENT = V2_EXAMPLES["person_event"]
V2_IDENTIFY = V2_EXAMPLES["identify_person"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/api/v1/customers/5", None, 404, "route.method"),
        ("PUT", "/api/v1/people/5", {}, 404, "route.unknown"),
        ("POST", "/api/v1/merge_customers", {}, 404, "route.unserved"),
        ("PUT", "/api/v1/customers/a b", {}, 400, "path.id_encoding"),
        ("PUT", "/api/v1/customers/%zz", {}, 400, "path.id_encoding"),
        ("PUT", "/api/v1/customers/%C3", {}, 400, "path.id_encoding"),
        ("PUT", "/api/v1/customers/%2E%2E", {}, 400, "path.id_dot_segment"),
        ("PUT", "/api/v1/customers/" + "i" * 151, {}, 400, "limit.id_bytes"),
        ("PUT", "/api/v1/customers/" + "%C3%A9" * 76, {}, 400, "limit.id_bytes"),
        ("PUT", "/api/v1/customers/5", ["a"], 400, "schema.type"),
        ("PUT", "/api/v1/customers/5", {"email": "not-an-email"}, 400, "format.email"),
        ("PUT", "/api/v1/customers/5", {"created_at": 1.5}, 400, "schema.type"),
        ("PUT", "/api/v1/customers/5", {"created_at": "1361205308"}, 400, "schema.type"),
        ("PUT", "/api/v1/customers/5", {"created_at": 1361205308000}, 400, "format.unix_seconds"),
        ("PUT", "/api/v1/customers/5", {"_update": "yes"}, 400, "schema.type"),
        ("PUT", "/api/v1/customers/5", {"a": "x" * 1001}, 400, "limit.attribute_value_bytes"),
        ("PUT", "/api/v1/customers/5", {"n" * 151: 1}, 400, "limit.attribute_name_bytes"),
        (
            "PUT",
            "/api/v1/customers/5",
            {f"a{i}": 1 for i in range(301)},
            400,
            "limit.attribute_count",
        ),
        ("POST", "/api/v1/customers/5/events", {"data": {}}, 400, "schema.required"),
        ("POST", "/api/v1/customers/5/events", with_(EVENT, name=5), 400, "schema.type"),
        ("POST", "/api/v1/customers/5/events", with_(EVENT, timestamp=None), 400, "schema.type"),
        (
            "POST",
            "/api/v1/customers/5/events",
            with_(EVENT, timestamp=1700000000000),
            400,
            "format.unix_seconds",
        ),
        (
            "POST",
            "/api/v1/customers/5/events",
            with_(EVENT, timestamp=-1),
            400,
            "format.unix_seconds",
        ),
        ("POST", "/api/v1/customers/5/events", with_(EVENT, id="evt-1"), 400, "format.ulid"),
        ("POST", "/api/v1/customers/5/events", with_(EVENT, data=[1]), 400, "schema.type"),
        ("POST", "/api/v1/customers/5/events", with_(EVENT, type="click"), 400, "schema.enum"),
        (
            "POST",
            "/api/v1/customers/5/events",
            with_(EVENT, name="n" * 101),
            400,
            "limit.event_name_bytes",
        ),
        (
            "POST",
            "/api/v1/customers/5/events",
            with_(EVENT, data={"b": "x" * 100_000}),
            400,
            "limit.event_data_bytes",
        ),
        ("POST", "/api/v2/entity", with_(V2_EVENT, id="evt-1"), 400, "format.ulid"),
        ("POST", "/api/v2/entity", with_(V2_EVENT, timestamp=None), 400, "schema.type"),
        ("POST", "/api/v2/entity", with_(V2_EVENT, timestamp=1.7e12), 400, "format.unix_seconds"),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_EVENT, attributes={"recipient": "x"}),
            400,
            "format.email",
        ),
        (
            "POST",
            "/api/v2/entity",
            {k: v for k, v in V2_EVENT.items() if k != "name"},
            400,
            "schema.required",
        ),
        ("POST", "/api/v2/entity", with_(V2_EVENT, action="explode"), 400, "schema.enum"),
        ("POST", "/api/v2/entity", with_(V2_EVENT, type="people"), 400, "schema.enum"),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_EVENT, identifiers={"id": "4", "email": "a@b.co"}),
            400,
            "schema.oneOf",
        ),
        ("POST", "/api/v2/entity", with_(V2_EVENT, identifiers={}), 400, "schema.oneOf"),
        ("POST", "/api/v2/entity", with_(V2_EVENT, identifiers={"id": 42}), 400, "schema.type"),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_EVENT, identifiers={"id": ""}),
            400,
            "identifier.empty",
        ),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_EVENT, identifiers={"id": "i" * 151}),
            400,
            "limit.id_bytes",
        ),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_IDENTIFY, attributes={"created_at": "2024"}),
            400,
            "schema.type",
        ),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_IDENTIFY, attributes={"a": "x" * 1001}),
            400,
            "limit.attribute_value_bytes",
        ),
        (
            "POST",
            "/api/v2/entity",
            with_(V2_IDENTIFY, attributes={"a": "x" * 33_000}),
            400,
            "limit.entity_bytes",
        ),
        ("POST", "/api/v2/entity", with_(V2_IDENTIFY, action="merge"), 400, "schema.required"),
        ("POST", "/api/v2/batch", {"batch": []}, 400, "schema.minItems"),
        ("POST", "/api/v2/batch", {"ops": [V2_IDENTIFY]}, 400, "schema.required"),
        ("POST", "/api/v2/batch", {"batch": V2_IDENTIFY}, 400, "schema.type"),
    ],
)
def test_one_break_is_refused_with_its_code(
    method: str, path: str, body: Any, status: int, code: str
) -> None:
    checked = check(method, path, body)
    assert (checked.status, set(checked.codes())) == (status, {code})


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"content-type": "application/json"}, "auth.missing"),
        ({**JSON_HEADERS, "authorization": "Bearer abc"}, "auth.malformed"),
        ({**JSON_HEADERS, "authorization": "Basic !!!"}, "auth.malformed"),
        (
            {**JSON_HEADERS, "authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
            "auth.malformed",
        ),
    ],
)
def test_authorization_must_be_basic(headers: dict[str, str], code: str) -> None:
    checked = check("PUT", "/api/v1/customers/5", {"a": 1}, headers=headers)
    assert (checked.status, checked.codes()) == (401, [code])


@pytest.mark.parametrize(
    ("raw", "headers", "code"),
    [
        (b'{"a": 1}', {"authorization": AUTH, "content-type": "text/plain"}, "body.content_type"),
        (b'{"a": 1}', {"authorization": AUTH}, "body.content_type"),
        (b"{not json", JSON_HEADERS, "body.json"),
        (b'{"a": NaN}', JSON_HEADERS, "body.json"),
        (b'{"a": "\xff"}', JSON_HEADERS, "body.json"),
        (b"", JSON_HEADERS, "body.json"),
        (b'{"a": 1, "a": 2}', JSON_HEADERS, "body.duplicate_key"),
    ],
)
def test_the_body_must_be_strict_json(raw: bytes, headers: dict[str, str], code: str) -> None:
    checked = check("PUT", "/api/v1/customers/5", raw=raw, headers=headers)
    assert (checked.status, checked.codes()) == (400, [code])


def test_a_query_string_is_refused() -> None:
    checked = check("PUT", "/api/v1/customers/5", {"a": 1}, query=b"debug=1")
    assert checked.codes() == ["query.unknown"]


def test_charset_parameter_is_fine() -> None:
    headers = {**JSON_HEADERS, "content-type": "application/json; charset=utf-8"}
    assert check("PUT", "/api/v1/customers/5", {"a": 1}, headers=headers).codes() == []


# -- limits on the bytes received ---------------------------------------------------------------


def test_attribute_value_is_measured_as_sent_not_as_decoded() -> None:
    """500 "é" are 1,000 bytes as UTF-8 but 3,000 as ``\\u00e9`` escapes (``requests``' way)."""
    body = {"city": "é" * 500}
    compact = dumps(body, ensure_ascii=False, separators=(",", ":"))
    assert check("PUT", "/api/v1/customers/5", raw=compact).codes() == []
    escaped = dumps(body)
    assert check("PUT", "/api/v1/customers/5", raw=escaped).codes() == [
        "limit.attribute_value_bytes"
    ]


def _batch_of(size: int, *, separators: tuple[str, str] | None = None) -> bytes:
    op = with_(V2_IDENTIFY, attributes={"bio": "x" * 900})
    body = {"batch": [op] * size}
    return dumps(body, separators=separators)


def test_batch_limit_is_on_the_body_as_sent() -> None:
    size = next(n for n in range(400, 600) if len(_batch_of(n)) > 500_000)
    compact = _batch_of(size, separators=(",", ":"))
    spaced = _batch_of(size)
    assert len(compact) <= 500_000 < len(spaced)
    assert check("POST", "/api/v2/batch", raw=compact).codes() == []
    assert check("POST", "/api/v2/batch", raw=spaced).codes() == ["limit.batch_bytes"]


def test_operation_limit_is_per_item_as_sent() -> None:
    big = with_(V2_EVENT, attributes={f"k{i}": "é" * 300 for i in range(20)})
    body = {"batch": [V2_IDENTIFY, big]}
    assert check("POST", "/api/v2/batch", raw=dumps(body, ensure_ascii=False)).codes() == []
    checked = check("POST", "/api/v2/batch", raw=dumps(body))
    assert checked.violations == []
    assert {i: [v.reason for v in vs] for i, vs in checked.op_violations.items()} == {
        1: ["limit.operation_bytes"]
    }


def test_limits_at_the_boundary_pass() -> None:
    body = {"n" * 150: "v" * 1000, **{f"a{i}": i for i in range(299)}}
    assert check("PUT", "/api/v1/customers/" + "i" * 150, body).codes() == []
    event = with_(EVENT, name="n" * 100, data={"b": "x" * (100_000 - 9)})
    assert len(json.dumps(event["data"])) == 100_000
    assert check("POST", "/api/v1/customers/5/events", event).codes() == []


# -- codes and messages ------------------------------------------------------------------------


def test_messages_never_carry_the_value() -> None:
    bodies = [
        ("PUT", "/api/v1/customers/5", {"email": CANARY, "created_at": CANARY}),
        ("POST", "/api/v1/customers/5/events", {"name": CANARY * 10, "id": CANARY}),
        ("POST", "/api/v2/entity", with_(V2_EVENT, identifiers={"id": CANARY * 10}, id=CANARY)),
        ("POST", "/api/v2/batch", {"batch": [with_(V2_EVENT, type=CANARY)]}),
    ]
    for method, path, body in bodies:
        checked = check(method, path, body)
        assert checked.codes()
        violations = checked.violations + [v for vs in checked.op_violations.values() for v in vs]
        assert CANARY not in json.dumps([v.message + v.field for v in violations])


def test_every_code_is_documented() -> None:
    documented = set(conformance.CODES)
    schema_keywords = {"type", "required", "enum", "oneOf", "minItems", "const", "anyOf"}
    documented |= {f"schema.{keyword}" for keyword in schema_keywords}
    seen = {
        "route.unknown",
        "route.method",
        "route.unserved",
        "path.id_encoding",
        "path.id_dot_segment",
        "query.unknown",
        "auth.missing",
        "auth.malformed",
        "body.content_type",
        "body.json",
        "body.duplicate_key",
        "format.ulid",
        "format.unix_seconds",
        "format.email",
        "identifier.empty",
        "limit.id_bytes",
        "limit.attribute_name_bytes",
        "limit.attribute_value_bytes",
        "limit.attribute_count",
        "limit.event_name_bytes",
        "limit.event_data_bytes",
        "limit.entity_bytes",
        "limit.batch_bytes",
        "limit.operation_bytes",
        "sandbox.unserved_action",
    }
    assert seen <= documented
