"""Thin Celery tasks: open the sealed job, run its steps, decide retries.

Two wirings of the same task names, chosen by ``CIOGUARD_BATCH`` at worker start:

* unbatched (``CIOGUARD_BATCH=0``): one message -> one job, handed to
  :func:`cioguard.delivery.pipeline.run` alone;
* batched (the default): ``celery-batches`` buffers messages in the consumer and hands a list to
  the pool, which hands it to the same :func:`~cioguard.delivery.pipeline.run`, flushed at
  ``CIOGUARD_BATCH_MAX_OPS`` messages or after ``CIOGUARD_BATCH_LINGER_S``, whichever comes first.
  Chosen over a hand-written flush task because it keeps Celery's own message handling: messages
  are acknowledged only after the batch function returns (late acks), and an unacknowledged buffer
  is redelivered by Redis if the worker dies. Items that must run again are re-published with a
  countdown *before* that acknowledgement, each under its own job id, so one person's failure
  never holds the others.

Arguments are ciphertext only; ``argsrepr`` is a short redacted form on the first send (api.py)
and on every retry (Celery's ``retry()`` drops it otherwise, celery#6086). Return values are
outcome words. Exception text never carries PII by construction (errors.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Reject
from celery_batches import SimpleRequest

from cioguard.broker.batches import NOT_SETTLED, ForgetBuffersOnRestart, ReportingBatches
from cioguard.broker.celeryconf import DELIVER_TASK, ERASE_TASK
from cioguard.broker.envelope import EnvelopeError
from cioguard.broker.jobs import SEALED_REPR, Job
from cioguard.config import Settings
from cioguard.delivery import pipeline, settle
from cioguard.delivery.ratelimit import RateLimitedError
from cioguard.delivery.retrying import countdown, exhausted
from cioguard.delivery.runtime import Runtime, get_runtime
from cioguard.delivery.settle import Item, ItemResult
from cioguard.errors import AuditUnavailableError, RetryableError
from cioguard.ops import metrics
from cioguard.ops.logs import failure_fields

log = logging.getLogger("cioguard.tasks")
RUNTIME_RETRY_S = 30.0
_registered: list[Celery] = []  # the app ``register`` wired; batched items re-publish through it


def _app() -> Celery:
    if not _registered:
        raise RuntimeError("cioguard.tasks.register(app, settings) has not run in this process")
    return _registered[-1]


def register(app: Celery, settings: Settings) -> None:
    """Register ``cioguard.deliver`` and ``cioguard.erase`` on ``app``, batched or not."""
    _registered.append(app)
    if settings.batch:
        options = {
            "base": ReportingBatches,
            "flush_every": settings.batch_max_ops,
            "flush_interval": settings.batch_linger_s,
            "acks_late": True,
        }
        app.task(name=DELIVER_TASK, shared=False, **options)(deliver_batch)
        app.task(name=ERASE_TASK, shared=False, **options)(erase_batch)
        app.steps["consumer"].add(ForgetBuffersOnRestart)  # a reconnect restarts the buffers
        # two batches per process: one runs while the next fills, so no process waits for work
        app.conf.worker_prefetch_multiplier = 2 * settings.batch_max_ops
    else:
        app.task(bind=True, name=DELIVER_TASK, max_retries=None, shared=False)(deliver)
        app.task(bind=True, name=ERASE_TASK, max_retries=None, shared=False)(erase)


# -- unbatched -----------------------------------------------------------------------------


def deliver(task: Task, sealed: str) -> str:
    return _run(task, sealed)


def erase(task: Task, sealed: str) -> str:
    return _run(task, sealed)


def _redelivered(delivery_info: Mapping[str, Any] | None) -> bool:
    """Whether the broker handed this message out before (kombu marks restored messages)."""
    return bool((delivery_info or {}).get("redelivered"))


def _runtime_or_retry(task: Task) -> Runtime:
    """The process runtime; if it cannot be built (store, Redis or config down), retry later."""
    try:
        return get_runtime()
    except Exception as exc:
        log.error("worker runtime unavailable", extra={"error_class": type(exc).__name__})
        _publish_retry(task, RUNTIME_RETRY_S, "runtime")


def _run(task: Task, sealed: str) -> str:
    rt = _runtime_or_retry(task)
    attempt = int(task.request.retries) + 1
    try:
        job = Job.from_payload(rt.envelope.open(sealed))
    except (EnvelopeError, ValueError, TypeError) as exc:
        unreadable: Exception = exc
        return _recorded_or_retry(
            task, lambda: _unreadable(rt, str(task.request.id), sealed, unreadable, attempt)
        )
    item = Item(job, sealed, attempt, _redelivered(task.request.delivery_info))
    try:
        [result] = pipeline.run(rt, [item], batching=False)
    except Exception as exc:  # a bug must not lose the job: keep it, replayable
        log.exception("unexpected error", extra={"job_id": job.job_id, "kind": job.kind})
        result = ItemResult(item, retry=exc)
    if result.outcome is not None:
        return result.outcome
    failure = result.retry
    assert failure is not None
    if isinstance(failure, RetryableError | AuditUnavailableError) and not _give_up(
        rt, job, attempt, failure
    ):
        _retry(task, rt, job, failure, attempt)
    return _recorded_or_retry(task, lambda: settle.dead_letter(rt, job, sealed, failure, attempt))


def _recorded_or_retry(task: Task, record: Callable[[], str]) -> str:
    """Record a final outcome; if the store cannot take it, run the whole job again later."""
    try:
        return record()
    except AuditUnavailableError:
        log.warning("final outcome not recorded; retrying", extra={"job_id": task.request.id})
        _publish_retry(task, RUNTIME_RETRY_S, "unknown")


def _give_up(rt: Runtime, job: Job, attempt: int, exc: Exception) -> bool:
    """Retry caps apply to delivery failures; an unavailable audit store is always waited for."""
    if isinstance(exc, AuditUnavailableError):
        return False
    s = rt.settings
    if isinstance(exc, RateLimitedError):  # waiting out the fleet's limit is not a failure
        attempt = 0
    return exhausted(attempt, job.created_at, max_attempts=s.max_attempts, max_age_s=s.max_age_s)


def _delay(rt: Runtime, job: Job, exc: Exception, attempt: int) -> float:
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(exc, AuditUnavailableError):
        retry_after = 5.0
    delay = countdown(attempt, retry_after, cap_s=rt.settings.countdown_cap_s)
    metrics.job_retried(job.kind)
    log.info(
        "job retrying",
        extra={
            "job_id": job.job_id, "kind": job.kind, **failure_fields(exc),
            "countdown_s": round(delay, 3),
        },
    )  # fmt: skip
    return delay


def _retry(task: Task, rt: Runtime, job: Job, exc: Exception, attempt: int) -> NoReturn:
    _publish_retry(task, _delay(rt, job, exc, attempt), job.kind)


def _publish_retry(task: Task, countdown_s: float, kind: str) -> NoReturn:
    """Re-publish the message with a countdown; if the broker will not take it, keep it.

    Celery's ``retry()`` turns a failed publish into ``Reject(requeue=False)``, which drops the
    message: no final row, no dead letter, no queue entry. Here the message is rejected with
    requeue instead (kombu puts it back; if even that fails it stays unacknowledged and is
    handed back by the transport), the failure is logged and counted.
    """
    try:
        raise task.retry(
            countdown=countdown_s, argsrepr=SEALED_REPR, kwargsrepr="{}", exc=None, throw=True
        )
    except Reject as rejected:
        reason = type(rejected.reason).__name__ if rejected.reason is not None else "unknown"
        log.error("could not re-publish; message kept", extra={"error_class": reason})
        metrics.retry_unpublished(kind)
        raise Reject(reason, requeue=True) from None


def _unreadable(rt: Runtime, job_id: str, sealed: str, exc: Exception, attempt: int) -> str:
    """A payload no configured key opens: keep it as a dead letter until the key is restored."""
    from cioguard.delivery import deadletters

    deadletters.record(
        rt.audit, job_id=job_id, kind="unknown", person_hash="unknown", sealed=sealed,
        error_class=type(exc).__name__, http_status=None, attempts=attempt,
    )  # fmt: skip
    return "dead_lettered"


# -- batched -------------------------------------------------------------------------------


def deliver_batch(requests: Sequence[SimpleRequest]) -> list[str]:
    return _run_batch(requests, DELIVER_TASK)


def erase_batch(requests: Sequence[SimpleRequest]) -> list[str]:
    return _run_batch(requests, ERASE_TASK)


def _run_batch(requests: Sequence[SimpleRequest], task_name: str) -> list[str]:
    """Run one buffer. Must not raise: the buffer is acknowledged when this returns."""
    try:
        rt = get_runtime()
    except Exception as exc:
        log.error("worker runtime unavailable", extra={"error_class": type(exc).__name__})
        return [_republish(req, task_name) for req in requests]
    items: list[Item] = []
    outcome_of: dict[str, str] = {}  # by task id (= job id), to answer in request order
    for req in requests:
        sealed, attempt = req.args[0], int(req.request_dict.get("retries") or 0) + 1
        try:
            job = Job.from_payload(rt.envelope.open(sealed))
        except (EnvelopeError, ValueError, TypeError) as exc:
            outcome_of[str(req.id)] = _unreadable(rt, str(req.id), sealed, exc, attempt)
            continue
        items.append(Item(job, sealed, attempt, _redelivered(req.delivery_info)))
    try:
        results = pipeline.run(rt, items, batching=True)
    except Exception as exc:  # a bug must not lose the buffer: send every item back
        log.exception("unexpected error in batch")
        results = [ItemResult(item, retry=exc) for item in items]
    for result in results:
        try:
            outcome = result.outcome or _requeue(rt, result, task_name)
        except Exception as exc:  # e.g. the store is down while dead-lettering: run it again later
            log.error("batch item not settled", extra={"error_class": type(exc).__name__})
            outcome = NOT_SETTLED
        outcome_of[result.item.job.job_id] = outcome
    return [outcome_of.get(str(req.id), NOT_SETTLED) for req in requests]


def _requeue(rt: Runtime, result: ItemResult, task_name: str) -> str:
    item, exc = result.item, result.retry
    assert exc is not None
    if not isinstance(exc, RetryableError | AuditUnavailableError) or _give_up(
        rt, item.job, item.attempt, exc
    ):
        return settle.dead_letter(rt, item.job, item.sealed, exc, item.attempt)
    try:
        _app().send_task(
            task_name, args=[item.sealed], task_id=item.job.job_id, retries=item.attempt,
            countdown=_delay(rt, item.job, exc, item.attempt), argsrepr=SEALED_REPR,
            kwargsrepr="{}",
        )  # fmt: skip
    except Exception as publish_exc:  # broker trouble: keep the original message unacknowledged
        log.error("could not re-publish", extra={"error_class": type(publish_exc).__name__})
        metrics.retry_unpublished(item.job.kind)
        return NOT_SETTLED
    return "retrying"


def _republish(req: SimpleRequest, task_name: str) -> str:
    """Send a message back unchanged (same id and attempt count) to run in a while."""
    _app().send_task(
        task_name, args=list(req.args), task_id=req.id,
        retries=int(req.request_dict.get("retries") or 0), countdown=RUNTIME_RETRY_S,
        argsrepr=SEALED_REPR, kwargsrepr="{}",
    )  # fmt: skip
    return "retrying"


__all__: list[Any] = ["deliver", "deliver_batch", "erase", "erase_batch", "register"]
