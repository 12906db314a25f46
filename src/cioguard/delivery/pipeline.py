"""The worker's steps for one job, as named functions: check -> sanitize -> limit -> send -> record.

Celery-free on purpose: tasks.py wires these to Celery, and tests can drive them directly.
Every path ends in exactly one final audit row per job (``has_final`` makes a re-run after a
crash a no-op), or raises :class:`RetryableError` / :class:`AuditUnavailableError` so the task
retries: a job never finishes unrecorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from cioguard.audit.store import AuditEntry
from cioguard.broker.jobs import Job
from cioguard.delivery import deadletters
from cioguard.delivery.retrying import call_with_fast_retries
from cioguard.delivery.runtime import Runtime
from cioguard.erasure import requests as deletions
from cioguard.errors import CredentialsError, PermanentError, RetryableError
from cioguard.ops import metrics

log = logging.getLogger("cioguard.delivery.pipeline")
T = TypeVar("T")
DEFAULT_429_PAUSE_S = 1.0  # a 429 without Retry-After still slows the whole fleet down


ERASED_DETAIL = "dropped: subject erased"
ERASED_AFTER_ATTEMPT_DETAIL = (
    "dropped: subject erased; an earlier attempt, begun before the erasure request, "
    "may have reached Customer.io"
)


def erased_detail(*, attempt: int, redelivered: bool) -> str:
    """The audit detail of a job dropped because its subject is under erasure.

    A retry (``attempt > 1``) or a redelivery (a worker died holding the message) follows an
    attempt that passed the erasure check before the request was recorded and may have sent
    its data; the trail says so rather than claim nothing left. The erasure removes that data.
    """
    return ERASED_AFTER_ATTEMPT_DETAIL if attempt > 1 or redelivered else ERASED_DETAIL


def deliver(rt: Runtime, job: Job, sealed: str, *, attempt: int, redelivered: bool = False) -> str:
    """Deliver an identify or track job. Returns the outcome (no PII)."""
    already_final, erased = rt.tombstones.gate(job.job_id, job.person_hash)
    if already_final:
        return "duplicate"
    if erased:
        detail = erased_detail(attempt=attempt, redelivered=redelivered)
        return finish(rt, job, "dropped", attempt, detail=detail)
    request = _request_for(rt, job)
    try:
        status = send(rt, request)
    except PermanentError as exc:
        return dead_letter(rt, job, sealed, exc, attempt)
    return finish(rt, job, "delivered", attempt, status=status)


def erase(rt: Runtime, job: Job, sealed: str, *, attempt: int) -> str:
    """Carry out a deletion request in the configured mode; 404 counts as done."""
    assert job.request_id is not None
    current = deletions.get_status(rt.audit, job.request_id)
    if current is None or current.state == "completed" or rt.audit.has_final(job.job_id):
        return "duplicate"
    rt.tombstones.add(job.person_hash)
    attempts = current.attempts + 1
    deletions.transition(
        rt.audit, job.request_id, "in_progress", job_id=job.job_id, attempts=attempts
    )
    try:
        status = send(rt, _erase_request(rt, job, current.mode))
    except PermanentError as exc:
        return dead_letter(rt, job, sealed, exc, attempt)
    deletions.transition(
        rt.audit, job.request_id, "completed", job_id=job.job_id, attempts=attempts,
        http_status=status, final=True,
    )  # fmt: skip
    report(job, "completed", status)
    return "completed"


def _request_for(rt: Runtime, job: Job) -> Callable[[], int]:
    client = rt.client
    if job.kind == "identify":
        attributes = rt.sanitizer.apply(job.attributes or {}, rehash=False)
        return lambda: limited(rt, lambda: client.identify(job.person_id, attributes))
    if job.kind == "track":
        assert job.name is not None
        data = rt.sanitizer.apply(job.data or {}, rehash=False, enforce_limits=False)
        name = job.name
        return lambda: limited(
            rt,
            lambda: client.track(
                job.person_id, name, data, event_id=job.event_id, timestamp=job.timestamp
            ),
        )
    raise ValueError(f"job kind {job.kind!r} is not delivered by this step")


def _erase_request(rt: Runtime, job: Job, mode: str) -> Callable[[], int]:
    client, person_id = rt.client, job.person_id

    def run() -> int:
        status = 0
        if mode in ("suppress", "suppress_and_delete"):
            status = limited(rt, lambda: client.suppress(person_id))
        if mode in ("delete", "suppress_and_delete"):
            status = limited(rt, lambda: client.delete(person_id))
        return status

    return run


def limited(rt: Runtime, call: Callable[[], T]) -> T:
    """Take a token from the fleet-wide bucket, then call; a 429 pauses the whole fleet."""
    metrics.limiter_waited(rt.limiter.acquire())
    try:
        return call()
    except RetryableError as exc:
        if exc.status == 429:
            rt.limiter.pause_fleet(exc.retry_after_s or DEFAULT_429_PAUSE_S)
        raise


def send(rt: Runtime, request: Callable[[], T]) -> T:
    """Run a (rate-limited) request with fast retries; on a 401 re-read credentials once."""
    try:
        return call_with_fast_retries(request)
    except CredentialsError:
        rt.refresh_credentials()
        try:
            return call_with_fast_retries(request)
        except CredentialsError as exc:
            raise RetryableError(
                "Customer.io still refuses the credentials after re-reading them",
                status=exc.status,
                retry_after_s=60,
            ) from None


def dead_letter(rt: Runtime, job: Job, sealed: str, exc: BaseException, attempt: int) -> str:
    """Give up on a job: its deletion request (if any) fails, the job becomes a dead letter."""
    status = getattr(exc, "status", None)
    if job.kind == "delete" and job.request_id:
        deletions.transition(
            rt.audit, job.request_id, "failed", job_id=job.job_id, attempts=attempt,
            error_class=type(exc).__name__, http_status=status,
        )  # fmt: skip
    deadletters.record(
        rt.audit, job_id=job.job_id, kind=job.kind, person_hash=job.person_hash, sealed=sealed,
        error_class=type(exc).__name__, http_status=status, attempts=attempt,
        policy_version=rt.policy_version,
    )  # fmt: skip
    report(job, "dead_lettered", status)
    return "dead_lettered"


def finish(
    rt: Runtime,
    job: Job,
    outcome: str,
    attempt: int,
    *,
    status: int | None = None,
    detail: str | None = None,
) -> str:
    recorded = rt.audit.record(
        AuditEntry(
            kind=job.kind, outcome=outcome, person_hash=job.person_hash, job_id=job.job_id,
            final=True, attempts=attempt, http_status=status, policy_version=rt.policy_version,
            detail=detail,
        )
    )  # fmt: skip
    report(job, outcome if recorded else "duplicate", status)
    return outcome if recorded else "duplicate"


def report(job: Job, outcome: str, status: int | None) -> None:
    """Count and log a job's outcome (fixed fields only)."""
    metrics.job_finished(job.kind, outcome)
    log.info(
        "job %s",
        outcome,
        extra={
            "job_id": job.job_id, "kind": job.kind, "outcome": outcome,
            "person_hash": job.person_hash[:16], "status": status,
        },
    )  # fmt: skip
