"""The Track API as a destination: a job's operations, serialized once, and how each travels.

Every operation is built as a Track v2 operation (``identifiers.id`` in the body) and serialized
once, as compact UTF-8 (:func:`~cioguard.delivery.customerio.dumps`): those bytes are sized
against Customer.io's limits and those bytes are sent. When the v1 request that does the same
is possible, it is built too, so the pipeline can choose per operation (:meth:`TrackApi.route`):

* a v2 batch (``/api/v2/batch``), when batching and the operation is within 32 KB, and also
  unbatched (a batch of one) for an id that a v1 path cannot carry faithfully: dot segments
  (``.``/``..``, removed by URL handling), ``cio_...`` (read as a cio_id), an e-mail shape (read
  as an e-mail identifier);
* a v1 request (``/api/v1/customers/{id}...``), unbatched, or when the operation is over the v2
  per-operation limit but within the v1 limits (an event with up to 100,000 bytes of data).

Note: a batch of one rather than ``/api/v2/entity`` for the unbatched case: the same operation
bytes and limits (32 KB), and a 207 names a refused operation exactly like in a larger batch.

An operation that fits nothing is refused with :class:`OperationTooLargeError` (a dead letter
for that job alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cioguard.broker.jobs import Job
from cioguard.delivery.customerio import (
    BATCH_ENVELOPE_BYTES,
    TrackClient,
    batch_body,
    dumps,
)
from cioguard.delivery.destination import (
    BATCH,
    BatchResult,
    Operation,
    OperationTooLargeError,
    Route,
)

V2_OP_MAX_BYTES = 32_000
V2_BATCH_MAX_BYTES = 500_000
V1_EVENT_DATA_MAX_BYTES = 100_000
V1: Route = "v1"
ERASE_ACTIONS: dict[str, tuple[str, ...]] = {
    "suppress": ("suppress",),
    "delete": ("delete",),
    "suppress_and_delete": ("suppress", "delete"),
}


@dataclass(frozen=True)
class V1Call:
    """The v1 request equivalent to an operation: method, path suffix after the person, body.

    ``payload`` is serialized only if the v1 request is sent (:attr:`body`): a batched
    operation never is, and serializing it for nothing was a second ``json.dumps`` per person.
    """

    method: str
    suffix: str
    payload: dict[str, Any] | None

    @cached_property
    def body(self) -> bytes | None:
        return None if self.payload is None else dumps(self.payload)


def path_safe(person_id: str) -> bool:
    """Whether ``person_id`` reaches Customer.io unchanged and unreinterpreted in a v1 path."""
    if person_id.strip(".") == "" or person_id.startswith("cio_"):
        return False
    return "@" not in person_id


class TrackApi:
    """The Track API (``track.customer.io``) behind :class:`~cioguard.delivery.destination.
    Destination`."""

    name = "track"
    batch_max_bytes = V2_BATCH_MAX_BYTES
    batch_envelope_bytes = BATCH_ENVELOPE_BYTES

    def __init__(self, client: TrackClient) -> None:
        self.client = client

    def operations(
        self, job: Job, clean: Callable[[Job], dict[str, Any]], erase_mode: str
    ) -> list[Operation]:
        """The operations of ``job``; ``clean`` returns its sanitized attributes or event data."""
        who: dict[str, Any] = {"type": "person", "identifiers": {"id": job.person_id}}
        v1_ok = path_safe(job.person_id)
        if job.kind == "identify":
            attributes = clean(job)
            v1 = V1Call("PUT", "", attributes) if v1_ok else None
            op = {**who, "action": "identify", "attributes": attributes}
            return [Operation("identify", dumps(op), v1)]
        if job.kind == "track":
            return [_event(job, clean(job), who, v1_ok)]
        if job.kind == "delete":
            return [_erase_op(who, action, v1_ok) for action in ERASE_ACTIONS[erase_mode]]
        if job.kind == "unsuppress":  # a lifted tombstone (cioguard.erasure.lift)
            return [_erase_op(who, "unsuppress", v1_ok)]
        raise ValueError(f"job kind {job.kind!r} is not delivered by the pipeline")

    def route(self, op: Operation, *, batching: bool) -> Route:
        """How ``op`` travels; raises :class:`OperationTooLargeError` when nothing fits."""
        fits_v2 = len(op.body) <= V2_OP_MAX_BYTES
        if fits_v2 and (batching or op.single is None):
            return BATCH
        if op.single is not None:
            return V1
        raise OperationTooLargeError(
            f"{op.action} operation is over {V2_OP_MAX_BYTES} bytes and cannot travel in a v1 path"
        )

    def batch_body(self, bodies: Sequence[bytes]) -> bytes:
        return batch_body(bodies)

    def post_batch(self, body: bytes) -> BatchResult:
        return self.client.post_batch(body)

    def post_single(self, job: Job, op: Operation, route: Route) -> int:
        """One operation alone, as its v1 request (a 404 counts as done only there: the path
        named exactly this person)."""
        if route != V1:
            raise ValueError(f"route {route!r} is not a single request")
        call: V1Call = op.single
        url = self.client.v1_url(job.person_id, call.suffix)
        return self.client.send(op.action, call.method, url, call.body).status_code


def _event(job: Job, data: dict[str, Any], who: dict[str, Any], v1_ok: bool) -> Operation:
    # an event without a timestamp would be dated when it arrives, after any backlog or retry
    when = job.timestamp if job.timestamp is not None else int(job.created_at)
    op = {**who, "action": "event", "name": job.name, "id": job.event_id, "timestamp": when,
          "attributes": data}  # fmt: skip
    body = dumps(op)
    v1 = None
    # the data is inside the operation's bytes: only a larger operation needs the data measured
    if v1_ok and (len(body) <= V1_EVENT_DATA_MAX_BYTES or _v1_data_fits(data)):
        payload = {"name": job.name, "data": data, "id": job.event_id, "timestamp": when}
        v1 = V1Call("POST", "events", payload)
    return Operation("event", body, v1)


def _v1_data_fits(data: dict[str, Any]) -> bool:
    return len(dumps(data)) <= V1_EVENT_DATA_MAX_BYTES


def _erase_op(who: dict[str, Any], action: str, v1_ok: bool) -> Operation:
    v1 = None
    if v1_ok:
        v1 = V1Call("DELETE", "", None) if action == "delete" else V1Call("POST", action, None)
    return Operation(action, dumps({**who, "action": action}), v1)
