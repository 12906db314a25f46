"""Customer.io's Track API OpenAPI 3.1 document, loaded once and turned into JSON Schema checks.

Why ``jsonschema`` (with ``referencing``) and not ``openapi-core``: OpenAPI 3.1 bodies are JSON
Schema 2020-12, which ``jsonschema`` implements fully and which is all the sandbox needs from the
document; the rest of what it checks (limits on received bytes, the per-operation schema a v2
item's ``type``/``action`` selects, percent-encoded path ids) is outside what ``openapi-core``
validates, and ``openapi-core`` would refuse every path id, because the spec's ``{identifier}``
is a ``oneOf`` of three plain strings that no string satisfies exactly once.

The document is kept verbatim (:mod:`cioguard.sandbox.spec`); :data:`AMENDMENTS` changes it in
memory where the spec is narrower than Customer.io's docs, or silent where the docs are not,
each with its reason. Messages built here name the field and the rule, never the value.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import jsonschema
from email_validator import EmailNotValidError, validate_email
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from ulid import ULID

from cioguard.sandbox import spec as spec_package

SPEC_URI = "urn:customerio:journeys-track"

UNIX_SECONDS_MAX = 10_000_000_000
"""Seconds before year 2286: a larger "Unix timestamp" is milliseconds (or microseconds)."""

Json = dict[str, Any]


def _v1_identify_body(doc: Json) -> Json:
    path = doc["paths"]["/api/v1/customers/{identifier}"]["put"]
    schema: Json = path["requestBody"]["content"]["application/json"]["schema"]
    return schema


def _amend(doc: Json) -> None:
    """Apply :data:`AMENDMENTS` to a private copy of the document."""
    schemas = doc["components"]["schemas"]
    unix_seconds = {"type": "integer", "format": "unix timestamp"}
    identify = _v1_identify_body(doc)
    # The spec lists string/integer/boolean attribute values; Customer.io's docs
    # (journeys/attributes, json-in-segments) accept numbers and nested JSON, and the official
    # libraries send them: follow the docs, any JSON value.
    identify["additionalProperties"] = {}
    # Documented as Unix timestamps ("The Unix timestamp when the user was created"): the spec
    # types them integer only; seconds, not milliseconds, as every other timestamp of the API.
    identify["properties"]["created_at"] = dict(unix_seconds)
    identify["properties"]["_timestamp"] = dict(unix_seconds)
    schemas["x-sandbox-v1-identify"] = identify
    person_event = schemas["person_event"]["allOf"][1]["properties"]
    person_event["timestamp"] = dict(unix_seconds)
    person_identify = schemas["identify_person"]["allOf"][1]["properties"]
    person_identify["timestamp"] = dict(unix_seconds)
    # v2 identify attributes are free-form in the spec; created_at is the same reserved
    # attribute as in v1 ("The Unix timestamp when the user was created").
    person_identify["attributes"].setdefault("properties", {})["created_at"] = dict(unix_seconds)
    # The spec neither requires ``batch`` nor forbids an empty one; Customer.io answers 400 to a
    # request with nothing to do. Items are checked one by one (a bad one is a 207, not a 400).
    batch = doc["paths"]["/api/v2/batch"]["post"]["requestBody"]["content"]["application/json"]
    envelope = copy.deepcopy(batch["schema"])
    envelope.pop("example", None)
    envelope["required"] = ["batch"]
    envelope["properties"]["batch"] = {"type": "array", "minItems": 1}
    schemas["x-sandbox-batch-envelope"] = envelope


AMENDMENTS = (
    "v1 identify: attribute values may be any JSON value (the docs; the spec lists three types)",
    "v1 identify created_at/_timestamp, v2 identify created_at/timestamp, v2 event timestamp: "
    "Unix seconds (documented as Unix timestamps; the spec types them integer only)",
    "path {identifier}: any non-empty percent-encoded string (the spec's oneOf of three strings "
    "matches no string exactly once)",
    "v2 batch: `batch` required and non-empty; items checked one by one against the schema "
    "their type/action selects",
)
"""What :func:`_amend` changes, for the docs and the report."""


def _format_checker() -> jsonschema.FormatChecker:
    """The spec's formats. Unknown formats are ignored, as JSON Schema says."""
    checker = jsonschema.FormatChecker(formats=())

    def is_ulid(value: object) -> bool:
        if isinstance(value, str):
            ULID.from_str(value)
        return True

    def is_unix_seconds(value: object) -> bool:
        # JSON Schema counts 1.7e9 as an integer; the range applies to it too.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return 0 <= value < UNIX_SECONDS_MAX
        return True

    def is_email(value: object) -> bool:
        if isinstance(value, str):
            validate_email(value, check_deliverability=False, test_environment=True)
        return True

    for name in ("ulid", "ULID"):
        checker.checks(name, raises=ValueError)(is_ulid)
    for name in ("unix timestamp", "Unix timestamp"):
        checker.checks(name)(is_unix_seconds)
    checker.checks("email", raises=EmailNotValidError)(is_email)
    return checker


FORMAT_CODES = {
    "ulid": "format.ulid",
    "unix timestamp": "format.unix_seconds",
    "email": "format.email",
}


@dataclass(frozen=True)
class Issue:
    """One schema violation: a short code, the field's dotted path, a message without values."""

    code: str
    field: str
    message: str


