"""What the pipeline needs of a Customer.io API: build a job's operations, choose how each
travels, send batches and single requests.

Two implementations: :class:`cioguard.delivery.track_api.TrackApi` (the Track API, v1 and v2)
and the Pipelines API. The pipeline (:mod:`cioguard.delivery.pipeline`) knows only this
interface, so the steps (gate, sanitize, limit, send, settle) and every guarantee are the same
whichever API a workspace uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cioguard.broker.jobs import Job
from cioguard.errors import PermanentError

Route = str
"""How one operation travels: ``"batch"`` (inside a batch request) or a single-request route
the destination names (Track: ``"v1"``)."""
BATCH: Route = "batch"


class OperationTooLargeError(PermanentError):
    """An operation over every limit it could be sent under."""


@dataclass(frozen=True)
class Operation:
    """One operation of one job, serialized once: ``body`` is what a batch carries for it."""

    action: str  # identify, event, suppress, delete
    body: bytes
    single: Any = None  # the destination's own form for a single request, if it has one


@dataclass(frozen=True)
class BatchResult:
    """The answer to a batch: ``failed`` maps a batch index to the API's reason code."""

    status: int
    failed: dict[int, str] = field(default_factory=dict)


class Destination(Protocol):
    """A Customer.io API as the pipeline sees it."""

    name: str
    batch_max_bytes: int
    batch_envelope_bytes: int

    def operations(
        self, job: Job, clean: Callable[[Job], dict[str, Any]], erase_mode: str
    ) -> list[Operation]: ...

    def route(self, op: Operation, *, batching: bool) -> Route: ...

    def batch_body(self, bodies: Sequence[bytes]) -> bytes: ...

    def post_batch(self, body: bytes) -> BatchResult: ...

    def post_single(self, job: Job, op: Operation, route: Route) -> int: ...
