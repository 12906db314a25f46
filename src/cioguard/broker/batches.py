"""celery-batches with per-message task events, sent from the consumer like Celery's own.

``celery_batches.Batches`` runs a buffer as one pool job and sends no task events, so Flower
would show nothing of a batching worker. :class:`ReportingBatches` overrides ``flush`` (the one
place that sees both the consumer's requests and the batch's result) to send ``task-received``,
``task-started`` and ``task-succeeded``/``task-retried`` for each message through
``Request.send_event``, which honours whether events are on (Flower switches them on) exactly as
for unbatched tasks. Arguments are the redacted ``argsrepr`` of each message.

Celery buffers task events and publishes them as one ``task.multi`` message per loop turn or
per :data:`EVENT_BUFFER_LIMIT` events, whichever comes first; its default limit (24) is made for
one task at a time and turned a batch's 300 events into a dozen publishes, a third of the
consumer's CPU. A batching worker raises the limit so each turn's events leave in one publish
(what Flower receives is unchanged: the same events, in order, in ``task.multi`` messages).

Every cioguard task acknowledges late: ``flush`` acknowledges a message when the batch function
has returned an outcome for it (finished, or re-published to run again). A message without one
(the function failed, or re-publishing failed: ``NOT_SETTLED``) is handed back to the back of its
queue at once (``reject(requeue=True)``, kombu's atomic restore), and so is every message of a
batch whose pool child died (OOM killer, segfault, kill -9): billiard reports that only to an
``error_callback``, which celery-batches does not pass. Either way the prefetch slots are freed.
If the hand-back itself fails (Redis unreachable, or at ``maxmemory``), the message stays
unacknowledged and owned by this worker: handed back by :mod:`cioguard.broker.ownership` if the
worker dies, else after the visibility timeout: late, never lost. A batch's acknowledgements
reach Redis in one round trip (:func:`cioguard.broker.transport.acks_in_one_round_trip`).

After a lost broker connection (a Redis restart, a Sentinel failover) the consumer restarts on a
new connection, and :class:`ForgetBuffersOnRestart` empties the buffers of the old one. Without
it the worker stalls: Celery's event loop clears its timer when the connection drops, which drops
celery-batches' flush timer without resetting its handle, so the timer never starts again and a
buffer is flushed only when it fills: the last messages (fewer than ``flush_every``) wait in it
for good, owned by a live consumer, so neither the ownership sweep nor (for 900 s) the visibility
timeout hands them back. The buffered messages belong to the old channel (Celery drops its own
reserved requests on restart for that reason); its close, or the ownership sweep of its token,
hands them back to the queue, so dropping them loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from itertools import count
from time import monotonic
from typing import Any

from celery import bootsteps
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest, consume_queue
from celery_batches.trace import apply_batches_task

from cioguard.broker.transport import acks_in_one_round_trip

log = logging.getLogger("cioguard.broker.batches")

EVENT_BUFFER_LIMIT = 1000
"""Task events held for one publish per event-loop turn (a few batches' worth)."""

NOT_SETTLED = "not_settled"
"""An outcome meaning "neither finished nor re-published": the message must not be acknowledged."""


class ReportingBatches(Batches):  # type: ignore[misc]
    """A ``Batches`` task that reports each buffered message to monitoring as its own task."""

    def flush(self, requests: Collection[Request]) -> Any:
        reqs = list(requests)
        _widen_event_buffer(reqs[0])
        for req in reqs:
            _received(req)
        started = monotonic()

        def on_accepted(pid: int, time_accepted: float) -> None:
            for req in reqs:
                req.send_event("task-started")

        def on_return(result: Any) -> None:
            outcomes: Sequence[Any] = result if isinstance(result, list) else []
            runtime = monotonic() - started
            unsettled = []
            with acks_in_one_round_trip(reqs[0].message.channel):
                for index, req in enumerate(reqs):
                    outcome = outcomes[index] if index < len(outcomes) else None
                    if outcome is None or outcome == NOT_SETTLED:
                        unsettled.append(req)
                        continue
                    kind = "task-retried" if outcome == "retrying" else "task-succeeded"
                    req.send_event(kind, result=repr(outcome), runtime=runtime)
                    _acknowledge_now(req)
            hand_back(unsettled, "not settled")

        def on_error(exc: Any) -> None:  # the pool child died (WorkerLostError) or similar
            hand_back(reqs, "pool process lost")

        batch = ([SimpleRequest.from_request(r) for r in reqs],)
        return self._pool.apply_async(
            apply_batches_task,
            (self, batch, 0, None),
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=on_error,
        )

    def forget_buffers(self) -> int:
        """Empty the buffers and forget the flush timer (see the module docstring); returns how
        many requests were dropped."""
        dropped = len(list(consume_queue(self._buffer))) + len(list(consume_queue(self._pending)))
        tref: Any = getattr(self, "_tref", None)
        self._tref = None
        if tref is not None:
            tref.cancel()
        self._count = count(1)
        return dropped


class ForgetBuffersOnRestart(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: each time the consumer (re)starts, before it consumes, every batching
    task forgets what it buffered from the previous connection (see the module docstring)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        dropped = 0
        for task in c.app.tasks.values():
            if isinstance(task, ReportingBatches):
                dropped += task.forget_buffers()
        if dropped:
            log.warning(
                "dropped %d buffered messages of the lost connection: they go back to the queue",
                dropped,
            )


def _widen_event_buffer(req: Request) -> None:
    """Let the consumer's event dispatcher hold a few batches of events per publish."""
    dispatcher = getattr(req, "_eventer", None)
    if dispatcher is not None and dispatcher.buffer_limit < EVENT_BUFFER_LIMIT:
        dispatcher.buffer_limit = EVENT_BUFFER_LIMIT


def _acknowledge_now(req: Request) -> None:
    """``Request.acknowledge`` schedules the ack for the event loop's next turn, one Redis call
    each; ``on_return`` already runs in the event loop, so ack here, inside the batch's one round
    trip (a connection error leaves the messages unacknowledged: they come back, late)."""
    if not req.acknowledged:
        req.message.ack()
        req.acknowledged = True


def hand_back(reqs: Sequence[Request], why: str) -> int:
    """Put each message back at the end of its queue now and free its prefetch slot; returns how
    many went back. One that cannot go back (Redis unreachable or out of memory) stays
    unacknowledged and owned, so nothing is lost (see the module docstring)."""
    back = 0
    for req in reqs:
        if req.acknowledged:
            continue
        try:
            req.message.reject(requeue=True)
        except Exception as exc:  # kombu's restore is atomic: nothing half-done
            log.warning("could not hand a message back (%s): %s", why, type(exc).__name__)
            continue
        req.acknowledged = True
        req.send_event("task-rejected", requeue=True)
        back += 1
    if back:
        log.warning("handed %d messages back to the queue: %s", back, why)
    return back


def _received(req: Request) -> None:
    req.send_event(
        "task-received", name=req.name, args=req.argsrepr, kwargs=req.kwargsrepr,
        retries=req.request_dict.get("retries", 0), eta=req.eta and req.eta.isoformat(),
    )  # fmt: skip
