"""The webhook app over real HTTP: uvicorn on 127.0.0.1 in a thread, httpx, the real Redis.

Every server binds a free port itself (a pre-bound socket handed to uvicorn, so no port race);
Redis keys live under a per-run prefix that is deleted afterwards (never FLUSHDB: Redis is shared).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from cioguard.errors import ConfigurationError
from cioguard.webhooks.app import build_server, create_app
from cioguard.webhooks.verify import sign_webhook

SECRET = "whsec-current"
OLD_SECRET = "whsec-previous"
MARKER = "jane.doe+marker@example.com"
MAX_BODY = 4096
PATH = "/webhooks/customerio"


class Recorder:
    """The ``enqueue`` callable: appends events; can be told to fail the next N calls."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failures_left = 0
        self.probe: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self.failures_left:
                self.failures_left -= 1
                raise RuntimeError(f"broker down while sending {json.dumps(event)}")
            if self.probe is not None:
                self.probe(event)
            self.events.append(event)

    def ids(self) -> list[str]:
        return [event["event_id"] for event in self.events]


def make_event(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id or f"01H{uuid.uuid4().hex}",
        "object_type": "email",
        "metric": "delivered",
        "timestamp": int(time.time()),
        "data": {"identifiers": {"id": "42", "email": MARKER}, "recipient": MARKER},
        **fields,
    }


def encode(event: Any) -> bytes:
    return json.dumps(event).encode()


