"""A test mode for applications: record what cioguard would have queued, without a broker.

In an application's own tests::

    from cioguard.testing import recording

    def test_sign_up_tells_customerio(client):
        with recording() as cio:
            client.post("/sign-up", data={"email": "ada@example.com"})
        [call] = cio.calls
        assert call.kind == "identify" and call.person_hash == cio.person_hash(42)
        assert call.attributes["email"] == "ada@example.com"

or, with pytest, the ``cioguard_recorder`` fixture (:mod:`cioguard.testing.plugin`, registered as a
pytest plugin when cioguard is installed).

While recording, :func:`cioguard.identify`, :func:`cioguard.track`, :func:`cioguard.delete_person`
(and the async ones, and the framework integrations, which call them) run the real validation and
the real sanitization policy, then record the job instead of publishing it. What is recorded is
what the worker would get: the keyed person hash (never the raw id), the sanitized attributes or
event data. Deletion requests are opened in a throwaway SQLite audit store, so
:func:`cioguard.deletion_status` answers as in production. No broker is contacted: the broker URL is
an unroutable placeholder, so a code path that tried would fail loudly.

Keys come from ``CIOGUARD_HASH_KEY``/``CIOGUARD_PAYLOAD_KEY`` when the environment sets them, else
fresh random ones for the recording; ``CIOGUARD_POLICY`` is honoured.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cioguard.broker.envelope import new_key
from cioguard.broker.jobs import Job
from cioguard.config import Settings
from cioguard.privacy.hashing import person_hash
from cioguard.producer import api
from cioguard.producer.api import PersonId, Producer
from cioguard.producer.validate import person_id as checked_person_id

PLACEHOLDER_BROKER = "redis://cioguard-testing.invalid:6379/0"


@dataclass(frozen=True)
class RecordedCall:
    """One job the application enqueued: what the worker would have received."""

    kind: str
    """``identify``, ``track`` or ``delete``."""
    person_hash: str
    job_id: str
    attributes: dict[str, Any] | None = None
    """The sanitized attributes of an identify."""
    name: str | None = None
    """The event name of a track."""
    data: dict[str, Any] | None = None
    """The sanitized event data of a track."""
    timestamp: int | None = None
    request_id: str | None = None
    """The deletion request id of a delete."""


@dataclass
class Recorder:
    """The calls made while :func:`recording` is active, in order."""

    producer: Producer
    calls: list[RecordedCall] = field(default_factory=list)
    erased: set[str] = field(default_factory=set)
    """Person hashes tombstoned by ``delete_person``."""

    def person_hash(self, person_id: PersonId) -> str:
        """The keyed hash the calls carry for ``person_id`` (an int id as its decimal string)."""
        return person_hash(self.producer.hash_key, checked_person_id(person_id))

    def calls_for(self, person_id: PersonId, kind: str | None = None) -> list[RecordedCall]:
        """The calls about one person, optionally of one kind."""
        wanted = self.person_hash(person_id)
        return [c for c in self.calls if c.person_hash == wanted and kind in (None, c.kind)]

    def clear(self) -> None:
        self.calls.clear()


class RecordingProducer(Producer):
    """A :class:`Producer` whose enqueue and tombstone steps record instead of using Redis."""

    recorder: Recorder

    def send_sealed(
        self, sealed: str, job_id: str, task_name: str, *, consequence: str = ""
    ) -> str:
        """Record the job instead of publishing it: every path (identify, track, erasure,
        bulk) ends here with the sealed job, which is opened again to record what it holds."""
        job = Job.from_payload(self.envelope.open(sealed))
        self.recorder.calls.append(
            RecordedCall(
                kind=job.kind, person_hash=job.person_hash, job_id=job.job_id,
                attributes=job.attributes, name=job.name, data=job.data,
                timestamp=job.timestamp, request_id=job.request_id,
            )
        )  # fmt: skip
        return job_id

    def _mark_erased(self, hashed: str) -> None:
        self.recorder.erased.add(hashed)


def recording_settings(audit_dir: Path) -> Settings:
    """Settings for a recording: the environment's keys and policy, a throwaway audit store."""
    values: dict[str, Any] = {
        "CIOGUARD_HASH_KEY": os.environ.get("CIOGUARD_HASH_KEY") or secrets.token_urlsafe(48),
        "CIOGUARD_PAYLOAD_KEY": os.environ.get("CIOGUARD_PAYLOAD_KEY") or new_key(),
        "CIOGUARD_BROKER_URL": PLACEHOLDER_BROKER,
        "CIOGUARD_AUDIT_URL": f"sqlite:///{audit_dir / 'audit.db'}",
    }
    return Settings(**values)


@contextmanager
def recording(settings: Settings | None = None) -> Iterator[Recorder]:
    """Record every cioguard call made inside the block; the previous producer comes back after.

    Pass ``settings`` to choose the keys or policy yourself (its broker is never contacted).
    """
    previous = list(api._installed)
    with tempfile.TemporaryDirectory(prefix="cioguard-testing-") as tmp:
        chosen = settings or recording_settings(Path(tmp))
        producer = RecordingProducer(chosen)
        recorder = Recorder(producer=producer)
        producer.recorder = recorder
        api.use_producer(producer)
        try:
            yield recorder
        finally:
            api._installed[:] = previous
            api.get_producer.cache_clear()
            if producer._audit is not None:
                producer._audit.dispose()
            producer.celery.close()


__all__ = ["RecordedCall", "Recorder", "RecordingProducer", "recording"]
