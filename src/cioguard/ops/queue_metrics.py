"""Broker gauges, read from Redis at scrape time: what is waiting, and for how long.

* ``cioguard_queue_depth{queue}``: messages ready in the queue (``LLEN``);
* ``cioguard_queue_oldest_job_age_seconds{queue}``: age of the job at the consuming end of the
  queue, counted from its job id (a ULID carries its creation time; a retried job keeps its id,
  so this is "how long ago was the oldest waiting job asked for"); 0 when the queue is empty;
* ``cioguard_unacked_messages``: messages handed to a worker and not yet acknowledged (running,
  prefetched, buffered by a batching worker, or held until a retry countdown ends): kombu's
  ``unacked`` hash;
* ``cioguard_unacked_oldest_age_seconds``: how long the oldest of those has been out (kombu's
  ``unacked_index`` score). Past ``CIOGUARD_VISIBILITY_TIMEOUT_S`` Redis hands it out again;
* ``cioguard_inflight_messages``: messages popped by a consumer and not yet recorded as
  unacknowledged (the in-flight lists of :mod:`cioguard.broker.transport`), normally 0 or a few;
* ``cioguard_broker_up``: 1 if Redis answered these reads.

Why at scrape time: these are facts of the shared broker, not of one process, so every worker
reports the same values (use ``max`` across targets in rules, docs/alerts/). Cost per scrape: one
pipeline of ``LLEN``/``LINDEX``/``HLEN``/``ZRANGE`` plus one ``LLEN`` per in-flight list.
Only counts and ages leave Redis: the one message read (``LINDEX``) is parsed for its id only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from ulid import ULID

from cioguard.broker.celeryconf import QUEUE
from cioguard.broker.transport import INFLIGHT_REGISTRY, ReliableChannel

log = logging.getLogger("cioguard.ops.queue_metrics")

UNACKED_KEY: str = ReliableChannel.unacked_key
UNACKED_INDEX_KEY: str = ReliableChannel.unacked_index_key
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BrokerCounts:
    """One reading of the broker; ages in seconds."""

    depth: dict[str, int]
    oldest_age_s: dict[str, float]
    unacked: int
    unacked_oldest_age_s: float
    inflight: int


def job_age_s(raw: bytes | str | None, now: float) -> float:
    """Seconds since the job in a kombu message was created (its ULID), 0 if unknown."""
    if not raw:
        return 0.0
    try:
        job_id = json.loads(raw)["headers"]["id"]
        created = ULID.from_str(str(job_id)).timestamp
    except (ValueError, KeyError, TypeError):
        return 0.0
    return max(0.0, now - float(created))


def read_broker(client: redis.Redis, queues: Sequence[str] = (QUEUE,)) -> BrokerCounts:
    """Read depth, oldest job, unacknowledged and in-flight counts in two round trips."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
        pipe.lindex(queue, -1)  # kombu pushes on the left and consumers pop on the right
    pipe.hlen(UNACKED_KEY)
    pipe.zrange(UNACKED_INDEX_KEY, 0, 0, withscores=True)
    pipe.zrange(INFLIGHT_REGISTRY, 0, -1)
    answers = pipe.execute()
    now = time.time()
    depth, oldest = {}, {}
    for i, queue in enumerate(queues):
        depth[queue] = int(answers[2 * i])
        oldest[queue] = job_age_s(answers[2 * i + 1], now)
    unacked, first_out, lists = answers[2 * len(queues) :]
    out_since = float(first_out[0][1]) if first_out else now
    inflight = 0
    if lists:
        pipe = client.pipeline(transaction=False)
        for key in lists:
            pipe.llen(key)
        inflight = sum(int(n) for n in pipe.execute())
    return BrokerCounts(depth, oldest, int(unacked), max(0.0, now - out_since), inflight)


class QueueCollector(Collector):
    """The broker gauges above, for one Redis (the worker's ``CIOGUARD_BROKER_URL``)."""

    def __init__(self, broker_url: str, queues: Sequence[str] = (QUEUE,)) -> None:
        self._client = redis.Redis.from_url(
            broker_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )
        self._queues = tuple(queues)

    def describe(self) -> Iterable[Metric]:
        return _families()

    def collect(self) -> Iterable[Metric]:
        depth, oldest, unacked, unacked_age, inflight, up = _families()
        try:
            counts = read_broker(self._client, self._queues)
        except (redis.RedisError, OSError) as exc:
            log.warning("broker metrics unavailable", extra={"error_class": type(exc).__name__})
            up.add_metric([], 0)
            return [up]
        for queue in self._queues:
            depth.add_metric([queue], counts.depth[queue])
            oldest.add_metric([queue], counts.oldest_age_s[queue])
        unacked.add_metric([], counts.unacked)
        unacked_age.add_metric([], counts.unacked_oldest_age_s if counts.unacked else 0.0)
        inflight.add_metric([], counts.inflight)
        up.add_metric([], 1)
        return [depth, oldest, unacked, unacked_age, inflight, up]

    def close(self) -> None:
        self._client.close()


def _families() -> list[GaugeMetricFamily]:
    return [
        GaugeMetricFamily("cioguard_queue_depth", "Jobs ready in the queue", labels=["queue"]),
        GaugeMetricFamily(
            "cioguard_queue_oldest_job_age_seconds",
            "Age of the oldest job waiting in the queue (from its job id)",
            labels=["queue"],
        ),
        GaugeMetricFamily(
            "cioguard_unacked_messages", "Messages handed to workers and not yet acknowledged"
        ),
        GaugeMetricFamily(
            "cioguard_unacked_oldest_age_seconds",
            "How long the oldest unacknowledged message has been out",
        ),
        GaugeMetricFamily(
            "cioguard_inflight_messages", "Messages popped and not yet recorded as unacknowledged"
        ),
        GaugeMetricFamily("cioguard_broker_up", "1 if Redis answered the broker gauges"),
    ]
