"""From a job to what goes on the wire: its operations, serialized once, and the way each travels.

Every operation is built as a Track v2 operation (``identifiers.id`` in the body) and serialized
once, as compact UTF-8 (:func:`~cioguard.delivery.customerio.dumps`): those bytes are sized
against Customer.io's limits and those bytes are sent. When the v1 request that does the same
is possible, it is built too, so the pipeline can choose per operation (:func:`route`):

* a v2 batch (``/api/v2/batch``), when batching and the operation is within 32 KB;
* a v1 request (``/api/v1/customers/{id}...``), unbatched, or when the operation is over the v2
  per-operation limit but within the v1 limits (an event with up to 100,000 bytes of data);
* a single v2 request (``/api/v2/entity``), for an id that a v1 path cannot carry faithfully:
  dot segments (``.``/``..``, removed by URL handling), ``cio_...`` (read as a cio_id), an
  e-mail shape (read as an e-mail identifier).

An operation that fits nothing is refused with :class:`OperationTooLargeError` (a dead letter
for that job alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cioguard.broker.jobs import Job
from cioguard.delivery.customerio import dumps
from cioguard.errors import PermanentError

V2_OP_MAX_BYTES = 32_000
V2_BATCH_MAX_BYTES = 500_000
V1_EVENT_DATA_MAX_BYTES = 100_000
Route = Literal["batch", "entity", "v1"]
Action = Literal["identify", "event", "suppress", "delete"]
ERASE_ACTIONS: dict[str, tuple[Action, ...]] = {
    "suppress": ("suppress",),
    "delete": ("delete",),
    "suppress_and_delete": ("suppress", "delete"),
}


class OperationTooLargeError(PermanentError):
    """An operation over every limit it could be sent under."""


@dataclass(frozen=True)
class V1Call:
    """The v1 request equivalent to an operation: method, path suffix after the person, body."""

    method: str
    suffix: str
    body: bytes | None


@dataclass(frozen=True)
class Operation:
    """One operation of one job: its v2 bytes and, if the id can travel in a path, its v1 form."""

    action: Action
    v2: bytes
    v1: V1Call | None


def path_safe(person_id: str) -> bool:
    """Whether ``person_id`` reaches Customer.io unchanged and unreinterpreted in a v1 path."""
    if person_id.strip(".") == "" or person_id.startswith("cio_"):
        return False
    return "@" not in person_id


def build(job: Job, clean: Callable[[Job], dict[str, Any]], erase_mode: str) -> list[Operation]:
    """The operations of ``job``; ``clean`` returns its sanitized attributes or event data."""
    who: dict[str, Any] = {"type": "person", "identifiers": {"id": job.person_id}}
    v1_ok = path_safe(job.person_id)
    if job.kind == "identify":
        attributes = clean(job)
        v1 = V1Call("PUT", "", dumps(attributes)) if v1_ok else None
        return [
            Operation(
                "identify", dumps({**who, "action": "identify", "attributes": attributes}), v1
            )
        ]
    if job.kind == "track":
        return [_event(job, clean(job), who, v1_ok)]
    if job.kind == "delete":
        return [_erase_op(who, action, v1_ok) for action in ERASE_ACTIONS[erase_mode]]
    raise ValueError(f"job kind {job.kind!r} is not delivered by the pipeline")


def _event(job: Job, data: dict[str, Any], who: dict[str, Any], v1_ok: bool) -> Operation:
    # an event without a timestamp would be dated when it arrives, after any backlog or retry
    when = job.timestamp if job.timestamp is not None else int(job.created_at)
    op = {**who, "action": "event", "name": job.name, "id": job.event_id, "timestamp": when,
          "attributes": data}  # fmt: skip
    v1 = None
    if v1_ok and len(dumps(data)) <= V1_EVENT_DATA_MAX_BYTES:
        body = {"name": job.name, "data": data, "id": job.event_id, "timestamp": when}
        v1 = V1Call("POST", "events", dumps(body))
    return Operation("event", dumps(op), v1)


def _erase_op(who: dict[str, Any], action: Action, v1_ok: bool) -> Operation:
    v1 = None
    if v1_ok:
        v1 = V1Call("DELETE", "", None) if action == "delete" else V1Call("POST", action, None)
    return Operation(action, dumps({**who, "action": action}), v1)


def route(op: Operation, *, batching: bool) -> Route:
    """How ``op`` travels; raises :class:`OperationTooLargeError` when nothing fits."""
    fits_v2 = len(op.v2) <= V2_OP_MAX_BYTES
    if batching and fits_v2:
        return "batch"
    if op.v1 is not None:
        return "v1"
    if fits_v2:
        return "entity"
    raise OperationTooLargeError(
        f"{op.action} operation is over {V2_OP_MAX_BYTES} bytes and cannot travel in a v1 path"
    )
