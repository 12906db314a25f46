"""The worker side of reporting webhooks: the ``cioguard.webhook`` task and the built-in handling.

Steps for one event, as named functions: already final? -> open -> who is it (keyed hashes) ->
erased? (drop, handlers not called) -> the application's handlers (:func:`webhooks.dispatch`) ->
one final audit row. The row is written after the handlers, so a crash in between runs them again
(delivery is at least once anyway) but never skips them; its UNIQUE ``final_job_id`` means a
re-run cannot record twice.

Who the event is about: the keyed hash of ``data.identifiers.id`` (the id the application uses
with :func:`cioguard.identify`), else of ``email``, else of ``cio_<cio_id>`` (the form the Track
API takes). The event is dropped when *any* of those identifiers is tombstoned, since an erased
person may have been erased by e-mail or by cio_id.

The task is registered by :func:`register` on cioguard's worker app only (``cioguard.worker``), not
with ``shared_task``, which would attach it to every Celery app in the process, the host
application's included; importing this module connects no signal.

Handler modules (``CIOGUARD_WEBHOOK_HANDLERS``) are imported in each pool process of that app as
it starts (``worker_process_init``) and, failing that, before each task: a module that cannot be
imported makes the task retry and then dead-letter, never run without its handlers.

Payload PII never reaches logs, Sentry or the audit table: logs carry the job id, outcome, a
prefix of the person hash and exception *type* names; handler exceptions (whose messages may
quote the event) are neither logged nor chained.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any, NoReturn, Protocol

from celery import Celery, Task, signals
from celery._state import get_current_app
from redis import RedisError

from cioguard.audit.store import AuditEntry, AuditStore
from cioguard.broker.celeryconf import WEBHOOK_TASK
from cioguard.broker.envelope import Envelope, EnvelopeError
from cioguard.broker.jobs import SEALED_REPR
from cioguard.config import Settings, get_settings
from cioguard.delivery import deadletters
from cioguard.delivery.retrying import countdown, exhausted
from cioguard.delivery.runtime import get_runtime
from cioguard.delivery.settle import ERASED_DETAIL
from cioguard.erasure.tombstones import Tombstones
from cioguard.errors import AuditUnavailableError, ConfigurationError
from cioguard.ops import metrics
from cioguard.ops.logs import failure_fields
from cioguard.webhooks import verify as webhooks
from cioguard.webhooks.intake import open_event

log = logging.getLogger("cioguard.webhooks.handlers")

KIND = "webhook"
AUDITED_METRICS = frozenset({"unsubscribed", "spammed", "bounced", "dropped", "failed"})
"""Metrics recorded as the final row's outcome; every other metric is recorded as ``handled``."""
UNKNOWN_PERSON = "unknown"
_SAFE_METRIC = re.compile(r"[a-z_]{1,32}")
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_imported: set[str] = set()


class WebhookRuntime(Protocol):
    """What the webhook steps use of :class:`cioguard.delivery.runtime.Runtime` (tests pass their
    own)."""

    settings: Settings
    envelope: Envelope
    audit: AuditStore
    tombstones: Tombstones

    def person_hash(self, person_id: str) -> str: ...


# -- handler modules -------------------------------------------------------------------------


def load_handlers(spec: str) -> tuple[str, ...]:
    """Import each module named in ``spec`` (comma-separated) once; return the names.

    Raises :class:`ConfigurationError` naming ``CIOGUARD_WEBHOOK_HANDLERS`` and the module, with
    the exception type only (an import-time message is the application's text, not ours).
    """
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    for name in names:
        if name in _imported:
            continue
        if _MODULE_NAME.fullmatch(name) is None:
            raise ConfigurationError(
                "CIOGUARD_WEBHOOK_HANDLERS is invalid: expected comma-separated importable "
                "module names"
            )
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigurationError(
                f"CIOGUARD_WEBHOOK_HANDLERS: module {name!r} could not be imported "
                f"({type(exc).__name__})"
            ) from None
        _imported.add(name)
    return names


def _load_handlers_at_process_start(**_: Any) -> None:
    """Import handlers as each pool process starts; a failure is logged and retried per task."""
    try:
        load_handlers(get_settings().webhook_handlers)
    except ConfigurationError as exc:
        log.error("webhook handlers not loaded: %s", exc)


# -- the steps -------------------------------------------------------------------------------


def person_ids(event: dict[str, Any]) -> list[str]:
    """The event's person identifiers, most specific first: ``id``, ``email``, ``cio_<cio_id>``."""
    data = event.get("data")
    identifiers = data.get("identifiers") if isinstance(data, dict) else None
    if not isinstance(identifiers, dict):
        return []
    found: list[str] = []
    for key in ("id", "email", "cio_id"):
        value = identifiers.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            continue
        if key == "cio_id" and not value.startswith("cio_"):
            value = f"cio_{value}"
        found.append(value)
    return found


def person_hashes(rt: WebhookRuntime, event: dict[str, Any]) -> list[str]:
    """The keyed hashes of :func:`person_ids`, in the same order (the first names the subject)."""
    return [rt.person_hash(person_id) for person_id in person_ids(event)]


