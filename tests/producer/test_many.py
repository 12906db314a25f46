"""Bulk enqueue against the private Redis: order, sealing, batch boundaries, and failures.

No worker runs here (``tests/cli/test_importing.py`` drains bulk-enqueued jobs through a real
worker and the sandbox); these tests look at what ``identify_many``/``track_many`` leave in the
queue, and at what is left when an item is bad or the broker is away.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import cioguard
from cioguard.broker.celeryconf import DELIVER_TASK, QUEUE
from cioguard.broker.envelope import Envelope
from cioguard.config import get_settings
from cioguard.producer import many
from cioguard.producer.api import Producer, get_producer
from cioguard.producer.many import BatchPublisher, BulkItemError, BulkPublishError, publish_all
from cioguard.sandbox.devstack import free_port
from tests.conftest import settings_from
from tests.producer.test_api import (
    ATTRIBUTES,
    CANARY_EVENT,
    CANARY_ID,
    assert_no_canary,
    assert_sealed,
    queued,
    readable,
)


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def people(count: int, prefix: str = CANARY_ID) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{prefix}-{i}", {**ATTRIBUTES, "n": i}) for i in range(count)]


def opened(env: dict[str, str], token: str) -> dict[str, Any]:
    return Envelope([env["CIOGUARD_PAYLOAD_KEY"].encode()]).open(token)


def test_identify_many_enqueues_sealed_jobs_in_order(
    producer: Producer, broker: redis.Redis, env: dict[str, str]
) -> None:
    items = people(23)
    ids = publish_all(producer, items, many._identify_item, batch=10)
    assert len(ids) == len(set(ids)) == 23
    messages = queued(broker)
    assert [m["headers"]["id"] for m in messages] == ids
    for (pid, _attrs), job_id, message in zip(items, ids, messages, strict=True):
        payload = opened(env, assert_sealed(message, env, job_id, DELIVER_TASK))
        assert payload["person_id"] == pid and payload["kind"] == "identify"
        # sanitized as identify() does it: the same policy, applied in the application
        assert payload["attributes"] == producer.sanitizer.apply(dict(items[0][1], n=0)) | {
            "n": payload["attributes"]["n"]
        }
    assert_no_canary(readable(broker))


def test_the_dedicated_connection_batches(producer: Producer) -> None:
    """kombu buffers only without retry_on_timeout: the publisher's connection must qualify."""
    with BatchPublisher(producer) as publisher:
        kombu_producer = producer.celery.amqp.Producer(publisher.connection)
        assert kombu_producer.supports_batch_publish
    # the application's own connection keeps retry_on_timeout for single publishes
    with producer.celery.connection_for_write() as conn:
        assert not producer.celery.amqp.Producer(conn).supports_batch_publish


def test_a_bad_item_sends_nothing_from_its_batch_on(
    producer: Producer, broker: redis.Redis
) -> None:
    items: list[Any] = people(25)
    items[13] = (f"{CANARY_ID}-bad ", {"email": "x"})  # trailing whitespace: refused
    with pytest.raises(BulkItemError) as caught:
        publish_all(producer, items, many._identify_item, batch=10)
    error = caught.value
    assert (error.index, error.resume_at) == (13, 10)
    assert "item 13" in str(error) and "whitespace" in str(error)
    assert_no_canary(str(error))
    # batch 0-9 went; 10-12, valid but in the refused item's batch, did not; nor did 14-24
    assert [m["headers"]["id"] for m in queued(broker)] == error.published
    assert len(error.published) == 10
    # retrying from resume_at (after fixing the item) completes the lot, in order
    items[13] = (f"{CANARY_ID}-fixed", {"plan": "p"})
    rest = publish_all(producer, items[error.resume_at :], many._identify_item, batch=10)
    assert [m["headers"]["id"] for m in queued(broker)] == error.published + rest
    assert len(queued(broker)) == 25


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("just-a-string", "pair"),
        ((CANARY_ID, ["not", "a", "mapping"]), "mapping"),
        ((4.2, {}), "person_id must be a str or an int"),
    ],
)
def test_bad_shapes_name_the_index_and_the_problem(
    producer: Producer, broker: redis.Redis, item: Any, problem: str
) -> None:
    with pytest.raises(BulkItemError) as caught:
        publish_all(producer, [*people(3), item], many._identify_item)
    assert caught.value.index == 3 and caught.value.resume_at == 0
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert_no_canary(str(caught.value))
    assert broker.llen(QUEUE) == 0


