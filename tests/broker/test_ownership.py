"""Claimed messages are owned by their channel: a silent owner's messages come back in seconds.

Against a real Redis. A consumer "dies" here by stopping its heartbeat thread and abandoning its
connection without closing it, which is what a kill -9 leaves in Redis: its claimed messages in
kombu's unacked hash, its token in the owners registry, no more heartbeats.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from cioguard.broker import ownership
from cioguard.broker.transport import (
    INFLIGHT_PREFIX,
    INFLIGHT_REGISTRY,
    Transport,
    sweep_stale,
)
from tests.broker.proxy import DropOneReplyProxy

QUEUE = Queue("jobs", Exchange("jobs", "direct"), "jobs")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _connection(url: str, **options: Any) -> Connection:
    """Transport options as celeryconf ships them (``retry_on_timeout``: redis-py also retries
    a command whose connection dropped)."""
    shipped = {"visibility_timeout": 900, "retry_on_timeout": True, "socket_timeout": 15}
    return Connection(url, transport=Transport, transport_options={**shipped, **options})


def _publish(url: str, count: int) -> None:
    with _connection(url) as conn:
        producer = Producer(conn)
        for n in range(count):
            producer.publish(
                {"job": n}, exchange=QUEUE.exchange, routing_key="jobs", declare=[QUEUE]
            )


def _claim_and_die(url: str, prefetch: int) -> tuple[Any, list[Message]]:
    """A consumer claims ``prefetch`` messages, then goes silent without closing anything."""
    conn = _connection(url)
    got: list[Message] = []
    consumer = Consumer(conn, [QUEUE], callbacks=[lambda body, message: got.append(message)])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    conn.drain_events(timeout=3)
    channel = conn.default_channel
    channel._heartbeat.stop()  # no more heartbeats, no close: a kill -9
    return channel, got


def _bodies(url: str, expect: int) -> list[tuple[int, bool]]:
    """(job, redelivered) of each message received."""
    got: list[tuple[int, bool]] = []

    def on_message(body: dict[str, Any], message: Message) -> None:
        got.append((body["job"], bool(message.delivery_info.get("redelivered"))))
        message.ack()

    with _connection(url) as conn, Consumer(conn, [QUEUE], callbacks=[on_message]) as consumer:
        consumer.qos(prefetch_count=expect)
        deadline = time.monotonic() + 5
        while len(got) < expect and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    return sorted(got)


def _sweeper(url: str) -> tuple[Connection, Any]:
    conn = _connection(url)
    channel = conn.default_channel
    QUEUE(channel).declare()
    return conn, channel


def test_a_silent_owners_claimed_messages_go_back_once_however_many_sweep(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, 5)
    dead, got = _claim_and_die(redis_url, prefetch=4)
    assert len(got) == 4 and client.hlen("unacked") == 4 and client.llen("jobs") == 1
    assert client.hlen(dead.owned_key) == 4
    conn_a, a = _sweeper(redis_url)
    conn_b, b = _sweeper(redis_url)
    with conn_a, conn_b:
        assert ownership.sweep_owners(a, client, stale_after_s=30) == 0  # not silent long enough
        time.sleep(1.1)
        handed = ownership.sweep_owners(a, client, 1) + ownership.sweep_owners(b, client, 1)
    assert handed == 4
    assert client.hlen("unacked") == 0 and client.llen("jobs") == 5
    assert not client.exists(dead.owned_key)
    assert client.zscore(ownership.OWNERS_REGISTRY, dead.token) is None
    redelivered = [(n, True) for n in range(4)]
    assert _bodies(redis_url, 5) == [*redelivered, (4, False)]  # each once, marked redelivered


def test_an_ack_or_reject_ends_ownership(redis_url: str, client: redis.Redis) -> None:
    _publish(redis_url, 3)
    dead, got = _claim_and_die(redis_url, prefetch=3)
    got[0].ack()
    got[1].reject(requeue=True)  # back in the queue at once, no longer owned
    assert client.hkeys(dead.owned_key) == [got[2].delivery_tag.encode()]
    assert client.llen("jobs") == 1 and client.hlen("unacked") == 1


def test_the_heartbeat_thread_vouches_for_a_consumer_whose_loop_is_busy(
    redis_url: str, client: redis.Redis
) -> None:
    _publish(redis_url, 2)
    with _connection(redis_url, inflight_stale_after=2) as conn:
        consumer = Consumer(conn, [QUEUE], callbacks=[lambda body, message: None])
        consumer.qos(prefetch_count=2)
        with consumer:
            conn.drain_events(timeout=3)
            time.sleep(5)  # the "event loop" does nothing for 2.5 stale periods
            conn_s, sweeper = _sweeper(redis_url)
            with conn_s:
                assert ownership.sweep_owners(sweeper, client, stale_after_s=2) == 0
            assert client.hlen("unacked") == 2
    assert client.llen("jobs") == 2  # the clean close handed both back


def test_a_claim_whose_reply_was_lost_delivers_what_it_claimed(
    redis_server: Any, redis_url: str, client: redis.Redis
) -> None:
    """redis-py re-sends the EVAL after the dropped reply; the claim id makes it a replay."""
    client.script_flush()  # a cached script would travel as EVALSHA, without the marker text
    _publish(redis_url, 6)
    proxy = DropOneReplyProxy(redis_server.port, b"Claim popped messages")
    got: list[Message] = []
    try:
        with _connection(f"redis://127.0.0.1:{proxy.port}/0") as conn:
            consumer = Consumer(
                conn, [QUEUE], callbacks=[lambda body, message: got.append(message)]
            )
            consumer.qos(prefetch_count=3)
            with consumer:
                conn.drain_events(timeout=5)
                assert proxy.dropped == 1
                assert len(got) == 3  # the first run's three, not three others
                assert client.hlen("unacked") == 3 and client.llen("jobs") == 3
                for message in got:
                    message.ack()
                assert client.hlen("unacked") == 0
    finally:
        proxy.close()
    assert sorted(m.payload["job"] for m in got) == [0, 1, 2]


def test_a_swept_list_stays_registered_and_a_scan_finds_unregistered_ones(
    redis_url: str, client: redis.Redis
) -> None:
    orphan = f"{INFLIGHT_PREFIX}deadbeef:jobs"
    client.lpush(orphan, b"{}")  # written by a consumer whose entry was forgotten
    assert sweep_stale(client, stale_after_s=0) == 0  # the sweep cannot see it
    assert ownership.register_orphans(client, INFLIGHT_PREFIX, INFLIGHT_REGISTRY) == 1
    assert sweep_stale(client, stale_after_s=0) == 1
    assert client.llen("jobs") == 1
    assert client.zscore(INFLIGHT_REGISTRY, orphan) is not None  # still registered


def test_a_consumer_whose_event_loop_hangs_for_good_is_given_up(
    redis_url: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat thread stops vouching once the loop has been silent LOOP_SILENT_MAX_S."""
    monkeypatch.setattr(ownership, "LOOP_SILENT_MAX_S", 1.0)
    _publish(redis_url, 2)
    with _connection(redis_url, inflight_stale_after=2) as conn:
        consumer = Consumer(conn, [QUEUE], callbacks=[lambda body, message: None])
        consumer.qos(prefetch_count=2)
        with consumer:
            conn.drain_events(timeout=3)
            time.sleep(4)  # no drain, no loop tick: 1 s to stop vouching, then 2 s to go stale
            conn_s, sweeper = _sweeper(redis_url)
            with conn_s:
                assert ownership.sweep_owners(sweeper, client, stale_after_s=2) == 2
            assert client.llen("jobs") == 2 and client.hlen("unacked") == 0