def handle(rt: WebhookRuntime, event: dict[str, Any], *, job_id: str, attempt: int) -> str:
    """Run one event's steps; return the outcome word (no PII).


    Raises :class:`~cioguard.webhooks.verify.WebhookHandlerError` or :class:`ConfigurationError`
    (the task retries), :class:`AuditUnavailableError` or ``RedisError`` (the task retries soon).
    """
    if rt.audit.has_final(job_id):
        return "duplicate"
    hashes = person_hashes(rt, event)
    subject = hashes[0] if hashes else None
    if any(rt.tombstones.is_erased(person) for person in hashes):
        return _final(rt, job_id, "dropped", subject, attempt, detail=ERASED_DETAIL)
    load_handlers(rt.settings.webhook_handlers)
    webhooks.dispatch(event)
    outcome, detail = outcome_of(event["metric"])
    return _final(rt, job_id, outcome, subject, attempt, detail=detail)


def outcome_of(metric: str) -> tuple[str, str]:
    """The final row's outcome and detail for a metric (an untrusted string, so bounded)."""
    shown = metric if _SAFE_METRIC.fullmatch(metric) else "other"
    outcome = metric if metric in AUDITED_METRICS else "handled"
    return outcome, f"metric: {shown}"


def _final(
    rt: WebhookRuntime,
    job_id: str,
    outcome: str,
    person: str | None,
    attempt: int,
    *,
    detail: str,
) -> str:
    recorded = rt.audit.record(
        AuditEntry(
            kind=KIND, outcome=outcome, person_hash=person, job_id=job_id, final=True,
            attempts=attempt, detail=detail,
        )
    )  # fmt: skip
    result = outcome if recorded else "duplicate"
    _log(job_id, result, person)
    return result


def dead_letter(
    rt: WebhookRuntime, job_id: str, sealed: str, exc: BaseException, attempt: int, person: str
) -> str:
    """Keep the sealed event for inspection and replay; writes the job's final row."""
    deadletters.record(
        rt.audit, job_id=job_id, kind=KIND, person_hash=person, sealed=sealed,
        error_class=type(exc).__name__, http_status=None, attempts=attempt,
    )  # fmt: skip
    _log(job_id, "dead_lettered", person, failure_fields(exc))
    return "dead_lettered"


def _log(
    job_id: str, outcome: str, person: str | None, why: dict[str, object] | None = None
) -> None:
    metrics.job_finished(KIND, outcome)
    log.info(
        "webhook %s",
        outcome,
        extra={
            "job_id": job_id, "kind": KIND, "outcome": outcome,
            "person_hash": person[:16] if person else None, **(why or {}),
        },
    )  # fmt: skip


# -- the task --------------------------------------------------------------------------------


def handle_webhook(self: Task, sealed: str) -> str:
    """Handle one sealed webhook event (acks late, like every cioguard task: celeryconf)."""
    return run_job(self, get_runtime(), sealed)


def register(app: Celery) -> Task:
    """Register ``cioguard.webhook`` on ``app`` (cioguard's worker app) and return the task.

    Also loads the handler modules as each of that app's pool processes starts: the signal is
    global, so the receiver checks that the process runs ``app`` (Celery makes the worker's app
    current just before sending ``worker_process_init``).
    """

    def load_in_pool_process(**kwargs: Any) -> None:
        if get_current_app() is app:
            _load_handlers_at_process_start(**kwargs)

    signals.worker_process_init.connect(load_in_pool_process, weak=False)
    # Registered by a call, not a decorator: mypy --strict refuses Celery's untyped decorators.
    # shared=False: ``app.task`` otherwise also registers the task on every other app created in
    # the process (Celery's default), the application's included.
    task: Task = app.task(bind=True, name=WEBHOOK_TASK, max_retries=None, shared=False)(
        handle_webhook
    )
    return task


def run_job(task: Task, rt: WebhookRuntime, sealed: str) -> str:
    """Open the event, handle it, and decide: done, retry, or dead letter."""
    job_id = str(task.request.id)
    attempt = int(task.request.retries) + 1
    try:
        opened = open_event(rt.envelope, sealed)
    except (EnvelopeError, ValueError, TypeError) as exc:
        return dead_letter(rt, job_id, sealed, exc, attempt, UNKNOWN_PERSON)
    person = next(iter(person_hashes(rt, opened.event)), UNKNOWN_PERSON)
    try:
        return handle(rt, opened.event, job_id=job_id, attempt=attempt)
    except (AuditUnavailableError, RedisError) as exc:
        _retry(task, rt, exc, attempt, retry_after_s=5.0)
    except (webhooks.WebhookHandlerError, ConfigurationError) as exc:
        if exhausted(attempt, opened.received_at, max_attempts=rt.settings.max_attempts,
                     max_age_s=rt.settings.max_age_s):  # fmt: skip
            return dead_letter(rt, job_id, sealed, exc, attempt, person)
        _retry(task, rt, exc, attempt, retry_after_s=None)
    except Exception as exc:  # a bug must not lose the event: keep it, replayable
        log.error("unexpected error in a webhook job (%s)", type(exc).__name__,
                  extra={"job_id": job_id, "error_class": type(exc).__name__})  # fmt: skip
        return dead_letter(rt, job_id, sealed, exc, attempt, person)


def _retry(
    task: Task, rt: WebhookRuntime, exc: Exception, attempt: int, *, retry_after_s: float | None
) -> NoReturn:
    """Retry with the project's countdown; ``argsrepr`` again, since Celery drops it (#6086)."""
    delay = countdown(attempt, retry_after_s, cap_s=rt.settings.countdown_cap_s)
    metrics.job_retried(KIND)
    log.info(
        "webhook job retrying",
        extra={
            "job_id": task.request.id, "kind": KIND, **failure_fields(exc),
            "countdown_s": round(delay, 3),
        },
    )  # fmt: skip
    raise task.retry(countdown=delay, argsrepr=SEALED_REPR, kwargsrepr="{}", exc=None, throw=True)
