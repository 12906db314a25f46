"""The job: what one unit of work carries, from the application to the worker.

A job travels sealed (see :mod:`cioguard.broker.envelope`); only its id and kind are ever visible
outside the ciphertext. Job ids are ULIDs, so an event's deduplication id at Customer.io can be
the job id itself: the same job, retried, always posts the same event id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ulid import ULID

Kind = Literal["identify", "track", "delete", "unsuppress"]
PAYLOAD_VERSION = 1
SEALED_REPR = "('<sealed>',)"  # what Celery events, logs and Flower show as the args


def new_job_id() -> str:
    """A fresh ULID string: time-ordered, unique, safe to show (it identifies no one)."""
    return str(ULID())


@dataclass(frozen=True, repr=False)
class Job:
    """One identify, track or delete for one person. Its ``repr`` is :meth:`redacted`: a job
    in a log line, a traceback or a debugger shows its kind and id, never its person or data."""

    job_id: str
    kind: Kind
    person_id: str
    person_hash: str
    created_at: float = field(default_factory=time.time)
    policy_version: str = ""
    attributes: dict[str, Any] | None = None
    name: str | None = None
    data: dict[str, Any] | None = None
    timestamp: int | None = None
    request_id: str | None = None
    original_event_id: str | None = None  # kept when a dead letter is replayed under a new id
    erasure: dict[str, Any] | None = None
    """An erase job's request as recorded by the application (regime, reason, manner, mode,
    received_at, due_at): a worker whose audit store does not know the request records it from
    here, so erasure never depends on both processes sharing one store."""

    @property
    def event_id(self) -> str:
        """The deterministic event id Customer.io deduplicates on: the (first) job's ULID."""
        return self.original_event_id or self.job_id

    def to_payload(self) -> dict[str, Any]:
        """The fields to seal; those left at ``None`` are left out (the worker's defaults give
        them back), which makes an identify's token a fifth smaller on every hop."""
        payload: dict[str, Any] = {"v": PAYLOAD_VERSION}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None or name not in _OMITTED_WHEN_NONE:
                payload[name] = value
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Job:
        data = dict(payload)
        if data.pop("v", None) != PAYLOAD_VERSION:
            raise ValueError("payload version is not supported by this worker")
        return cls(**data)

    def __repr__(self) -> str:
        return self.redacted()

    def redacted(self) -> str:
        """The form shown in Celery's argsrepr, Flower and logs."""
        return f"<{self.kind} job {self.job_id}>"


_FIELDS = tuple(f.name for f in fields(Job))
_OMITTED_WHEN_NONE = frozenset(f.name for f in fields(Job) if f.default is None)
