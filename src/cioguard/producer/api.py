"""What application code calls: validate, sanitize, seal, enqueue. No worker needs to run.

Every call validates first and raises ``ValueError``/``TypeError`` naming the problem; a
rejected call enqueues nothing. Sanitizing happens here, in the application process, so dropped
fields never reach Redis; the worker sanitizes again (defense in depth). What is enqueued is a
Fernet token; the task's ``argsrepr`` shows only ``('<sealed>',)``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from cioguard.audit.store import AuditStore
from cioguard.broker.celeryconf import DELIVER_TASK, ERASE_TASK, PUBLISH_RETRY_POLICY, build_celery
from cioguard.broker.envelope import Envelope
from cioguard.broker.jobs import SEALED_REPR, Job, new_job_id
from cioguard.config import Settings, get_settings
from cioguard.erasure import lift, opening, outbox
from cioguard.erasure import requests as deletions
from cioguard.erasure.tombstones import Tombstones
from cioguard.errors import AuditUnavailableError, BrokerUnavailableError
from cioguard.privacy.hashing import person_hash
from cioguard.privacy.policy import load_policy
from cioguard.privacy.sanitizer import Sanitizer
from cioguard.producer import validate


class Producer:
    """Builds and enqueues jobs. One per application process (see :func:`get_producer`)."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        settings.require_application()
        self.settings = settings
        self.hash_key = settings.hash_key_bytes()
        policy = load_policy(settings.policy_path)
        self.policy_version = policy.version
        self.sanitizer = Sanitizer(policy, self.hash_key)
        self.envelope = Envelope(settings.payload_keys())
        self.celery = celery or build_celery(settings, "cioguard-producer")
        self._audit: AuditStore | None = None
        self._tombstones: Tombstones | None = None

    @property
    def audit(self) -> AuditStore:
        if self._audit is None:
            self._audit = AuditStore.from_url(self.settings.audit_url)
            self._audit.migrate()
        return self._audit

    @property
    def tombstones(self) -> Tombstones:
        if self._tombstones is None:
            client = redis.Redis.from_url(
                self.settings.broker_url, socket_connect_timeout=3, socket_timeout=5
            )
            self._tombstones = Tombstones(client, self.audit)
        return self._tombstones

    def identify(self, person_id: str, attributes: Mapping[str, Any]) -> str:
        pid = validate.person_id(person_id)
        stamped = validate.timestamp_attributes(attributes)
        clean = self.sanitizer.apply(validate.attributes(stamped))
        return self._enqueue(self._job("identify", pid, attributes=clean), DELIVER_TASK)

    def track(
        self,
        person_id: str,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        timestamp: int | datetime | None = None,
    ) -> str:
        pid = validate.person_id(person_id)
        event = validate.event_name(name)
        clean = self.sanitizer.apply(validate.event_data(data), enforce_limits=False)
        when = validate.timestamp(timestamp)
        job = self._job("track", pid, name=event, data=clean, timestamp=when)
        return self._enqueue(job, DELIVER_TASK)

    def delete_person(self, person_id: str, *, reason: str = "erasure", manner: str = "api") -> str:
        """Record the request (tombstone and sealed job with it), then enqueue; its request id.

        If the broker is down, :class:`BrokerUnavailableError` is raised but the request is
        safe: it is recorded with its sealed job (the outbox) and workers publish it within
        ``CIOGUARD_REQUEUE_AFTER_S`` of the broker coming back (or ``cioguard deletions
        requeue``). Calling again is also safe: the open request is reused.
        """
        pid = validate.person_id(person_id)
        why = validate.reason(reason)
        how = validate.manner(manner)
        hashed = person_hash(self.hash_key, pid)
        opened = opening.open_request(
            self.audit, hashed, reason=why, manner=how, mode=self.settings.deletion_mode,
            seal=self.erase_sealer({hashed: pid}),
        )  # fmt: skip
        self._mark_erased(hashed)
        if opened.state == "received":
            self.publish_erasure(opened, pid)
        return opened.request_id

    def _mark_erased(self, hashed: str) -> None:
        """Tombstone in Redis now, so jobs already queued are dropped even before the erase runs."""
        try:
            self.tombstones.add(hashed)
        except (redis.RedisError, OSError) as exc:
            raise BrokerUnavailableError(
                f"the broker (CIOGUARD_BROKER_URL) did not answer ({type(exc).__name__}); "
                "the deletion request is recorded with its job but not enqueued yet: workers "
                "enqueue it when the broker answers again (after CIOGUARD_REQUEUE_AFTER_S)"
            ) from None

    def erase_sealer(self, ids_by_hash: Mapping[str, str]) -> opening.Sealer:
        """Seals the erase job of each new request (for the outbox), from its person's id."""

        def seal(hashed: str, opened: opening.OpenedRequest, erasure: dict[str, Any]) -> str:
            job = Job(
                job_id=opened.job_id, kind="delete", person_id=ids_by_hash[hashed],
                person_hash=hashed, policy_version=self.policy_version,
                request_id=opened.request_id, erasure=erasure,
            )  # fmt: skip
            return self.envelope.seal(job.to_payload())

        return seal

    def publish_erasure(self, opened: opening.OpenedRequest, pid: str) -> None:
        """Publish a ``received`` request's erase job (from the outbox when it has one)."""
        sealed = opened.sealed
        if sealed is None:  # a request recorded before requests kept their job
            hashed = person_hash(self.hash_key, pid)
            sealed = self.erase_sealer({hashed: pid})(hashed, opened, {})
        try:
            self.send_sealed(sealed, opened.job_id, ERASE_TASK)
        except BrokerUnavailableError:
            raise BrokerUnavailableError(
                "the broker (CIOGUARD_BROKER_URL) did not answer; the deletion request is "
                "recorded with its job but not enqueued yet: workers enqueue it when the broker "
                "answers again (after CIOGUARD_REQUEUE_AFTER_S)"
            ) from None
        with contextlib.suppress(AuditUnavailableError):  # at worst a second copy is published
            outbox.mark_published(self.audit, [opened.request_id])

    def lift_erasure(self, request_id: str, person_id: str, *, reason: str) -> str:
        """Lift a completed erasure's tombstone (the person came back); returns the request id.

        ``person_id`` proves the caller knows whom the request erased (its keyed hash must
        match). When the erasure suppressed the person, Customer.io's unsuppress is enqueued
        too, so later identify/track calls are not ignored there.
        """
        pid = validate.person_id(person_id)
        hashed = person_hash(self.hash_key, pid)
        status = lift.lift(self.audit, request_id, person_hash=hashed, reason=reason)
        try:
            self.tombstones.remove(hashed)
        except (redis.RedisError, OSError) as exc:
            raise BrokerUnavailableError(
                f"the lift is recorded, but the broker (CIOGUARD_BROKER_URL) did not answer "
                f"({type(exc).__name__}) to clear the tombstone cache: run the lift again"
            ) from None
        if status.mode in ("suppress", "suppress_and_delete"):
            self._enqueue(self._job("unsuppress", pid), DELIVER_TASK)
        return request_id

    def deletion_status(self, request_id: str) -> deletions.DeletionStatus:
        if not isinstance(request_id, str) or not request_id:
            raise TypeError("request_id must be a non-empty str")
        status = deletions.get_status(self.audit, request_id)
        if status is None:
            raise LookupError(f"no deletion request with id {request_id}")
        return status

    def _job(self, kind: Any, pid: str, **fields: Any) -> Job:
        return Job(
            job_id=new_job_id(), kind=kind, person_id=pid,
            person_hash=person_hash(self.hash_key, pid), policy_version=self.policy_version,
            **fields,
        )  # fmt: skip

    def _enqueue(self, job: Job, task_name: str) -> str:
        return self.send_sealed(self.envelope.seal(job.to_payload()), job.job_id, task_name)

    def send_sealed(self, sealed: str, job_id: str, task_name: str) -> str:
        try:
            self.celery.send_task(
                task_name, args=[sealed], task_id=job_id, argsrepr=SEALED_REPR, kwargsrepr="{}",
                retry=True, retry_policy=PUBLISH_RETRY_POLICY,
            )  # fmt: skip
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailableError(
                f"the broker (CIOGUARD_BROKER_URL) did not answer ({type(exc).__name__}); "
                "the job was not enqueued"
            ) from None
        return job_id


@functools.lru_cache(maxsize=1)
def get_producer() -> Producer:
    return Producer(get_settings())


def identify(person_id: str, attributes: Mapping[str, Any]) -> str:
    """Enqueue an identify (create/update the person). Returns the job id."""
    return get_producer().identify(person_id, attributes)


def track(
    person_id: str,
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    timestamp: int | datetime | None = None,
) -> str:
    """Enqueue an event for a person. Returns the job id (also the event's dedupe id).

    ``timestamp`` is whole Unix seconds or a datetime; without one the event is dated now, at the
    call, not when it reaches Customer.io.
    """
    return get_producer().track(person_id, name, data, timestamp=timestamp)


def delete_person(person_id: str, *, reason: str = "erasure") -> str:
    """Open an erasure request and enqueue it. Returns the deletion request id."""
    return get_producer().delete_person(person_id, reason=reason)


def deletion_status(request_id: str) -> deletions.DeletionStatus:
    """The state and timestamps of an erasure request."""
    return get_producer().deletion_status(request_id)


def sanitize(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the configured sanitization policy (what identify() would enqueue)."""
    return get_producer().sanitizer.apply(validate.attributes(attributes))