def test_bad_batch_size_is_refused(producer: Producer, broker: redis.Redis) -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="batch must be a positive int"):
            publish_all(producer, people(2), many._identify_item, batch=bad)  # type: ignore[arg-type]
    assert broker.llen(QUEUE) == 0


def test_broker_down_names_what_was_not_sent(env: dict[str, str]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    down = Producer(settings_from({**env, "CIOGUARD_BROKER_URL": closed}))
    try:
        with pytest.raises(BulkPublishError) as caught:
            publish_all(down, people(5), many._identify_item)
    finally:
        down.celery.close()
    assert caught.value.published == [] and caught.value.resume_at == 0
    assert isinstance(caught.value, cioguard.BrokerUnavailableError)
    assert "CIOGUARD_BROKER_URL" in str(caught.value)
    assert_no_canary(str(caught.value))


def test_broker_lost_between_batches(
    producer: Producer, broker: redis.Redis, redis_url: str
) -> None:
    """Batches confirmed before the broker goes away are reported as published, in order."""

    def items() -> Iterator[tuple[str, dict[str, Any]]]:
        yield from people(10)
        # the next batch is prepared, then its publish fails: every client is cut off
        broker.client_kill_filter(_type="normal", skipme=True)
        broker.config_set("requirepass", "now-refused")
        yield from people(10, prefix="second")

    try:
        with pytest.raises(BulkPublishError) as caught:
            publish_all(producer, items(), many._identify_item, batch=10)
    finally:
        broker.execute_command("AUTH", "now-refused")
        broker.config_set("requirepass", "")
    assert caught.value.resume_at == 10 and len(caught.value.published) == 10
    assert [m["headers"]["id"] for m in queued(broker)] == caught.value.published


def test_track_many(producer: Producer, broker: redis.Redis, env: dict[str, str]) -> None:
    items = [
        (f"{CANARY_ID}-{i}", CANARY_EVENT, {"email": ATTRIBUTES["email"], "i": i}, 1_700_000_000)
        for i in range(5)
    ]
    ids = publish_all(producer, [*items, (f"{CANARY_ID}-x", CANARY_EVENT)], many._track_item)
    messages = queued(broker)
    assert [m["headers"]["id"] for m in messages] == ids and len(ids) == 6
    payload = opened(env, assert_sealed(messages[0], env, ids[0], DELIVER_TASK))
    assert payload["kind"] == "track" and payload["name"] == CANARY_EVENT
    assert payload["timestamp"] == 1_700_000_000
    with pytest.raises(BulkItemError, match=r"item 1: .*track item"):
        publish_all(producer, [items[0], (CANARY_ID,)], many._track_item)


@pytest.fixture
def app_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name in list(os.environ):
        if name.startswith(("CIOGUARD_", "CUSTOMERIO_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_producer.cache_clear()
    yield env
    if get_producer.cache_info().currsize:
        get_producer().celery.close()
    get_settings.cache_clear()
    get_producer.cache_clear()


def test_module_level_and_async_forms(app_env: dict[str, str], broker: redis.Redis) -> None:
    ids = cioguard.identify_many(people(3))
    ids += asyncio.run(cioguard.aidentify_many(people(2, prefix="async")))
    ids += cioguard.track_many([(f"{CANARY_ID}-t", CANARY_EVENT)])
    ids += asyncio.run(cioguard.atrack_many([(f"{CANARY_ID}-u", CANARY_EVENT, None)]))
    assert [m["headers"]["id"] for m in queued(broker)] == ids and len(ids) == 7
    assert "identify_many" in cioguard.__all__
