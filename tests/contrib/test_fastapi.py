"""cioguard.contrib.fastapi: the webhook router and the async-API dependency, through FastAPI's
test client and a real HTTP server (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
import redis

fastapi = pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from cioguard.broker.celeryconf import QUEUE, WEBHOOK_TASK  # noqa: E402
from cioguard.config import Settings  # noqa: E402
from cioguard.contrib.fastapi import AsyncCioguard, cioguard_client, router  # noqa: E402
from cioguard.errors import ConfigurationError  # noqa: E402
from cioguard.producer import api  # noqa: E402
from cioguard.producer.api import Producer  # noqa: E402
from cioguard.testing import recording  # noqa: E402
from cioguard.webhooks.app import build_server  # noqa: E402
from tests.conftest import settings_from  # noqa: E402
from tests.contrib.webhook_events import EMAIL, SECRET, signed  # noqa: E402


def make_app(settings: Settings) -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    app.include_router(router(settings))

    @app.post("/sign-up/{user_id}")
    async def sign_up(
        user_id: int, cio: Annotated[AsyncCioguard, fastapi.Depends(cioguard_client)]
    ) -> dict[str, str]:
        return {"job": await cio.identify(user_id, {"plan": "pro"})}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return settings_from({**env, "CUSTOMERIO_WEBHOOK_SECRET": SECRET})


@pytest.fixture
def installed(settings: Settings) -> Iterator[Producer]:
    producer = api.use_producer(Producer(settings))
    yield producer
    api._installed.clear()
    api.get_producer.cache_clear()
    producer.celery.close()
    if producer._audit is not None:
        producer._audit.dispose()


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def tasks_queued(broker: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in reversed(broker.lrange(QUEUE, 0, -1))]


def test_router_refuses_to_start_without_the_webhook_secret(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=r"^CUSTOMERIO_WEBHOOK_SECRET is not set"):
        router(settings_from(env))


def test_webhooks_and_the_dependency_with_the_test_client(
    settings: Settings, installed: Producer, broker: redis.Redis
) -> None:
    with TestClient(make_app(settings)) as client:
        assert client.post("/sign-up/42").status_code == 200
        body, headers = signed("01HFASTAPI001")
        first = client.post("/webhooks/customerio", content=body, headers=headers)
        again = client.post("/webhooks/customerio", content=body, headers=headers)
        assert (first.status_code, first.json()) == (200, {"status": "accepted"})
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        _, wrong = signed("01HFASTAPI002", secret="not-the-secret")
        refused = client.post("/webhooks/customerio", content=body, headers=wrong)
        assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
    assert tasks_queued(broker) == ["cioguard.deliver", WEBHOOK_TASK]
    assert EMAIL.encode() not in b"".join(broker.lrange(QUEUE, 0, -1))


def test_the_dependency_is_recorded_by_the_test_mode(settings: Settings) -> None:
    with recording() as cio, TestClient(make_app(settings)) as client:
        assert client.post("/sign-up/5").status_code == 200
    [call] = cio.calls
    assert (call.kind, call.person_hash) == ("identify", cio.person_hash(5))


@pytest.fixture
def server_url(settings: Settings) -> Iterator[str]:
    server = build_server(make_app(settings), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (server.started and server.servers):
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_over_real_http_the_health_check_answers_while_the_broker_is_down(
    env: dict[str, str], broker: redis.Redis
) -> None:
    """With the broker down, concurrent sign-ups fail after the publish retries, and a health
    check sent meanwhile answers at once: the async API never holds the event loop."""
    from cioguard.sandbox.devstack import free_port

    down = settings_from({**env, "CUSTOMERIO_WEBHOOK_SECRET": SECRET,
                          "CIOGUARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})  # fmt: skip
    producer = api.use_producer(Producer(down))
    server = build_server(make_app(down), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not (server.started and server.servers):
            time.sleep(0.02)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

        async def scenario() -> tuple[list[int], float, float]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                start = time.monotonic()
                sign_ups = [asyncio.create_task(http.post(f"/sign-up/{i}")) for i in range(4)]
                await asyncio.sleep(0.2)  # the sign-ups are waiting on the broker now
                health_start = time.monotonic()
                health = await http.get("/health")
                health_s = time.monotonic() - health_start
                assert health.status_code == 200
                codes = [r.status_code for r in await asyncio.gather(*sign_ups)]
                return codes, health_s, time.monotonic() - start

        codes, health_s, total_s = asyncio.run(scenario())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        api._installed.clear()
        api.get_producer.cache_clear()
        producer.celery.close()
        if producer._audit is not None:
            producer._audit.dispose()
    assert codes == [500, 500, 500, 500]  # BrokerUnavailableError, unhandled by this app
    assert health_s < total_s / 2  # answered while the sign-ups still waited, not after them


def test_webhooks_over_real_http(server_url: str, installed: Producer, broker: redis.Redis) -> None:
    with httpx.Client(base_url=server_url, timeout=5) as http:
        body, headers = signed("01HFASTAPI003")
        answer = http.post("/webhooks/customerio", content=body, headers=headers)
        assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
        assert (
            http.post("/webhooks/customerio", content=b"x" * 300_000, headers=headers).status_code
            == 413
        )
        assert http.post("/sign-up/9").status_code == 200
    assert tasks_queued(broker) == [WEBHOOK_TASK, "cioguard.deliver"]
