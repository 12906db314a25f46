"""The Track API sandbox, exercised as clients see it: a real subprocess, real TLS requests.

One sandbox process serves the module; an autouse fixture resets its data, faults and
credentials before every test, so tests stay independent without paying a start-up each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from customerio import CustomerIO, CustomerIOException
from ulid import ULID

from cioguard.sandbox.client import FAULT_FLAGS, SandboxServer, SandboxStartError
from cioguard.sandbox.routes import basic_credentials, match_route
from cioguard.sandbox.state import FaultConfig, TokenBucket

SITE, KEY = "site-test", "key-test"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(site_id=SITE, api_key=KEY, seed=7) as server:
        yield server


@pytest.fixture(scope="module")
def http(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with sandbox.client(timeout=10.0) as client:
        yield client


@pytest.fixture(autouse=True)
def clean(sandbox: SandboxServer) -> None:
    sandbox.control.configure(**FaultConfig().as_dict())
    sandbox.control.set_credentials([(SITE, KEY)])
    sandbox.control.reset()


def eid(label: str) -> str:
    """A deterministic ULID (the spec's format for event ids) named by ``label``."""
    return str(ULID.from_bytes(hashlib.sha256(label.encode()).digest()[:16]))


def identify(http: httpx.Client, person: str, **attributes: Any) -> httpx.Response:
    return http.put(f"/api/v1/customers/{person}", json=attributes)


def event(
    http: httpx.Client, person: str, name: str, timeout: float = 10.0, **extra: Any
) -> httpx.Response:
    body = {"name": name, **extra}
    return http.post(f"/api/v1/customers/{person}/events", json=body, timeout=timeout)


def batch(http: httpx.Client, ops: list[dict[str, Any]]) -> httpx.Response:
    return http.post("/api/v2/batch", json={"batch": ops})


def op(person: str, action: str, **fields: Any) -> dict[str, Any]:
    return {"type": "person", "identifiers": {"id": person}, "action": action, **fields}


# -- auth and region -------------------------------------------------------------------------


def test_region_answers_with_good_credentials(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = http.get("/api/v1/accounts/region")
    assert response.status_code == 200
    assert response.json() == {"url": sandbox.url, "region": "us", "environment_id": 1}


@pytest.mark.parametrize("auth", [(SITE, "wrong"), ("other", KEY), None])
def test_bad_or_missing_auth_is_401_and_counted(
    sandbox: SandboxServer, auth: tuple[str, str] | None
) -> None:
    with httpx.Client(base_url=sandbox.url, verify=sandbox.ssl_context(), auth=auth) as client:
        response = identify(client, "p1", email="a@example.com")
    assert response.status_code == 401
    assert response.json() == {"meta": {"error": "Unauthorized request"}}
    assert sandbox.control.person("p1") is None
    assert sandbox.control.stats()["unauthorized"] == 1


def test_credentials_swap_at_runtime(sandbox: SandboxServer, http: httpx.Client) -> None:
    sandbox.control.set_credentials([("site-2", "key-2")])
    assert http.get("/api/v1/accounts/region").status_code == 401
    with sandbox.client(auth=("site-2", "key-2")) as rotated:
        assert rotated.get("/api/v1/accounts/region").status_code == 200


# -- v1 person endpoints ---------------------------------------------------------------------


def test_identify_merges_attributes(sandbox: SandboxServer, http: httpx.Client) -> None:
    assert identify(http, "p1", email="a@example.com", plan="free").status_code == 200
    assert identify(http, "p1", plan="pro", nickname="").status_code == 200
    assert sandbox.control.person("p1") == {"email": "a@example.com", "plan": "pro"}
    assert sandbox.control.stats()["people"] == 1


def test_path_ids_are_percent_decoded(sandbox: SandboxServer, http: httpx.Client) -> None:
    assert identify(http, "a%2Fb%40example.com", x=1).status_code == 200
    assert sandbox.control.person("a/b@example.com") == {"x": 1}


def test_events_are_stored_and_deduplicated_by_id(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    first = event(
        http, "p1", "purchase", data={"total": 3}, id=eid("01J0EVENT"), timestamp=1700000000
    )
    again = event(http, "p1", "purchase", data={"total": 3}, id=eid("01J0EVENT"))
    without_id = event(http, "p1", "viewed")
    assert [first.status_code, again.status_code, without_id.status_code] == [200, 200, 200]
    stored = sandbox.control.events("p1")
    assert [(e["name"], e["id"], e["data"]) for e in stored] == [
        ("purchase", eid("01J0EVENT"), {"total": 3}),
        ("viewed", None, {}),
    ]
    stats = sandbox.control.stats()
    assert (stats["events_unique"], stats["duplicate_events"]) == (2, 1)


def test_event_ids_outlive_the_deletion_of_their_person(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    event(http, "p1", "purchase", id=eid("01J0KEPT"))
    event(http, "p2", "purchase", id=eid("01J0GONE"))
    assert http.delete("/api/v1/customers/p2").status_code == 200
    assert sandbox.control.events("p2") == []
    assert sandbox.control.event_ids() == {eid("01J0KEPT"), eid("01J0GONE")}


def test_delete_removes_person_and_is_200_when_absent(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    identify(http, "p1", email="a@example.com")
    assert http.delete("/api/v1/customers/p1").status_code == 200
    assert http.delete("/api/v1/customers/never-seen").status_code == 200
    assert sandbox.control.person("p1") is None
    assert sandbox.control.stats()["deleted"] == 2


def test_suppressed_ids_are_accepted_but_ignored(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    identify(http, "p1", email="a@example.com")
    assert http.post("/api/v1/customers/p1/suppress").status_code == 200
    assert identify(http, "p1", email="b@example.com").status_code == 200
    assert event(http, "p1", "purchase", id=eid("e1")).status_code == 200
    assert sandbox.control.person("p1") is None
    assert sandbox.control.events("p1") == []
    stats = sandbox.control.stats()
    assert (stats["suppressed"], stats["ignored_suppressed"], stats["people"]) == (1, 2, 0)
    assert http.post("/api/v1/customers/p1/unsuppress").status_code == 200
    identify(http, "p1", email="c@example.com")
    assert sandbox.control.person("p1") == {"email": "c@example.com"}


BIG = "x" * 1001


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/customers/" + "i" * 151, {"a": 1}),
        ("/api/v1/customers/p1", {"a": BIG}),
        ("/api/v1/customers/p1", {f"a{i}": i for i in range(301)}),
        ("/api/v1/customers/p1", ["not", "an", "object"]),
        ("/api/v1/customers/p1/events", {"name": "n" * 101}),
        ("/api/v1/customers/p1/events", {"name": "big", "data": {"blob": "x" * 100_001}}),
        ("/api/v1/customers/p1/events", {"data": {}}),
    ],
    ids=["id", "attr-value", "attr-count", "not-object", "event-name", "event-data", "no-name"],
)
def test_limit_violations_are_400(
    sandbox: SandboxServer, http: httpx.Client, path: str, body: Any
) -> None:
    method = "POST" if path.endswith("/events") else "PUT"
    response = http.request(method, path, json=body)
    assert response.status_code == 400
    assert response.json()["meta"]["errors"]
    assert sandbox.control.stats()["spec_violations"] >= 1
    assert sandbox.control.stats()["people"] == 0
    assert sandbox.control.events() == []


def test_invalid_json_is_400(http: httpx.Client) -> None:
    response = http.put("/api/v1/customers/p1", content=b"{not json")
    assert response.status_code == 400


def test_poisoned_prefix_is_400(sandbox: SandboxServer, http: httpx.Client) -> None:
    sandbox.control.configure(reject_id_prefix="poison-")
    assert identify(http, "poison-1", a=1).status_code == 400
    assert identify(http, "fine-1", a=1).status_code == 200


# -- v2 batch --------------------------------------------------------------------------------


def test_batch_applies_every_op(sandbox: SandboxServer, http: httpx.Client) -> None:
    ops = [
        op("p1", "identify", attributes={"email": "a@example.com"}),
        op("p1", "event", name="purchase", id=eid("b1"), attributes={"total": 5}),
        op("p2", "identify", attributes={"plan": "pro"}),
        op("p2", "delete"),
        op("p3", "suppress"),
    ]
    response = batch(http, ops)
    assert (response.status_code, response.json()) == (200, {})
    assert sandbox.control.person("p1") == {"email": "a@example.com"}
    assert sandbox.control.events("p1")[0]["data"] == {"total": 5}
    assert sandbox.control.person("p2") is None
    stats = sandbox.control.stats()
    assert (stats["suppressed"], stats["batch_ops_applied"]) == (1, 5)


def test_batch_207_names_each_invalid_op(sandbox: SandboxServer, http: httpx.Client) -> None:
    sandbox.control.configure(reject_id_prefix="poison-")
    ops = [
        op("p1", "identify", attributes={"a": 1}),
        {"type": "person", "action": "identify", "attributes": {"a": 1}},
        {"type": "person", "identifiers": {"id": "p2", "email": "x@y"}, "action": "identify"},
        op("p3", "explode"),
        op("p4", "event", name="ok", id=eid("ev4")),
        op("p5", "event", name="n" * 101),
        op("poison-6", "identify", attributes={"a": 1}),
        op("p7", "identify", attributes={"a": BIG}),
        op("p8", "identify", attributes={f"a{i}": "x" * 999 for i in range(40)}),
    ]
    response = batch(http, ops)
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert [e["batch_index"] for e in errors] == [1, 2, 3, 5, 6, 7, 8]
    assert all({"reason", "field", "message"} <= e.keys() for e in errors)
    assert sandbox.control.person("p1") == {"a": 1}
    assert len(sandbox.control.events("p4")) == 1
    assert sandbox.control.stats()["people"] == 1


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(
            {"batch": [op(f"p{i}", "identify", attributes={"v": "x" * 900}) for i in range(600)]}
        ),
        json.dumps({"batch": []}),
        json.dumps({"nope": 1}),
    ],
    ids=["over-500kb", "empty", "no-batch"],
)
def test_batch_rejected_whole_is_400(
    sandbox: SandboxServer, http: httpx.Client, content: str
) -> None:
    response = http.post("/api/v2/batch", content=content.encode())
    assert response.status_code == 400
    assert sandbox.control.stats()["people"] == 0


# -- faults ----------------------------------------------------------------------------------


def test_injected_5xx_does_not_apply(sandbox: SandboxServer, http: httpx.Client) -> None:
    sandbox.control.configure(fail_5xx_ratio=1.0)
    statuses = {identify(http, f"p{i}", a=1).status_code for i in range(10)}
    assert statuses <= {500, 502, 503}
    assert batch(http, [op("p1", "identify", attributes={"a": 1})]).status_code >= 500
    stats = sandbox.control.stats()
    assert (stats["people"], stats["injected_5xx"]) == (0, 11)


def test_injected_429_carries_retry_after(sandbox: SandboxServer, http: httpx.Client) -> None:
    sandbox.control.configure(fail_429_ratio=1.0, retry_after_s=7)
    response = event(http, "p1", "purchase", id=eid("e1"))
    assert (response.status_code, response.headers["retry-after"]) == (429, "7")
    assert sandbox.control.events("p1") == []


def test_strict_rate_answers_429_and_counts_over_limit(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    sandbox.control.configure(strict_rate_per_s=1, strict_burst=3)
    responses = [identify(http, f"p{i}", a=1) for i in range(15)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(r.headers["retry-after"] == "1" for r in limited)
    assert sandbox.control.stats()["over_limit"] == len(limited)
    assert sandbox.control.stats()["people"] == 15 - len(limited)


def test_slow_request_is_applied_after_client_timeout(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    sandbox.control.configure(slow_ratio=1.0, slow_s=0.5)
    with pytest.raises(httpx.ReadTimeout):
        event(http, "p1", "purchase", id=eid("slow-1"), timeout=0.1)
    sandbox.control.configure(slow_ratio=0.0)
    deadline = time.monotonic() + 5
    while not sandbox.control.events("p1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["id"] for e in sandbox.control.events("p1")] == [eid("slow-1")]
    assert event(http, "p1", "purchase", id=eid("slow-1")).status_code == 200
    assert len(sandbox.control.events("p1")) == 1
    assert sandbox.control.stats()["duplicate_events"] == 1


def test_bad_fault_settings_are_refused(sandbox: SandboxServer) -> None:
    for bad in ({"fail_5xx_ratio": 2}, {"no_such_fault": 1}, {"slow_s": -1}):
        with pytest.raises(httpx.HTTPStatusError):
            sandbox.control.configure(**bad)


# -- stats, request log, reset ---------------------------------------------------------------


def test_requests_log_keeps_every_body(sandbox: SandboxServer, http: httpx.Client) -> None:
    identify(http, "p1", email="canary-7f3a@example.com")
    with httpx.Client(base_url=sandbox.url, verify=sandbox.ssl_context()) as anonymous:
        identify(anonymous, "p2", email="canary-unauth@example.com")
    log = sandbox.control.requests()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("PUT", "/api/v1/customers/p1", 200),
        ("PUT", "/api/v1/customers/p2", 401),
    ]
    assert "canary-7f3a@example.com" in log[0]["body"]
    assert "canary-unauth" in log[1]["body"]
    assert sandbox.control.requests(since=1) == log[1:]


def test_stats_count_by_endpoint_and_status(sandbox: SandboxServer, http: httpx.Client) -> None:
    identify(http, "p1", a=1)
    identify(http, "i" * 151, a=1)
    event(http, "p1", "e")
    stats = sandbox.control.stats()
    assert stats["requests_total"] == 3
    assert stats["by_endpoint"] == {"identify": {"200": 1, "400": 1}, "event": {"200": 1}}
    assert stats["by_status"] == {"200": 2, "400": 1}
    assert stats["first_request_at"] <= stats["last_request_at"]
    assert stats["max_requests_in_any_1s_window"] >= 1


def test_reset_clears_state_and_stats(sandbox: SandboxServer, http: httpx.Client) -> None:
    identify(http, "p1", a=1)
    event(http, "p1", "e", id=eid("r1"))
    sandbox.control.reset()
    stats = sandbox.control.stats()
    assert (stats["requests_total"], stats["people"], stats["events_unique"]) == (0, 0, 0)
    assert sandbox.control.requests() == []
    assert event(http, "p1", "e", id=eid("r1")).status_code == 200
    assert sandbox.control.stats()["duplicate_events"] == 0


# -- the official customerio package ---------------------------------------------------------


def test_official_package_against_sandbox(sandbox: SandboxServer) -> None:
    cio = CustomerIO(SITE, KEY, host="127.0.0.1", port=sandbox.port, retries=0)
    cio.http.verify = str(sandbox.ca_path)
    # requests prefers REQUESTS_CA_BUNDLE from the environment over session.verify.
    cio.http.trust_env = False
    cio.identify("p1", email="a@example.com", plan="pro")
    cio.track("p1", "purchase", data={"total": 9}, id=eid("pkg-1"))
    cio.track("p1", "purchase", data={"total": 9}, id=eid("pkg-1"))
    cio.identify("p2", email="b@example.com")
    cio.delete("p2")
    cio.suppress("p3")
    response = cio.batch(
        [op("p4", "identify", attributes={"a": 1}), op("p5", "explode"), op("p4", "suppress")]
    )
    assert response.status_code == 207
    assert response.json()["errors"][0]["batch_index"] == 1
    assert sandbox.control.person("p1") == {"email": "a@example.com", "plan": "pro"}
    assert len(sandbox.control.events("p1")) == 1
    stats = sandbox.control.stats()
    assert (stats["duplicate_events"], stats["deleted"], stats["suppressed"]) == (1, 1, 2)
    assert stats["people"] == 1
    cio.http.auth = (SITE, "wrong")
    with pytest.raises(CustomerIOException):
        cio.identify("p1", email="c@example.com")


# -- start-up and pure helpers ---------------------------------------------------------------


def test_every_fault_setting_has_a_cli_flag() -> None:
    assert set(FAULT_FLAGS) == {spec.name for spec in dataclasses.fields(FaultConfig)}


def test_nan_is_not_json(http: httpx.Client) -> None:
    assert http.put("/api/v1/customers/p1", content=b'{"a": NaN}').status_code == 400


def test_start_failure_reports_stderr() -> None:
    with pytest.raises(SandboxStartError, match="mars"):
        SandboxServer(region="mars").start()


def test_match_route_keeps_encoded_slash_in_one_segment() -> None:
    route = match_route("POST", b"/api/v1/customers/a%2Fb/events")
    assert (route.endpoint, route.person_id) == ("event", "a/b")
    assert match_route("GET", b"/api/v1/customers/a").endpoint == "unknown"


def test_basic_credentials_parsing() -> None:
    assert basic_credentials("Basic c2l0ZTprOmV5") == ("site", "k:ey")
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials("Basic !!!") is None


def test_token_bucket_refills_at_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert [bucket.try_acquire() for _ in range(2)] == [True, False]


def test_fault_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="fail_429_ratio"):
        FaultConfig(fail_429_ratio=1.5)
    with pytest.raises(ValueError, match="unknown fault setting: latency"):
        FaultConfig().updated({"latency": 5})


# -- spec validation over HTTP -----------------------------------------------------------------


def test_entity_applies_one_operation(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = http.post("/api/v2/entity", json=op("p1", "identify", attributes={"plan": "pro"}))
    assert (response.status_code, response.json()) == (200, {})
    assert sandbox.control.person("p1") == {"plan": "pro"}
    assert sandbox.control.stats()["spec_violations"] == 0


def test_entity_violation_is_400_with_v2_errors(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = http.post("/api/v2/entity", json=op("p1", "event", name="e", id="not-a-ulid"))
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"field": "id", "reason": "format.ulid", "message": "id is not a valid ULID"}]
    }
    assert sandbox.control.events() == []


def test_violations_are_counted_by_code_and_logged_without_payload(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    event(http, "p1", "purchase", timestamp=1_700_000_000_000)
    batch(http, [op("p1", "identify", attributes={"a": 1}), op("p2", "event", name="e", id="x")])
    http.put("/api/v1/customers/p3", content=b'{"a": 1}')  # no Content-Type
    stats = sandbox.control.stats()
    assert stats["spec_violations_by_code"] == {
        "format.unix_seconds": 1,
        "format.ulid": 1,
        "body.content_type": 1,
    }
    assert stats["spec_violations"] == 3
    logged = [r["violations"] for r in sandbox.control.requests()]
    assert logged == [["format.unix_seconds"], ["format.ulid"], ["body.content_type"]]
    assert sandbox.control.person("p1") == {"a": 1}


def test_batch_207_reason_is_the_violation_code(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = batch(http, [op("p1", "delete"), op("p2", "event", name="e", timestamp=None)])
    assert response.status_code == 207
    assert response.json()["errors"] == [
        {
            "batch_index": 1,
            "field": "timestamp",
            "reason": "schema.type",
            "message": "timestamp must be of type integer",
        }
    ]


def test_violations_count_even_when_a_fault_answers_first(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    sandbox.control.configure(fail_5xx_ratio=1.0)
    assert event(http, "p1", "purchase", id="bad").status_code in (500, 502, 503)
    assert sandbox.control.stats()["spec_violations_by_code"] == {"format.ulid": 1}


def test_wrong_credentials_are_401_but_no_violation(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    with sandbox.client(auth=(SITE, "wrong")) as wrong:
        assert identify(wrong, "p1", a=1).status_code == 401
    with httpx.Client(base_url=sandbox.url, verify=sandbox.ssl_context()) as anonymous:
        assert identify(anonymous, "p1", a=1).status_code == 401
    stats = sandbox.control.stats()
    assert stats["unauthorized"] == 2
    assert stats["spec_violations_by_code"] == {"auth.missing": 1}


def test_v1_violation_answers_meta_errors(http: httpx.Client) -> None:
    response = identify(http, "p1", email="not-an-email")
    assert (response.status_code, response.json()) == (
        400,
        {"meta": {"errors": ["email is not a valid email"]}},
    )