def cio_headers(body: bytes, *, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    """The headers Customer.io would send with ``body``."""
    stamp = int(time.time()) if ts is None else ts
    return {
        "X-CIO-Timestamp": str(stamp),
        "X-CIO-Signature": sign_webhook(body, secret, stamp),
        "Content-Type": "application/json",
    }


@contextmanager
def live_server(app: ASGIApp, health_path: str = "/healthz") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = build_server(app, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base_url + health_path)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_until_healthy(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server at {url} did not become healthy")


@pytest.fixture(scope="module")
def redis_client() -> Iterator[Redis]:
    client = Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture(scope="module")
def key_prefix(redis_client: Redis) -> Iterator[str]:
    prefix = f"test:cioguard:webhook_app:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def base_url(redis_client: Redis, key_prefix: str, recorder: Recorder) -> Iterator[str]:
    app = create_app(
        secrets=[SECRET, OLD_SECRET],
        redis=redis_client,
        enqueue=recorder,
        max_body_bytes=MAX_BODY,
        key_prefix=key_prefix,
    )
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as http:
        yield http


@pytest.fixture(autouse=True)
def fresh_recorder(recorder: Recorder) -> Recorder:
    recorder.events.clear()
    recorder.failures_left = 0
    recorder.probe = None
    return recorder


def post(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post(PATH, content=body, headers=headers)


def assert_unauthorized(response: httpx.Response, recorder: Recorder) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert recorder.events == []


# --- the happy path ----------------------------------------------------------------------------


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_valid_webhook_is_enqueued(client: httpx.Client, recorder: Recorder) -> None:
    event = make_event()
    body = encode(event)
    response = post(client, body, cio_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}
    assert recorder.events == [event]


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_each_secret_is_accepted_during_rotation(
    client: httpx.Client, recorder: Recorder, secret: str
) -> None:
    body = encode(make_event())
    assert post(client, body, cio_headers(body, secret=secret)).status_code == 200
    assert len(recorder.events) == 1


def test_chunked_body_under_the_cap_is_accepted(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    chunks = iter([body[:10], body[10:]])
    response = client.post(PATH, content=chunks, headers=cio_headers(body))
    assert response.status_code == 200
    assert len(recorder.events) == 1


# --- verification failures: 401 with no detail -----------------------------------------------


def test_tampered_body(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    tampered = body.replace(b"delivered", b"clicked")
    assert_unauthorized(post(client, tampered, cio_headers(body)), recorder)


def test_wrong_secret(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    assert_unauthorized(post(client, body, cio_headers(body, secret="whsec-wrong")), recorder)


@pytest.mark.parametrize("header", ["X-CIO-Timestamp", "X-CIO-Signature"])
def test_missing_header(client: httpx.Client, recorder: Recorder, header: str) -> None:
    body = encode(make_event())
    headers = cio_headers(body)
    del headers[header]
    assert_unauthorized(post(client, body, headers), recorder)


def test_missing_both_headers(client: httpx.Client, recorder: Recorder) -> None:
    assert_unauthorized(post(client, encode(make_event()), {}), recorder)


def test_stale_timestamp(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    assert_unauthorized(post(client, body, cio_headers(body, ts=int(time.time()) - 600)), recorder)


def test_future_timestamp(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    assert_unauthorized(post(client, body, cio_headers(body, ts=int(time.time()) + 600)), recorder)


def test_malformed_signature(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    headers = {**cio_headers(body), "X-CIO-Signature": "not-hex-at-all"}
    assert_unauthorized(post(client, body, headers), recorder)


# --- malformed but signed: 400 -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"[1, 2, 3]",
        encode({"metric": "opened"}),
        encode({"event_id": "x"}),
        encode({"event_id": 42, "metric": "opened"}),
        encode({"event_id": "", "metric": "opened"}),
        encode({"event_id": "x", "metric": None}),
    ],
    ids=["not-json", "array", "no-event-id", "no-metric", "int-id", "empty-id", "null-metric"],
)
def test_signed_but_malformed_event(client: httpx.Client, recorder: Recorder, body: bytes) -> None:
    response = post(client, body, cio_headers(body))
    assert response.status_code == 400
    assert response.json() == {"error": "malformed event"}
    assert recorder.events == []


def test_event_id_with_a_lone_surrogate_is_handled(
    client: httpx.Client, recorder: Recorder
) -> None:
    body = b'{"event_id": "\\ud800-' + uuid.uuid4().hex.encode() + b'", "metric": "sent"}'
    assert post(client, body, cio_headers(body)).status_code == 200
    assert len(recorder.events) == 1


# --- size cap: 413 -------------------------------------------------------------------------


def test_oversized_body_with_content_length(client: httpx.Client, recorder: Recorder) -> None:
    event = make_event(padding="x" * MAX_BODY)
    body = encode(event)
    response = post(client, body, cio_headers(body))
    assert response.status_code == 413
    assert response.json() == {"error": "payload too large"}
    assert recorder.events == []


def test_oversized_chunked_body_without_content_length(
    client: httpx.Client, recorder: Recorder
) -> None:
    body = encode(make_event(padding="x" * MAX_BODY))
    chunks = [body[i : i + 512] for i in range(0, len(body), 512)]
    request = client.build_request("POST", PATH, content=iter(chunks), headers=cio_headers(body))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = client.send(request)
    assert response.status_code == 413
    assert recorder.events == []


def test_body_exactly_at_the_cap_is_read(client: httpx.Client, recorder: Recorder) -> None:
    event = make_event(padding="")
    event["padding"] = "x" * (MAX_BODY - len(encode(event)))
    body = encode(event)
    assert len(body) == MAX_BODY
    assert post(client, body, cio_headers(body)).status_code == 200


# --- dedupe and retries ----------------------------------------------------------------------


def test_replayed_event_id_is_a_duplicate(client: httpx.Client, recorder: Recorder) -> None:
    event = make_event()
    first = encode(event)
    assert post(client, first, cio_headers(first)).json() == {"status": "accepted"}
    # Customer.io's retry: same event, signed again with a later timestamp.
    retry = encode({**event, "timestamp": event["timestamp"] + 1})
    response = post(client, retry, cio_headers(retry, ts=int(time.time()) + 1))
    assert response.status_code == 200
    assert response.json() == {"status": "duplicate"}
    assert recorder.ids() == [event["event_id"]]


def test_concurrent_deliveries_enqueue_once(client: httpx.Client, recorder: Recorder) -> None:
    body = encode(make_event())
    headers = cio_headers(body)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: post(client, body, headers), range(8)))
    accepted = [r for r in responses if r.status_code == 200 and r.json()["status"] == "accepted"]
    assert len(accepted) == 1
    # The others saw the event either enqueued (duplicate) or still in flight (503, retried).
    for response in responses:
        assert response.json() in (
            {"status": "accepted"},
            {"status": "duplicate"},
            {"error": "in flight"},
        )
    assert len(recorder.events) == 1


def test_claim_left_pending_answers_503_until_it_lapses(
    client: httpx.Client, recorder: Recorder, redis_client: Redis, key_prefix: str
) -> None:
    # A worker that claimed the id and died before enqueuing leaves a "pending" claim.
    event = make_event()
    key = key_prefix + hashlib.sha256(event["event_id"].encode()).hexdigest()
    redis_client.set(key, b"pending", ex=60)
    body = encode(event)
    response = post(client, body, cio_headers(body))
    assert response.status_code == 503
    assert recorder.events == []
    redis_client.delete(key)  # what the claim's TTL does within a minute
    assert post(client, body, cio_headers(body)).json() == {"status": "accepted"}
    assert recorder.events == [event]


def test_enqueue_failure_answers_503_and_a_retry_succeeds(
    client: httpx.Client, recorder: Recorder
) -> None:
    event = make_event()
    body = encode(event)
    recorder.failures_left = 1
    failed = post(client, body, cio_headers(body))
    assert failed.status_code == 503
    assert failed.json() == {"error": "unavailable"}
    assert recorder.events == []
    retried = post(client, body, cio_headers(body))
    assert retried.json() == {"status": "accepted"}
    assert recorder.events == [event]


def test_claim_is_short_until_enqueued_then_outlives_the_retry_window(
    client: httpx.Client, recorder: Recorder, redis_client: Redis, key_prefix: str
) -> None:
    event = make_event()
    key = key_prefix + hashlib.sha256(event["event_id"].encode()).hexdigest()
    ttls: list[int] = []
    recorder.probe = lambda _: ttls.append(redis_client.ttl(key))
    body = encode(event)
    assert post(client, body, cio_headers(body)).status_code == 200
    assert 0 < ttls[0] <= 60
    assert redis_client.ttl(key) > 7 * 24 * 3600


# --- failures of the infrastructure ------------------------------------------------------------


@contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused while this is open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_redis_down_answers_503(recorder: Recorder) -> None:
    body = encode(make_event())
    with refused_port() as port:
        no_retry = Retry(NoBackoff(), 0)
        dead = Redis("127.0.0.1", port, socket_connect_timeout=0.5, retry=no_retry)
        app = create_app(secrets=[SECRET], redis=dead, enqueue=recorder)
        with live_server(app) as url:
            response = httpx.post(url + PATH, content=body, headers=cio_headers(body))
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable"}
    assert recorder.events == []


class ExplodingRedis:
    """Stands in for a client whose failure is a bug, not an outage."""

    def set(self, *args: Any, **kwargs: Any) -> bool:
        raise RuntimeError(f"unexpected failure holding {MARKER}")


def test_unexpected_error_is_a_bare_500(recorder: Recorder) -> None:
    app = create_app(secrets=[SECRET], redis=cast(Redis, ExplodingRedis()), enqueue=recorder)
    body = encode(make_event())
    with live_server(app) as url:
        response = httpx.post(url + PATH, content=body, headers=cio_headers(body))
    assert response.status_code == 500
    assert response.json() == {"error": "internal"}
    assert MARKER not in response.text
    assert "Traceback" not in response.text


def test_logs_never_hold_body_headers_or_exception_text(
    client: httpx.Client, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = encode(make_event())
    headers = cio_headers(body)
    recorder.failures_left = 1
    assert post(client, body, headers).status_code == 503
    assert post(client, body, {**headers, "X-CIO-Signature": "f" * 64}).status_code == 401
    app = create_app(secrets=[SECRET], redis=cast(Redis, ExplodingRedis()), enqueue=recorder)
    with live_server(app) as url:
        assert httpx.post(url + PATH, content=body, headers=headers).status_code == 500
    assert "webhook enqueue failed (RuntimeError)" in caplog.text
    assert "signature_mismatch" in caplog.text
    for secret_text in (MARKER, headers["X-CIO-Signature"], SECRET, "f" * 64):
        assert secret_text not in caplog.text


# --- mounting and configuration ----------------------------------------------------------------


def test_mounted_in_another_app(redis_client: Redis, key_prefix: str, recorder: Recorder) -> None:
    webhooks = create_app(
        secrets=[SECRET], redis=redis_client, enqueue=recorder, key_prefix=key_prefix
    )
    outer = Starlette(routes=[Mount("/hooks", app=webhooks)])
    event = make_event()
    body = encode(event)
    with live_server(outer, health_path="/hooks/healthz") as url:
        response = httpx.post(url + "/hooks" + PATH, content=body, headers=cio_headers(body))
        unmounted = httpx.post(url + PATH, content=body, headers=cio_headers(body))
    assert response.json() == {"status": "accepted"}
    assert unmounted.status_code == 404
    assert recorder.events == [event]


def test_only_post_is_routed(client: httpx.Client) -> None:
    assert client.get(PATH).status_code == 405


@pytest.mark.parametrize(
    "overrides",
    [
        {"secrets": []},
        {"secrets": [""]},
        {"secrets": SECRET},
        {"max_body_bytes": 0},
        {"tolerance_s": 0},
        {"dedupe_ttl_s": 7 * 24 * 3600},
        {"key_prefix": ""},
    ],
    ids=["no-secrets", "empty-secret", "string-secrets", "no-cap", "no-tolerance", "ttl", "prefix"],
)
def test_bad_settings_fail_at_start(redis_client: Redis, overrides: dict[str, Any]) -> None:
    settings_ = {"secrets": [SECRET], "redis": redis_client, "enqueue": Recorder(), **overrides}
    with pytest.raises(ConfigurationError):
        create_app(**settings_)


# --- property: nothing random gets a 5xx or an enqueue ------------------------------------------

ascii_header = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
# Symbolic choices first, so that about one request in four is authentic and the property is
# exercised on both sides, not only on garbage.
timestamp_choice = st.one_of(
    st.just("fresh"),
    st.sampled_from(["stale", "future"]),
    st.integers(-(10**12), 10**13).map(str),
    ascii_header,
)
signature_choice = st.one_of(
    st.sampled_from(["valid", "old-secret"]),
    st.sampled_from(["wrong-secret", "body-only"]),
    st.text("0123456789abcdef", min_size=60, max_size=68),
    ascii_header,
)
event_bodies = st.fixed_dictionaries(
    {"event_id": st.text(max_size=30), "metric": st.text(max_size=12)},
    optional={"data": st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)},
).map(encode)
bodies = st.one_of(
    st.binary(max_size=600), event_bodies, st.binary(min_size=MAX_BODY - 10, max_size=MAX_BODY + 10)
)


def _timestamp(choice: str) -> str:
    offsets = {"fresh": 0, "stale": -3600, "future": 3600}
    return str(int(time.time()) + offsets[choice]) if choice in offsets else choice


def _signature(choice: str, body: bytes, timestamp: str) -> str:
    message = b"v0:" + timestamp.encode() + b":" + body
    keys = {"valid": SECRET, "old-secret": OLD_SECRET, "wrong-secret": "whsec-attacker"}
    if choice in keys:
        return hmac.new(keys[choice].encode(), message, hashlib.sha256).hexdigest()
    if choice == "body-only":
        return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return choice


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    body=bodies,
    ts_choice=timestamp_choice,
    sig_choice=signature_choice,
    send_timestamp=st.sampled_from([True, True, True, False]),
    send_signature=st.sampled_from([True, True, True, False]),
)
def test_random_requests_never_5xx_nor_enqueue_unsigned(
    client: httpx.Client,
    recorder: Recorder,
    body: bytes,
    ts_choice: str,
    sig_choice: str,
    send_timestamp: bool,
    send_signature: bool,
) -> None:
    timestamp = _timestamp(ts_choice).strip()
    signature = _signature(sig_choice, body, timestamp).strip()
    headers = {}
    if send_timestamp:
        headers["X-CIO-Timestamp"] = timestamp
    if send_signature:
        headers["X-CIO-Signature"] = signature
    authentic = (
        send_timestamp
        and send_signature
        and ts_choice == "fresh"
        and sig_choice in ("valid", "old-secret")
        and len(body) <= MAX_BODY
    )
    before = len(recorder.events)
    response = post(client, body, headers)
    enqueued = len(recorder.events) - before
    event(f"authentic={authentic} status={response.status_code} enqueued={enqueued}")
    assert response.status_code < 500
    if authentic:
        assert response.status_code in (200, 400)
    else:
        assert response.status_code in (401, 413)
        assert enqueued == 0
    if enqueued:
        assert recorder.events[-1] == json.loads(body)
