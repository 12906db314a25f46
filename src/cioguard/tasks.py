"""Thin Celery tasks: open the sealed job, run its steps (delivery.py), decide retries.

Arguments are ciphertext only; ``argsrepr`` is a short redacted form on the first send (api.py)
and on every retry (Celery's ``retry()`` drops it otherwise, celery#6086). Return values are
outcome words. Exception text never carries PII by construction (errors.py).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Task, shared_task

from cioguard import delivery, metrics
from cioguard.celeryconf import DELIVER_TASK, ERASE_TASK
from cioguard.envelope import EnvelopeError
from cioguard.errors import AuditUnavailableError, RetryableError
from cioguard.jobs import SEALED_REPR, Job
from cioguard.retrying import countdown, exhausted
from cioguard.runtime import Runtime, get_runtime

log = logging.getLogger("cioguard.tasks")


@shared_task(bind=True, name=DELIVER_TASK, max_retries=None)
def deliver(self: Task, sealed: str) -> str:
    return _run(self, sealed, delivery.deliver)


@shared_task(bind=True, name=ERASE_TASK, max_retries=None)
def erase(self: Task, sealed: str) -> str:
    return _run(self, sealed, delivery.erase)


def _run(task: Task, sealed: str, step: Any) -> str:
    rt = get_runtime()
    attempt = int(task.request.retries) + 1
    try:
        job = Job.from_payload(rt.envelope.open(sealed))
    except (EnvelopeError, ValueError, TypeError) as exc:
        return _unreadable(rt, task, sealed, exc)
    try:
        return str(step(rt, job, sealed, attempt=attempt))
    except AuditUnavailableError as exc:
        _retry(task, rt, exc, attempt, retry_after_s=5.0)
    except RetryableError as exc:
        if exhausted(attempt, job.created_at, max_attempts=rt.settings.max_attempts,
                     max_age_s=rt.settings.max_age_s):  # fmt: skip
            return delivery.dead_letter(rt, job, sealed, exc, attempt)
        _retry(task, rt, exc, attempt, retry_after_s=exc.retry_after_s)
    except Exception as exc:  # a bug must not lose the job: keep it, replayable
        log.exception("unexpected error in %s", job.kind, extra={"job_id": job.job_id})
        return delivery.dead_letter(rt, job, sealed, exc, attempt)


def _retry(
    task: Task, rt: Runtime, exc: Exception, attempt: int, *, retry_after_s: float | None
) -> NoReturn:
    delay = countdown(attempt, retry_after_s, cap_s=rt.settings.countdown_cap_s)
    metrics.job_retried(str(task.name).rsplit(".", 1)[-1])
    log.info(
        "job retrying",
        extra={
            "job_id": task.request.id,
            "error_class": type(exc).__name__,
            "error": str(exc),  # our errors' text is PII-free by construction (errors.py)
            "countdown_s": round(delay, 3),
        },
    )
    raise task.retry(countdown=delay, argsrepr=SEALED_REPR, kwargsrepr="{}", exc=None, throw=True)


def _unreadable(rt: Runtime, task: Task, sealed: str, exc: Exception) -> str:
    """A payload no configured key opens: keep it as a dead letter until the key is restored."""
    from cioguard import deadletters

    deadletters.record(
        rt.audit, job_id=str(task.request.id), kind="unknown", person_hash="unknown",
        sealed=sealed, error_class=type(exc).__name__, http_status=None,
        attempts=int(task.request.retries) + 1,
    )  # fmt: skip
    return "dead_lettered"
