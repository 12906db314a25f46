"""cioguard.contrib.flask: ``Cioguard(app)`` with settings from ``app.config`` and the webhook
blueprint, through Flask's test client and a real HTTP server (werkzeug in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
import redis

flask = pytest.importorskip("flask")

from werkzeug.serving import make_server  # noqa: E402

import cioguard  # noqa: E402
from cioguard.broker.celeryconf import QUEUE, WEBHOOK_TASK  # noqa: E402
from cioguard.contrib.flask import Cioguard  # noqa: E402
from cioguard.errors import ConfigurationError  # noqa: E402
from cioguard.producer import api  # noqa: E402
from tests.contrib.webhook_events import EMAIL, SECRET, signed  # noqa: E402

CREDENTIALS = ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[flask.Flask]:
    application = flask.Flask("shop")
    application.config.update({k: v for k, v in env.items() if k not in CREDENTIALS})
    application.config["CUSTOMERIO_WEBHOOK_SECRET"] = SECRET
    application.config["SECRET_KEY"] = "the application's own setting, not cioguard's"
    extension = Cioguard(application)

    @application.post("/sign-up")
    def sign_up() -> dict[str, str]:
        return {"job": cioguard.identify(int(flask.request.form["id"]), {"plan": "pro"})}

    yield application
    if extension._receiver is not None:
        extension._receiver.close()
    api._installed.clear()
    api._settings_source[:] = [api.get_settings]
    api.get_producer.cache_clear()


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def tasks_queued(broker: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in reversed(broker.lrange(QUEUE, 0, -1))]


def test_settings_come_from_app_config_and_the_environment_wins(
    app: flask.Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.config["CIOGUARD_MAX_ATTEMPTS"] = 4
    assert Cioguard(app, webhooks=False).settings.max_attempts == 4  # type: ignore[union-attr]
    monkeypatch.setenv("CIOGUARD_MAX_ATTEMPTS", "9")
    assert Cioguard(app, webhooks=False).settings.max_attempts == 9  # type: ignore[union-attr]


def test_a_misspelt_setting_is_refused_at_start(env: dict[str, str]) -> None:
    application = flask.Flask("typo")
    application.config["CIOGUARD_BROKER_ULR"] = env["CIOGUARD_BROKER_URL"]
    with pytest.raises(ConfigurationError, match=r"^CIOGUARD_BROKER_ULR is not a cioguard setting"):
        Cioguard(application)


def test_calls_and_webhooks_with_the_test_client(app: flask.Flask, broker: redis.Redis) -> None:
    client = app.test_client()
    assert client.post("/sign-up", data={"id": "42"}).status_code == 200
    body, headers = signed("01HFLASK0001")
    first = client.post("/webhooks/customerio", data=body, headers=headers)
    again = client.post("/webhooks/customerio", data=body, headers=headers)
    assert (first.status_code, first.get_json()) == (200, {"status": "accepted"})
    assert (again.status_code, again.get_json()) == (200, {"status": "duplicate"})
    _, wrong = signed("01HFLASK0002", secret="not-the-secret")
    refused = client.post("/webhooks/customerio", data=body, headers=wrong)
    assert (refused.status_code, refused.get_json()) == (401, {"error": "unauthorized"})
    assert client.get("/webhooks/customerio").status_code == 405
    assert tasks_queued(broker) == ["cioguard.deliver", WEBHOOK_TASK]
    assert EMAIL.encode() not in b"".join(broker.lrange(QUEUE, 0, -1))


def test_webhooks_over_real_http_including_a_chunked_body_over_the_cap(
    app: flask.Flask, broker: redis.Redis
) -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=5) as http:
            body, headers = signed("01HFLASK0003")
            answer = http.post("/webhooks/customerio", content=body, headers=headers)
            assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
            declared = http.post("/webhooks/customerio", content=b"x" * 300_000, headers=headers)
            assert declared.status_code == 413

            def chunks() -> Iterator[bytes]:
                for _ in range(30):
                    yield b"x" * 10_000

            chunked = http.post("/webhooks/customerio", content=chunks(), headers=headers)
            assert chunked.status_code == 413
            assert http.post("/sign-up", data={"id": "7"}).status_code == 200
    finally:
        server.shutdown()
    assert tasks_queued(broker) == [WEBHOOK_TASK, "cioguard.deliver"]
