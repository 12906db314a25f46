"""The production intake: the sealed payload format, the job id, and the app built from settings.

The app test publishes to the private Redis with a real Celery producer and reads the message
back from the queue, to show what rests in Redis: ciphertext and hashed keys, no personal data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from cioguard.broker.celeryconf import QUEUE, WEBHOOK_TASK
from cioguard.broker.envelope import Envelope, EnvelopeError, new_key
from cioguard.broker.jobs import SEALED_REPR, Job
from cioguard.config import Settings
from cioguard.delivery import deadletters
from cioguard.delivery.replay import replay_webhook
from cioguard.errors import ConfigurationError, InvalidInputError
from cioguard.producer.api import Producer
from cioguard.webhooks.intake import (
    app_from_settings,
    event_sender,
    open_event,
    seal_event,
    webhook_job_id,
)
from cioguard.webhooks.verify import sign_webhook, verify_webhook

SECRET = "whsec-intake"
MARKER = "jane.doe+marker@example.com"


def make_event() -> dict[str, Any]:
    return {
        "event_id": f"01H{uuid.uuid4().hex}",
        "object_type": "email",
        "metric": "unsubscribed",
        "timestamp": int(time.time()),
        "data": {"identifiers": {"id": "42", "email": MARKER}, "recipient": MARKER},
    }


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = int(time.time())
    return {"X-CIO-Timestamp": str(stamp), "X-CIO-Signature": sign_webhook(body, secret, stamp)}


async def post_all(app: Any, requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    """POST each body in turn to the app, in process (ASGI transport)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        return [
            await client.post("/webhooks/customerio", content=body, headers=headers)
            for body, headers in requests
        ]


@pytest.fixture
def envelope() -> Envelope:
    return Envelope([new_key().encode()])


# --- payload and job id -----------------------------------------------------------------------


def test_a_sealed_event_opens_to_the_same_event(envelope: Envelope) -> None:
    event = make_event()
    sealed = seal_event(envelope, event, now=1234.5)
    assert MARKER not in sealed
    opened = open_event(envelope, sealed)
    assert (opened.event, opened.received_at) == (event, 1234.5)


def test_open_refuses_other_payloads(envelope: Envelope) -> None:
    job = Job(job_id="01J", kind="identify", person_id="42", person_hash="h")
    with pytest.raises(ValueError, match="not a webhook payload"):
        open_event(envelope, envelope.seal(job.to_payload()))
    with pytest.raises(ValueError, match="incomplete"):
        open_event(envelope, envelope.seal({"v": 1, "kind": "webhook", "event": "x"}))
    with pytest.raises(EnvelopeError):
        open_event(Envelope([new_key().encode()]), seal_event(envelope, make_event()))


def test_the_job_id_is_derived_from_the_event_id() -> None:
    assert webhook_job_id("evt-1") == webhook_job_id("evt-1")
    assert webhook_job_id("evt-1") != webhook_job_id("evt-2")
    for event_id in ("x" * 10_000, "\ud800", MARKER):
        job_id = webhook_job_id(event_id)
        assert job_id.startswith("webhook-") and len(job_id) <= 64
        assert MARKER not in job_id


# --- the app built from settings ----------------------------------------------------------------


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(
        CIOGUARD_BROKER_URL=redis_url,
        CIOGUARD_PAYLOAD_KEY=new_key(),
        CUSTOMERIO_WEBHOOK_SECRET=f" {SECRET} , whsec-old ",
        CIOGUARD_WEBHOOK_MAX_BODY_BYTES=2048,
    )


@pytest.fixture
def queue(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("CUSTOMERIO_WEBHOOK_SECRET", "CUSTOMERIO_WEBHOOK_SECRET"),
        ("CIOGUARD_PAYLOAD_KEY", "CIOGUARD_PAYLOAD_KEY"),
    ],
)
def test_a_missing_setting_is_named(settings: Settings, missing: str, variable: str) -> None:
    field = {"CUSTOMERIO_WEBHOOK_SECRET": "webhook_secret", "CIOGUARD_PAYLOAD_KEY": "payload_key"}
    incomplete = settings.model_copy(update={field[missing]: None})
    with pytest.raises(ConfigurationError, match=variable):
        app_from_settings(incomplete)


def test_an_accepted_event_rests_in_redis_sealed(settings: Settings, queue: redis.Redis) -> None:
    event = make_event()
    body = json.dumps(event).encode()
    first, again, rotated, too_big = asyncio.run(
        post_all(
            app_from_settings(settings),
            [(body, signed(body)), (body, signed(body)), (body, signed(body, "whsec-old")),
             (b"{" * 4096, signed(b""))],
        )
    )  # fmt: skip
    assert first.json() == {"status": "accepted"}
    assert again.json() == rotated.json() == {"status": "duplicate"}
    assert too_big.status_code == 413

    [raw] = queue.lrange(QUEUE, 0, -1)
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == WEBHOOK_TASK
    assert headers["id"] == webhook_job_id(event["event_id"])
    assert headers["argsrepr"] == SEALED_REPR
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    envelope = Envelope(settings.payload_keys())
    assert open_event(envelope, args[0]).event == event
    for key in queue.scan_iter():
        assert MARKER.encode() not in key and event["event_id"].encode() not in key
        if queue.type(key) == b"string":
            assert MARKER.encode() not in (queue.get(key) or b"")
    assert MARKER.encode() not in raw


def test_the_sender_alone_serves_framework_views(settings: Settings, queue: redis.Redis) -> None:
    """What a Django or Flask view does: verify, then hand the event to the worker."""
    event = make_event()
    body = json.dumps(event).encode()
    headers = signed(body)
    verified = verify_webhook(
        body, timestamp=headers["X-CIO-Timestamp"], signature=headers["X-CIO-Signature"],
        secrets=settings.webhook_secrets(),
    )  # fmt: skip
    send = event_sender(settings)
    with pytest.raises(InvalidInputError):
        send({"metric": "unsubscribed"})
    send(verified)
    [raw] = queue.lrange(QUEUE, 0, -1)
    assert json.loads(raw)["headers"]["id"] == webhook_job_id(event["event_id"])


# --- replaying a dead-lettered webhook ----------------------------------------------------------


def test_replay_sends_the_sealed_event_again_under_a_new_id(
    env: dict[str, str], queue: redis.Redis
) -> None:
    producer = Producer(Settings(**env))  # type: ignore[arg-type]
    producer.audit.migrate()
    sealed = seal_event(producer.envelope, make_event())
    deadletters.record(
        producer.audit, job_id="webhook-dead", kind="webhook", person_hash=secrets.token_hex(32),
        sealed=sealed, error_class="WebhookHandlerError", http_status=None, attempts=3,
    )  # fmt: skip
    [letter] = deadletters.list_all(producer.audit)
    fresh = replay_webhook(producer, letter)
    assert fresh != "webhook-dead"
    assert deadletters.list_all(producer.audit) == []
    [raw] = queue.lrange(QUEUE, 0, -1)
    message = json.loads(raw)
    assert (message["headers"]["task"], message["headers"]["id"]) == (WEBHOOK_TASK, fresh)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == [sealed]
    producer.audit.dispose()
    producer.celery.close()
