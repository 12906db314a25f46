"""Bulk enqueue for backfills: :func:`identify_many` and :func:`track_many` (and async forms).

Each item is validated, sanitized, hashed and sealed exactly as :func:`cioguard.identify` /
:func:`cioguard.track` do it; then items are published ``batch`` at a time in one Redis round
trip, with kombu's producer batch publishing (``Producer.batch``: a non-transactional pipeline
of the LPUSHes). One round trip per batch instead of one per person is where the speed comes
from (``bench/enqueue.py`` measures it against a loop of ``identify()``).

Why a dedicated connection: kombu only buffers publishes on a connection that will not replay a
timed-out pipeline by itself (``retry_on_timeout`` off), because a replayed pipeline could enqueue
a batch twice; the application's normal connection keeps ``retry_on_timeout`` for single
publishes. :class:`BatchPublisher` opens its own connection with it off, and never retries.

What a failure leaves (and what the caller can retry):

* A bad item (wrong type, empty id, too large...) raises :class:`BulkItemError` *before* the
  batch that holds it is sent. ``error.index`` is its position (0-based), ``error.published``
  the job ids of every item before ``error.resume_at`` (the first item of that batch): those
  are enqueued; nothing from ``resume_at`` on was sent. Fix the item and call again with
  ``items[resume_at:]``.
* The broker failing while a batch is sent raises :class:`BulkPublishError`: ``published``
  again lists the job ids of the batches Redis confirmed (items before ``resume_at``); the
  items of the failed batch may or may not be in the queue (a pipeline is not atomic and the
  reply was lost), later items were not sent. Re-sending ``items[resume_at:]`` is safe for
  identifies (an identify is an idempotent update); for tracks it may record those events
  twice in Customer.io, since each call makes new job ids (event dedupe ids).

Messages never contain the values: an item is named by its index and the problem only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from kombu.exceptions import KombuError, OperationalError

from cioguard.broker.celeryconf import DELIVER_TASK
from cioguard.broker.jobs import SEALED_REPR
from cioguard.errors import BrokerUnavailableError, CioguardError, InvalidInputError
from cioguard.producer import validate
from cioguard.producer.api import Producer, get_producer

DEFAULT_BATCH = 500
"""Items per round trip. 500 sealed ~1.5 KB messages is under 1 MB per pipeline."""

IdentifyItem = tuple[str, Mapping[str, Any]]
TrackItem = tuple[Any, ...]  # (person_id, name[, data[, timestamp]])


class BulkItemError(InvalidInputError):
    """One item was refused; nothing from ``resume_at`` on was sent (see the module doc)."""

    def __init__(self, index: int, problem: str, published: list[str], resume_at: int) -> None:
        super().__init__(
            f"item {index}: {problem}; items before {resume_at} were enqueued "
            f"({len(published)} job ids in .published), nothing from item {resume_at} on was sent"
        )
        self.index, self.problem = index, problem
        self.published, self.resume_at = published, resume_at


class BulkPublishError(BrokerUnavailableError):
    """The broker failed while a batch was sent; items from ``resume_at`` on are not confirmed."""

    def __init__(self, cause: str, published: list[str], resume_at: int) -> None:
        super().__init__(
            f"the broker (CIOGUARD_BROKER_URL) failed while a batch was sent ({cause}); items "
            f"before {resume_at} are enqueued ({len(published)} job ids in .published), the batch "
            f"from item {resume_at} may or may not be, later items were not sent"
        )
        self.published, self.resume_at = published, resume_at


@dataclass(frozen=True)
class Prepared:
    """One item ready to publish: its job id and its sealed payload (no clear data)."""

    job_id: str
    sealed: str


def prepare_identify(producer: Producer, person_id: object, attributes: object) -> Prepared:
    """What ``identify()`` does before publishing; raises its ``ValueError``/``TypeError``."""
    pid = validate.person_id(person_id)
    clean = producer.sanitizer.apply(validate.attributes(attributes))
    job = producer._job("identify", pid, attributes=clean)
    return Prepared(job.job_id, producer.envelope.seal(job.to_payload()))


def prepare_track(
    producer: Producer,
    person_id: object,
    name: object,
    data: object = None,
    timestamp: int | datetime | None = None,
) -> Prepared:
    """What ``track()`` does before publishing; raises its ``ValueError``/``TypeError``."""
    pid = validate.person_id(person_id)
    event = validate.event_name(name)
    clean = producer.sanitizer.apply(validate.event_data(data), enforce_limits=False)
    when = validate.timestamp(timestamp)
    job = producer._job("track", pid, name=event, data=clean, timestamp=when)
    return Prepared(job.job_id, producer.envelope.seal(job.to_payload()))


class BatchPublisher:
    """Publishes prepared items a batch per round trip over its own broker connection."""

    def __init__(self, producer: Producer) -> None:
        self.celery = producer.celery
        self.connection: Any = self.celery.connection_for_write(
            transport_options={"retry_on_timeout": False}
        )
        self._kombu: Any = None

    def __enter__(self) -> BatchPublisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.release()

    def publish(self, batch: Sequence[Prepared]) -> None:
        """Send ``batch`` in one pipeline; raises :class:`BulkPublishError`'s cause on failure.

        If the transport cannot batch (not Redis), kombu publishes each message at once.
        """
        if not batch:
            return
        try:
            if self._kombu is None:
                self._kombu = self.celery.amqp.Producer(self.connection)
            # room for every command (an LPUSH, a PEXPIRE on an expiring queue): one flush at exit
            with self._kombu.batch(max_size=4 * len(batch)):
                for item in batch:
                    self.celery.send_task(
                        DELIVER_TASK, args=[item.sealed], task_id=item.job_id,
                        argsrepr=SEALED_REPR, kwargsrepr="{}", producer=self._kombu,
                        retry=False, add_to_parent=False,
                    )  # fmt: skip
        except (KombuError, OperationalError, OSError) as exc:
            self._kombu = None  # a failed pipeline cannot be reused: a new channel next time
            raise PublishFailedError(type(exc).__name__) from None


class PublishFailedError(CioguardError):
    """:meth:`BatchPublisher.publish` failed; ``cause`` is the error's class name only."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def publish_all(
    producer: Producer,
    items: Iterable[Any],
    prepare: Callable[[Producer, Any], Prepared],
    *,
    batch: int = DEFAULT_BATCH,
) -> list[str]:
    """Prepare and publish every item in order; the job ids in order (see the module doc)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInputError("batch must be a positive int")
    published: list[str] = []
    with BatchPublisher(producer) as publisher:
        for start, chunk in _chunks(items, batch):
            ready = []
            for offset, item in enumerate(chunk):
                try:
                    ready.append(prepare(producer, item))
                except (ValueError, TypeError) as exc:
                    raise BulkItemError(start + offset, str(exc), published, start) from None
            try:
                publisher.publish(ready)
            except PublishFailedError as failed:
                raise BulkPublishError(failed.cause, published, start) from None
            published.extend(p.job_id for p in ready)
    return published


def _chunks(items: Iterable[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    iterator, start = iter(items), 0
    while chunk := list(islice(iterator, size)):
        yield start, chunk
        start += len(chunk)


def _identify_item(producer: Producer, item: Any) -> Prepared:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise TypeError("an identify item must be a (person_id, attributes) pair")
    return prepare_identify(producer, item[0], item[1])


def _track_item(producer: Producer, item: Any) -> Prepared:
    if not isinstance(item, tuple | list) or not 2 <= len(item) <= 4:
        raise TypeError("a track item must be (person_id, name[, data[, timestamp]])")
    return prepare_track(producer, *item)


def identify_many(items: Iterable[IdentifyItem], *, batch: int = DEFAULT_BATCH) -> list[str]:
    """Enqueue an identify per ``(person_id, attributes)``; the job ids in the items' order."""
    return publish_all(get_producer(), items, _identify_item, batch=batch)


def track_many(items: Iterable[TrackItem], *, batch: int = DEFAULT_BATCH) -> list[str]:
    """Enqueue an event per ``(person_id, name[, data[, timestamp]])``; job ids in order."""
    return publish_all(get_producer(), items, _track_item, batch=batch)


async def aidentify_many(items: Iterable[IdentifyItem], *, batch: int = DEFAULT_BATCH) -> list[str]:
    """:func:`identify_many` in a worker thread (the iterable is consumed in that thread)."""
    return await asyncio.to_thread(identify_many, items, batch=batch)


async def atrack_many(items: Iterable[TrackItem], *, batch: int = DEFAULT_BATCH) -> list[str]:
    """:func:`track_many` in a worker thread (the iterable is consumed in that thread)."""
    return await asyncio.to_thread(track_many, items, batch=batch)
