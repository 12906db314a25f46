"""The Redis transport against a real Redis: no instant at which a popped message is nowhere.

A consumer "dies" here by dropping its connection with the pop's reply unread, which is what a
kill -9 does to a worker whose event loop has not read it yet (or has paused reading because its
prefetch window is full).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from cioguard.broker.transport import (
    INFLIGHT_REGISTRY,
    Transport,
    acks_in_one_round_trip,
    sweep_stale,
)

QUEUE = Queue("jobs", Exchange("jobs", "direct"), "jobs")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _connection(redis_url: str, transport: Any = Transport) -> Connection:
    return Connection(redis_url, transport=transport, transport_options={"visibility_timeout": 60})


def _publish(redis_url: str, body: dict[str, Any], priority: int | None = None) -> None:
    with _connection(redis_url) as conn:
        Producer(conn).publish(
            body, exchange=QUEUE.exchange, routing_key="jobs", declare=[QUEUE], priority=priority
        )


def _pop_and_die(redis_url: str, client: redis.Redis, transport: Any) -> None:
    """A consumer sends its pop, the message leaves the queue, and the consumer dies unread."""
    conn = _connection(redis_url, transport)
    channel = conn.default_channel
    QUEUE(channel).declare()
    channel.basic_consume("jobs", False, lambda message: None, "consumer")
    channel.client.connection = channel.client.connection_pool.get_connection()
    channel._brpop_start()
    _publish(redis_url, {"job": 1})
    deadline = time.monotonic() + 5
    while client.llen("jobs") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.llen("jobs") == 0  # popped by the consumer
    channel.client.connection.disconnect()  # killed before reading the reply
    if getattr(channel, "_heartbeat", None):  # cioguard's transport: its thread dies too
        channel._heartbeat.stop()


def _receive_one(redis_url: str, ack: bool = True) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def on_message(body: dict[str, Any], message: Message) -> None:
        got.append(body)
        if ack:
            message.ack()

    with _connection(redis_url) as conn, Consumer(conn, [QUEUE], callbacks=[on_message]):
        conn.drain_events(timeout=3)
    return got


def test_the_stock_transport_loses_a_message_popped_by_a_consumer_that_dies(
    redis_url: str, client: redis.Redis
) -> None:
    """Why transport.py exists: kombu's BRPOP leaves the message in no queue and no unacked set."""
    _pop_and_die(redis_url, client, "redis")
    assert client.llen("jobs") == 0
    assert client.hlen("unacked") == 0


def test_a_message_popped_by_a_consumer_that_dies_goes_back_to_its_queue(
    redis_url: str, client: redis.Redis
) -> None:
    _pop_and_die(redis_url, client, Transport)
    inflight = [k for k in client.zrange(INFLIGHT_REGISTRY, 0, -1) if client.llen(k)]
    assert len(inflight) == 1  # in the dead consumer's in-flight list, not lost
    assert sweep_stale(client, stale_after_s=0) == 1
    assert client.llen("jobs") == 1
    assert client.zcard(INFLIGHT_REGISTRY) == 1  # kept: a stalled consumer may still write to it
    assert sweep_stale(client, stale_after_s=0, forget_after_s=0) == 0
    assert client.zcard(INFLIGHT_REGISTRY) == 0  # forgotten once silent for forget_after_s
    assert _receive_one(redis_url) == [{"job": 1}]


def test_the_sweep_leaves_a_live_consumers_in_flight_list_alone(
    redis_url: str, client: redis.Redis
) -> None:
    _pop_and_die(redis_url, client, Transport)
    assert sweep_stale(client, stale_after_s=30) == 0  # its heartbeat is seconds old, not 30
    assert client.llen("jobs") == 0


