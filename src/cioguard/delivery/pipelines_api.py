"""The Customer.io Data Pipelines API as a destination: a job's calls, serialized once.

The mapping (``customerio-pipelines-openapi.json``, schemas ``identify``, ``track``, ``batch``):

* ``identify`` -> ``{"type":"identify","userId":...,"traits":{...}}``;
* ``track`` -> ``{"type":"track","userId":...,"event":...,"properties":{...}}``, with the
  ``timestamp`` of the call (ISO-8601, UTC: the producer's timestamp, else when the job was
  created, so a backlog or a retry does not re-date the event) and ``messageId`` = the job's
  event id (its ULID, kept across dead-letter replays): Pipelines deduplicates on ``messageId``,
  so a redelivered job is one event, not two;
* an erasure -> Customer.io's semantic events for people, ``track`` calls with a reserved event
  name: ``User Suppressed`` (deletes the person and blocks the id) and ``User Deleted`` (deletes
  the person), in the modes of ``CIOGUARD_DELETION_MODE`` (suppress, delete, suppress then
  delete). Names and shapes: Customer.io, "Customer.io events" (Pipelines API semantic events),
  https://docs.customer.io/integrations/data-in/semantic-events/cio-journeys/ and the
  ``delete_person`` / ``suppress_person`` schemas of the spec (``semantic-cio.json``). Each
  carries its own ``messageId`` (job id + action) so the second call of a job is not taken
  for a duplicate of the first.

Every call is serialized once as compact UTF-8 (:func:`~cioguard.delivery.customerio.dumps`):
those bytes are sized and sent, alone (``/v1/identify``, ``/v1/track``) or in ``/v1/batch``.
The limits are hard because over them the API answers 200 and drops the request: a call is at
most 32,000 bytes, a batch body at most 500,000 (decimal "KB": the stricter reading, as the
sandbox's). A call over 32,000 bytes fits nothing and is refused
(:class:`~cioguard.delivery.destination.OperationTooLargeError`, a dead letter for that job).

Answers (strict mode, ``X-Strict-Mode: 1`` on every request): 2xx accepted; 400 (an invalid
call) permanent; 401/403 credentials (the worker re-reads its secret source once); 408, 429 and
5xx retryable. A batch has no per-call result: a 400 refuses it whole, and the pipeline then
sends each item on its own, so one bad person never fails the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cioguard.broker.jobs import Job
from cioguard.delivery.customerio import BATCH_ENVELOPE_BYTES, batch_body, dumps
from cioguard.delivery.destination import (
    BATCH,
    BatchResult,
    Operation,
    OperationTooLargeError,
    Route,
)
from cioguard.delivery.pipelines_client import PipelinesClient

CALL_MAX_BYTES = 32_000
BATCH_MAX_BYTES = 500_000
SINGLE: Route = "single"
SEMANTIC_EVENTS: dict[str, str] = {"suppress": "User Suppressed", "delete": "User Deleted"}
ERASE_ACTIONS: dict[str, tuple[str, ...]] = {
    "suppress": ("suppress",),
    "delete": ("delete",),
    "suppress_and_delete": ("suppress", "delete"),
}
ENDPOINTS = {"identify": "identify", "event": "track", "suppress": "track", "delete": "track"}


def iso8601(seconds: float) -> str:
    """``2026-12-03T00:27:09.123Z``: UTC, millisecond precision, as Customer.io's examples."""
    when = datetime.fromtimestamp(seconds, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PipelinesApi:
    """The Data Pipelines API (``cdp.customer.io``) behind :class:`~cioguard.delivery.
    destination.Destination`."""

    name = "pipelines"
    batch_max_bytes = BATCH_MAX_BYTES
    batch_envelope_bytes = BATCH_ENVELOPE_BYTES

    def __init__(self, client: PipelinesClient) -> None:
        self.client = client

    def operations(
        self, job: Job, clean: Callable[[Job], dict[str, Any]], erase_mode: str
    ) -> list[Operation]:
        """The calls of ``job``; ``clean`` returns its sanitized attributes or event data."""
        who = {"userId": job.person_id}
        if job.kind == "identify":
            traits = {"type": "identify", **who, "traits": clean(job)}
            stamp = {"messageId": job.job_id, "timestamp": iso8601(job.created_at)}
            return [Operation("identify", dumps({**traits, **stamp}))]
        if job.kind == "track":
            when = job.timestamp if job.timestamp is not None else job.created_at
            event = {"type": "track", **who, "event": job.name, "properties": clean(job)}
            stamp = {"messageId": job.event_id, "timestamp": iso8601(when)}
            return [Operation("event", dumps({**event, **stamp}))]
        if job.kind == "delete":
            return [_erasure(job, action) for action in ERASE_ACTIONS[erase_mode]]
        raise ValueError(f"job kind {job.kind!r} is not delivered by the pipeline")

    def route(self, op: Operation, *, batching: bool) -> Route:
        """In a batch when batching, else alone; over 32,000 bytes it fits neither."""
        if len(op.body) > CALL_MAX_BYTES:
            raise OperationTooLargeError(
                f"{op.action} call is over {CALL_MAX_BYTES} bytes, the Pipelines API limit"
            )
        return BATCH if batching else SINGLE

    def batch_body(self, bodies: Sequence[bytes]) -> bytes:
        """``{"batch":[...]}``; the pipeline's chunking keeps it within ``batch_max_bytes``."""
        return batch_body(bodies)

    def post_batch(self, body: bytes) -> BatchResult:
        """``POST /v1/batch``: 200 for all calls, or an error for all of them."""
        return BatchResult(status=self.client.send("pipelines batch", "batch", body).status_code)

    def post_single(self, job: Job, op: Operation, route: Route) -> int:
        """One call alone: ``/v1/identify`` or ``/v1/track`` (semantic events too)."""
        if route != SINGLE:
            raise ValueError(f"route {route!r} is not a single request")
        endpoint = ENDPOINTS[op.action]
        return self.client.send(f"pipelines {op.action}", endpoint, op.body).status_code


def _erasure(job: Job, action: str) -> Operation:
    # no timestamp: an erasure takes effect when Customer.io receives it, never back-dated
    call = {"type": "track", "userId": job.person_id, "event": SEMANTIC_EVENTS[action],
            "messageId": f"{job.job_id}-{action}"}  # fmt: skip
    return Operation(action, dumps(call))