def _field(error: ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


def _issue(error: ValidationError) -> Issue:
    """Translate a ``jsonschema`` error without its message (which quotes the instance)."""
    keyword, rule = str(error.validator), cast(Any, error.validator_value)
    field = _field(error)
    where = field or "the body"
    if keyword == "format":
        code = FORMAT_CODES.get(str(rule).lower(), f"format.{rule}")
        if code == "format.unix_seconds":
            return Issue(code, field, f"{where} must be a Unix timestamp in whole seconds")
        return Issue(code, field, f"{where} is not a valid {rule}")
    if keyword == "required" and isinstance(error.instance, dict):
        missing = [str(name) for name in rule if name not in error.instance]
        return Issue("schema.required", field, f"{where} lacks {', '.join(missing)}")
    if keyword == "type":
        return Issue("schema.type", field, f"{where} must be of type {rule}")
    if keyword in ("enum", "const"):
        return Issue(f"schema.{keyword}", field, f"{where} must be one of {json.dumps(rule)}")
    if keyword in ("oneOf", "anyOf"):
        return Issue(f"schema.{keyword}", field, f"{where} matches none or several shapes")
    return Issue(f"schema.{keyword}", field, f"{where} violates {keyword} {json.dumps(rule)}")


class Spec:
    """The amended document, its validators, its routes and the v2 operation schemas."""

    def __init__(self, document: Json) -> None:
        doc = copy.deepcopy(document)
        _amend(doc)
        self.document = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._checker = _format_checker()
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self.operations = _operation_schemas(doc)

    def routes(self) -> Iterator[tuple[str, str, str]]:
        """``(METHOD, path template, operationId)`` for every operation of the document."""
        for path, item in self.document["paths"].items():
            for method, op in item.items():
                if method in {"get", "put", "post", "delete", "patch"}:
                    yield method.upper(), path, str(op.get("operationId", ""))

    def _validator(self, pointer: str) -> jsonschema.protocols.Validator:
        if pointer not in self._validators:
            schema = {"$ref": f"{SPEC_URI}#/components/schemas/{pointer}"}
            self._validators[pointer] = jsonschema.Draft202012Validator(
                schema, registry=self._registry, format_checker=self._checker
            )
        return self._validators[pointer]

    def issues(self, pointer: str, instance: Any) -> list[Issue]:
        """Every violation of ``components/schemas/{pointer}`` by ``instance``."""
        errors = self._validator(pointer).iter_errors(instance)
        return [_issue(best_match([error])) for error in errors]

    def event_issues(self, instance: Any) -> list[Issue]:
        """A v1 event body checked against the ``eventsRequest`` variant its ``type`` selects.

        The spec's ``oneOf`` (standard event, page view, screen view) only says "none matched";
        choosing the variant as Customer.io does (by ``type``, absent meaning an event) gives the
        error of the field at fault.
        """
        if not isinstance(instance, dict):
            return [Issue("schema.type", "", "the body must be of type object")]
        kind = instance.get("type", "event")
        variants = self.document["components"]["schemas"]["eventsRequest"]["oneOf"]
        for index, variant in enumerate(variants):
            if kind in variant["properties"]["type"]["enum"]:
                return self.issues(f"eventsRequest/oneOf/{index}", instance)
        return [Issue("schema.enum", "type", 'type must be one of ["event", "page", "screen"]')]

    def operation_issues(self, instance: Any) -> list[Issue]:
        """A v2 operation checked against the schema its ``type`` and ``action`` select."""
        if not isinstance(instance, dict):
            return [Issue("schema.type", "", "the operation must be of type object")]
        kind, action = instance.get("type"), instance.get("action")
        actions = self.operations.get(kind) if isinstance(kind, str) else None
        if actions is None:
            allowed = json.dumps(sorted(self.operations))
            return [Issue("schema.enum", "type", f"type must be one of {allowed}")]
        components = actions.get(action) if isinstance(action, str) else None
        if components is None:
            allowed = json.dumps(sorted(actions))
            return [Issue("schema.enum", "action", f"action must be one of {allowed}")]
        found = [self.issues(component, instance) for component in components]
        return [] if any(not issues for issues in found) else found[0]


def _resolve(doc: Json, schema: Json) -> Json:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return _resolve(doc, doc["components"]["schemas"][ref.rsplit("/", 1)[1]])
    return schema


def _enum(doc: Json, schema: Json, prop: str) -> list[str]:
    """The ``enum`` of property ``prop`` of ``schema``, looking through ``$ref`` and ``allOf``."""
    schema = _resolve(doc, schema)
    found = schema.get("properties", {}).get(prop, {}).get("enum")
    if found:
        return [str(value) for value in found]
    for part in schema.get("allOf", []):
        found = _enum(doc, part, prop)
        if found:
            return list(found)
    return []


def _operation_schemas(doc: Json) -> dict[str, dict[str, list[str]]]:
    """``{type: {action: [component, ...]}}`` read from the batch item's ``anyOf`` tree."""
    body = doc["paths"]["/api/v2/batch"]["post"]["requestBody"]["content"]["application/json"]
    items = copy.deepcopy(body["schema"]["properties"]["batch"]["items"])

    def refs(node: Json) -> Iterator[str]:
        if "$ref" in node:
            yield str(node["$ref"]).rsplit("/", 1)[1]
        for part in node.get("anyOf", []):
            yield from refs(part)

    table: dict[str, dict[str, list[str]]] = {}
    for component in refs(items):
        schema = doc["components"]["schemas"][component]
        for kind in _enum(doc, schema, "type"):
            for action in _enum(doc, schema, "action"):
                table.setdefault(kind, {}).setdefault(action, []).append(component)
    return table


@cache
def load() -> Spec:
    """The packaged spec, parsed and amended once per process."""
    text = resources.files(spec_package).joinpath(spec_package.SPEC_FILE).read_text("utf-8")
    return Spec(json.loads(text))