def test_a_received_message_is_unacknowledged_and_no_longer_in_flight(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": 2})
    assert _receive_one(redis_url, ack=False) == [{"job": 2}]
    # The consumer closed without acking: kombu hands it back at shutdown; nothing stays in flight.
    assert all(client.llen(k) == 0 for k in client.zrange(INFLIGHT_REGISTRY, 0, -1))
    assert client.llen("jobs") == 1
    assert _receive_one(redis_url) == [{"job": 2}]
    assert client.hlen("unacked") == 0 and client.llen("jobs") == 0


def test_while_received_the_message_is_in_the_unacked_set_only(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": 3})
    seen: list[tuple[int, int, int]] = []

    def on_message(body: dict[str, Any], message: Message) -> None:
        lists = sum(client.llen(k) for k in client.zrange(INFLIGHT_REGISTRY, 0, -1))
        seen.append((client.llen("jobs"), lists, client.hlen("unacked")))
        message.ack()

    with _connection(redis_url) as conn, Consumer(conn, [QUEUE], callbacks=[on_message]):
        conn.drain_events(timeout=3)
    assert seen == [(0, 0, 1)]
    assert client.hlen("unacked") == 0


def test_a_consumer_without_acks_leaves_nothing_in_flight(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": 4})
    got: list[dict[str, Any]] = []
    callbacks = [lambda body, message: got.append(body)]
    with _connection(redis_url) as conn, Consumer(conn, [QUEUE], callbacks=callbacks, no_ack=True):
        conn.drain_events(timeout=3)
    assert got == [{"job": 4}]
    assert all(client.llen(k) == 0 for k in client.zrange(INFLIGHT_REGISTRY, 0, -1))
    assert client.llen("jobs") == 0 and client.hlen("unacked") == 0


def test_a_message_whose_consumer_fails_stays_unacknowledged_for_redelivery(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": 5})

    def explode(body: dict[str, Any], message: Message) -> None:
        raise RuntimeError("consumer failed")

    with _connection(redis_url) as conn, Consumer(conn, [QUEUE], callbacks=[explode]):
        with pytest.raises(RuntimeError):
            conn.drain_events(timeout=3)
        assert client.hlen("unacked") == 1  # the visibility timeout would hand it out again
        assert all(client.llen(k) == 0 for k in client.zrange(INFLIGHT_REGISTRY, 0, -1))
    assert client.llen("jobs") == 1  # closing the channel handed it back at once


def test_one_claim_takes_as_many_messages_as_the_prefetch_window_allows(
    redis_url: str, client: redis.Redis
) -> None:
    for n in range(10):
        _publish(redis_url, {"job": n})
    got: list[dict[str, Any]] = []
    with _connection(redis_url) as conn:
        consumer = Consumer(conn, [QUEUE], callbacks=[lambda body, message: got.append(body)])
        consumer.qos(prefetch_count=4)
        with consumer:
            conn.drain_events(timeout=3)  # one pop, one claim
            assert got == [{"job": n} for n in range(4)]
            assert client.hlen("unacked") == 4 and client.llen("jobs") == 6
    assert client.llen("jobs") == 10 and client.hlen("unacked") == 0  # unacked: handed back


def test_acks_in_one_round_trip_remove_every_message_from_the_unacknowledged_set(
    redis_url: str, client: redis.Redis
) -> None:
    for n in range(5):
        _publish(redis_url, {"job": n})
    messages: list[Message] = []
    with _connection(redis_url) as conn:
        consumer = Consumer(
            conn, [QUEUE], callbacks=[lambda body, message: messages.append(message)]
        )
        consumer.qos(prefetch_count=5)
        with consumer:
            conn.drain_events(timeout=3)
            assert client.hlen("unacked") == 5
            with acks_in_one_round_trip(conn.default_channel):
                for message in messages:
                    message.ack()
                assert client.hlen("unacked") == 5  # not yet: they go together
            assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_a_message_that_is_not_json_is_dropped_not_redelivered_forever(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": "declares the queue"})
    client.delete("jobs")
    client.lpush("jobs", b"not json")
    _publish(redis_url, {"job": 8})
    assert _receive_one(redis_url) == [{"job": 8}]
    assert client.llen("jobs") == 0 and client.hlen("unacked") == 0


def test_priorities_share_one_list_so_every_message_is_consumed(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": 6}, priority=9)
    assert client.llen("jobs") == 1
    assert _receive_one(redis_url) == [{"job": 6}]


def test_a_closed_channel_leaves_no_in_flight_list_behind(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, {"job": 7})
    assert _receive_one(redis_url) == [{"job": 7}]
    assert client.zcard(INFLIGHT_REGISTRY) == 0
