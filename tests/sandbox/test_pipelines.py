"""The sandbox's Pipelines API, in process: auth, spec validation on the bytes received, the
documented limits (200 and dropped), strict mode, semantic events, faults and shared views."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cioguard.delivery.customerio import dumps
from cioguard.sandbox.pipelines import DEFAULT_PIPELINES_API_KEY
from cioguard.sandbox.pipelines_spec import (
    BATCH_MAX_BYTES,
    CALL_MAX_BYTES,
    REQUEST_MAX_BYTES,
    batch_call_sizes,
    check,
)
from cioguard.sandbox.routes import build_app
from cioguard.sandbox.state import FaultConfig, SandboxState

TS = "2026-12-03T00:00:00.000Z"
STRICT = {"X-Strict-Mode": "1", "Content-Type": "application/json"}


def auth(key: str = DEFAULT_PIPELINES_API_KEY, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{key}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def state() -> SandboxState:
    return SandboxState([("site", "key")], FaultConfig())


@pytest.fixture
def http(state: SandboxState) -> Iterator[TestClient]:
    with TestClient(build_app(state)) as client:
        yield client


def post(http: TestClient, endpoint: str, body: bytes, *, strict: bool = True) -> Any:
    headers = {**auth(), **(STRICT if strict else {"Content-Type": "application/json"})}
    return http.post(f"/v1/{endpoint}", content=body, headers=headers)


def identify(person: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": person, "traits": traits, "messageId": "m-" + person}


def event(person: str, name: str = "signed_up", message_id: str = "e1") -> dict[str, Any]:
    return {"type": "track", "userId": person, "event": name, "properties": {"a": 1},
            "messageId": message_id, "timestamp": TS}  # fmt: skip


def stats(http: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = http.get("/_sandbox/pipelines/stats").json()
    return result


def test_identify_track_and_semantic_events_change_the_shared_views(http: TestClient) -> None:
    assert post(http, "identify", dumps(identify("p1", plan="pro"))).status_code == 200
    assert post(http, "track", dumps(event("p1"))).status_code == 200
    assert post(http, "track", dumps(event("p1"))).status_code == 200  # same messageId
    assert http.get("/_sandbox/people/p1").json() == {"plan": "pro"}
    [stored] = http.get("/_sandbox/events", params={"person": "p1"}).json()
    assert stored["name"] == "signed_up" and stored["id"] == "e1"
    assert http.get("/_sandbox/stats").json()["duplicate_events"] == 1

    gone = {"type": "track", "userId": "p1", "event": "User Suppressed", "messageId": "x"}
    assert post(http, "track", dumps(gone)).status_code == 200
    assert http.get("/_sandbox/people/p1").status_code == 404
    assert http.get("/_sandbox/stats").json()["suppressed"] == 1
    assert stats(http)["spec_violations"] == 0


def test_a_batch_is_applied_whole(http: TestClient) -> None:
    deleted = {"type": "track", "userId": "p3", "event": "User Deleted", "messageId": "d"}
    calls = [identify("p2", plan="x"), event("p2", message_id="e2"), deleted]
    assert post(http, "batch", dumps({"batch": calls})).status_code == 200
    assert http.get("/_sandbox/people/p2").json() == {"plan": "x"}
    assert http.get("/_sandbox/stats").json()["deleted"] == 1
    assert stats(http)["calls_applied"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"type": "identify", "traits": {"a": 1}},  # no userId nor anonymousId
        {"type": "track", "userId": "p", "event": 5},  # event must be a string
        {"type": "track", "userId": "p", "event": "e", "timestamp": "yesterday"},
        {"type": "track", "userId": "p", "event": "e", "timestamp": "2026-12-03T00:00:00"},
    ],
    ids=["no-user", "event-not-string", "timestamp-not-iso", "timestamp-without-zone"],
)
def test_strict_mode_refuses_an_invalid_call_with_400(http: TestClient, body: Any) -> None:
    endpoint = body["type"] if body["type"] == "identify" else "track"
    answer = post(http, endpoint, dumps(body))
    assert answer.status_code == 400
    assert stats(http)["spec_violations"] == 1
    assert http.get("/_sandbox/stats").json()["people"] == 0


def test_without_strict_mode_an_invalid_call_is_200_and_dropped(http: TestClient) -> None:
    answer = post(http, "identify", dumps({"type": "identify", "traits": {}}), strict=False)
    assert answer.status_code == 200
    counters = stats(http)
    assert counters["dropped"] == 1 and counters["lenient_requests"] == 1


def test_a_semantic_event_is_checked_against_its_own_schema(http: TestClient) -> None:
    # valid as a custom event (anonymousId), not as "User Deleted" (which needs a userId)
    body = {"type": "track", "anonymousId": "a", "event": "User Deleted"}
    assert post(http, "track", dumps(body)).status_code == 400
    assert stats(http)["violations_by_rule"] == {"schema:delete_person": 1}


def padded(person: str, size: int) -> bytes:
    """An identify call of exactly ``size`` bytes as compact UTF-8 (multi-byte padding)."""
    base = dumps(identify(person, pad=""))
    fill = size - len(base)
    pad = "é" * (fill // 2) + "x" * (fill % 2)
    body = dumps(identify(person, pad=pad))
    assert len(body) == size
    return body


def test_a_request_at_the_limit_passes_and_one_byte_over_is_200_and_dropped(
    http: TestClient,
) -> None:
    assert post(http, "identify", padded("edge", REQUEST_MAX_BYTES)).status_code == 200
    assert http.get("/_sandbox/people/edge").status_code == 200
    assert post(http, "identify", padded("over", REQUEST_MAX_BYTES + 1)).status_code == 200
    assert http.get("/_sandbox/people/over").status_code == 404
    assert stats(http)["violations_by_rule"] == {"limit": 1}


def test_a_call_in_a_batch_over_its_limit_drops_the_batch(http: TestClient) -> None:
    ok = dumps({"batch": [json.loads(padded("c1", CALL_MAX_BYTES))]})
    assert post(http, "batch", ok).status_code == 200
    over = b'{"batch":[' + padded("c2", CALL_MAX_BYTES + 1) + b"]}"
    assert post(http, "batch", over).status_code == 200
    assert http.get("/_sandbox/people/c2").status_code == 404
    received = http.get("/_sandbox/pipelines/received").json()
    assert [r["call_bytes"] for r in received] == [[CALL_MAX_BYTES], [CALL_MAX_BYTES + 1]]


def test_a_batch_over_500000_bytes_is_dropped(http: TestClient) -> None:
    calls = [padded(f"b{i}", 25_000) for i in range(20)]
    body = b'{"batch":[' + b",".join(calls) + b"]}"
    assert len(body) > BATCH_MAX_BYTES
    assert post(http, "batch", body).status_code == 200
    assert http.get("/_sandbox/stats").json()["people"] == 0
    assert stats(http)["violations_by_rule"] == {"limit": 1}


def test_call_sizes_are_the_spans_received() -> None:
    text = '{ "x": [1,{"batch":[]}], "batch" : [ {"a": "é"} , 7,"s" ] }'
    assert batch_call_sizes(text) == [len('{"a": "é"}'.encode()), 1, 3]
    assert check("batch", b'{"batch":[]}')[1] == []


def test_auth_needs_a_known_key_and_an_empty_password(http: TestClient) -> None:
    body = dumps(identify("p"))
    for headers in (auth("wrong"), auth(password="x"), {}):
        assert (
            http.post("/v1/identify", content=body, headers={**STRICT, **headers}).status_code
            == 401
        )
    http.post("/_sandbox/pipelines/credentials", json={"keys": ["rotated"]})
    assert (
        http.post("/v1/identify", content=body, headers={**STRICT, **auth("rotated")}).status_code
        == 200
    )


def test_faults_apply_to_the_pipelines_routes(http: TestClient, state: SandboxState) -> None:
    state.configure({"fail_5xx_ratio": 1.0})
    assert post(http, "identify", dumps(identify("p"))).status_code in (500, 502, 503)
    state.configure({"fail_5xx_ratio": 0.0, "fail_429_ratio": 1.0})
    assert post(http, "identify", dumps(identify("p"))).status_code == 429
    state.configure({"fail_429_ratio": 0.0, "reject_id_prefix": "bad-"})
    batch = dumps({"batch": [identify("ok"), identify("bad-1")]})
    assert post(http, "batch", batch).status_code == 400  # no per-call results: refused whole
    assert http.get("/_sandbox/people/ok").status_code == 404
    counts = http.get("/_sandbox/stats").json()
    assert counts["injected_5xx"] == 1 and counts["injected_429"] == 1
    assert counts["by_endpoint"]["pipelines identify"]
