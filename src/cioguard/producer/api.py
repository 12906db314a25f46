"""What application code calls: validate, sanitize, seal, enqueue. No worker needs to run.

Every call validates first and raises ``ValueError``/``TypeError`` naming the problem; a
rejected call enqueues nothing. Sanitizing happens here, in the application process, so dropped
fields never reach Redis; the worker sanitizes again (defense in depth). What is enqueued is a
Fernet token; the task's ``argsrepr`` shows only ``('<sealed>',)``.

Person ids may be ``str`` or ``int`` (sent as the decimal string). The ``a``-prefixed coroutines
(:func:`aidentify`, :func:`atrack`, :func:`adelete_person`, :func:`adeletion_status`) do the same
work in a small thread pool of cioguard's own, so an ``async def`` endpoint never waits on the
broker or the audit store on its event loop, and a broker outage cannot take the loop's default
executor from the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from cioguard.audit.store import AuditStore
from cioguard.broker import failures
from cioguard.broker.celeryconf import DELIVER_TASK, ERASE_TASK, PUBLISH_RETRY_POLICY, build_celery
from cioguard.broker.clients import redis_client
from cioguard.broker.envelope import Envelope
from cioguard.broker.jobs import SEALED_REPR, Job, new_job_id
from cioguard.config import Settings, get_settings
from cioguard.erasure import lift, opening, outbox
from cioguard.erasure import requests as deletions
from cioguard.erasure.tombstones import Tombstones
from cioguard.errors import AuditUnavailableError, BrokerUnavailableError, InvalidInputError
from cioguard.privacy.hashing import person_hash
from cioguard.privacy.policy import load_policy
from cioguard.privacy.sanitizer import Sanitizer
from cioguard.producer import validate

PersonId = str | int
"""A person id as the application has it: a string, or an integer primary key."""
ASYNC_THREADS = 4
"""Threads behind the async functions: enough for a burst of calls while the broker is slow."""
_T = TypeVar("_T")


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
            client = redis_client(
                self.settings.broker_url, socket_connect_timeout=3, socket_timeout=5
            )
            self._tombstones = Tombstones(client, self.audit)
        return self._tombstones

    def identify(self, person_id: PersonId, attributes: Mapping[str, Any]) -> str:
        return self.enqueue(self.prepare_identify(person_id, attributes))

    def prepare_identify(self, person_id: PersonId, attributes: Mapping[str, Any]) -> Job:
        """Validate and sanitize an identify into its job, without enqueuing it (:meth:`enqueue`).

        Lets a framework check the call at once and publish later (Django's ``on_commit``).
        """
        pid = validate.person_id(person_id)
        stamped = validate.timestamp_attributes(attributes)
        clean = self.sanitizer.apply(validate.attributes(stamped))
        return self._job("identify", pid, attributes=clean)

    def track(
        self,
        person_id: PersonId,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        timestamp: int | datetime | None = None,
    ) -> str:
        return self.enqueue(self.prepare_track(person_id, name, data, timestamp=timestamp))

    def prepare_track(
        self,
        person_id: PersonId,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        timestamp: int | datetime | None = None,
    ) -> Job:
        """Validate and sanitize a track into its job, without enqueuing it."""
        pid = validate.person_id(person_id)
        event = validate.event_name(name)
        clean = self.sanitizer.apply(validate.event_data(data), enforce_limits=False)
        when = validate.timestamp(timestamp)
        return self._job("track", pid, name=event, data=clean, timestamp=when)

    def enqueue(self, job: Job) -> str:
        """Publish an identify or track job made by a ``prepare_`` method; returns its id."""
        if job.kind not in ("identify", "track"):
            raise InvalidInputError("only identify and track jobs can be enqueued this way")
        return self._enqueue(job, DELIVER_TASK)

    def delete_person(
        self, person_id: PersonId, *, reason: str = "erasure", manner: str = "api"
    ) -> str:
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
                f"the broker (CIOGUARD_BROKER_URL) {failures.describe(exc)}; "
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
        self.send_sealed(
            sealed, opened.job_id, ERASE_TASK,
            consequence="the deletion request is recorded with its job but not enqueued yet: "
            "workers enqueue it when the broker answers again (after CIOGUARD_REQUEUE_AFTER_S)",
        )  # fmt: skip
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
                f"the lift is recorded, but the broker (CIOGUARD_BROKER_URL) "
                f"{failures.describe(exc)} to clear the tombstone cache: run the lift again"
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

    def send_sealed(
        self,
        sealed: str,
        job_id: str,
        task_name: str,
        *,
        consequence: str = "the job was not enqueued",
    ) -> str:
        try:
            self.celery.send_task(
                task_name, args=[sealed], task_id=job_id, argsrepr=SEALED_REPR, kwargsrepr="{}",
                retry=True, retry_policy=PUBLISH_RETRY_POLICY,
            )  # fmt: skip
        except (OperationalError, OSError, redis.RedisError) as exc:
            raise BrokerUnavailableError(
                f"the broker (CIOGUARD_BROKER_URL) {failures.describe(exc)}; {consequence}"
            ) from None
        return job_id


_installed: list[Producer] = []
_settings_source: list[Callable[[], Settings]] = [get_settings]


@functools.lru_cache(maxsize=1)
def get_producer() -> Producer:
    """The process's producer: the one :func:`use_producer` installed, else one built on first
    use from the settings (the environment, or what :func:`use_settings` chose)."""
    return _installed[-1] if _installed else Producer(_settings_source[-1]())


def use_producer(producer: Producer) -> Producer:
    """Make ``producer`` the one the module functions use (framework integrations, tests)."""
    _installed[:] = [producer]
    get_producer.cache_clear()
    return producer


def use_settings(source: Callable[[], Settings]) -> None:
    """Build the process's producer from ``source()`` on first use (a framework's settings).

    Lazy, so a management command that never enqueues needs no keys.
    """
    _installed.clear()
    _settings_source[:] = [source]
    get_producer.cache_clear()


def current_settings() -> Settings:
    """The settings the module functions use (for the framework integrations' webhook views)."""
    return _installed[-1].settings if _installed else _settings_source[-1]()


def identify(person_id: PersonId, attributes: Mapping[str, Any]) -> str:
    """Enqueue an identify (create/update the person). Returns the job id."""
    return get_producer().identify(person_id, attributes)


def track(
    person_id: PersonId,
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


def delete_person(person_id: PersonId, *, reason: str = "erasure") -> str:
    """Open an erasure request and enqueue it. Returns the deletion request id."""
    return get_producer().delete_person(person_id, reason=reason)


def deletion_status(request_id: str) -> deletions.DeletionStatus:
    """The state and timestamps of an erasure request."""
    return get_producer().deletion_status(request_id)


def sanitize(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the configured sanitization policy (what identify() would enqueue)."""
    return get_producer().sanitizer.apply(validate.attributes(attributes))


# -- async ---------------------------------------------------------------------------------------

_executor_lock = threading.Lock()
_executors: list[ThreadPoolExecutor] = []


def _executor() -> ThreadPoolExecutor:
    with _executor_lock:
        if not _executors:
            _executors.append(
                ThreadPoolExecutor(max_workers=ASYNC_THREADS, thread_name_prefix="cioguard-async")
            )
        return _executors[0]


async def _in_thread(call: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Run ``call`` in cioguard's pool with the caller's context variables, like to_thread."""
    context = contextvars.copy_context()
    bound = functools.partial(context.run, call, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), bound)


async def aidentify(person_id: PersonId, attributes: Mapping[str, Any]) -> str:
    """:func:`identify` without blocking the event loop (same validation, errors and result)."""
    return await _in_thread(identify, person_id, attributes)


async def atrack(
    person_id: PersonId,
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    timestamp: int | datetime | None = None,
) -> str:
    """:func:`track` without blocking the event loop."""
    return await _in_thread(track, person_id, name, data, timestamp=timestamp)


async def adelete_person(person_id: PersonId, *, reason: str = "erasure") -> str:
    """:func:`delete_person` without blocking the event loop."""
    return await _in_thread(delete_person, person_id, reason=reason)


async def adeletion_status(request_id: str) -> deletions.DeletionStatus:
    """:func:`deletion_status` without blocking the event loop."""
    return await _in_thread(deletion_status, request_id)
