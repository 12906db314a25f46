"""How a job ends: its one final audit row, its erasure request's state, or its dead letter.

Every recording step here is safe to repeat: a final row is unique per job (a second one is a
``duplicate``), so a re-run after a crash never records a job twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from cioguard.audit.store import AuditEntry
from cioguard.broker.jobs import Job
from cioguard.delivery import deadletters
from cioguard.delivery.runtime import Runtime
from cioguard.erasure import requests as deletions
from cioguard.ops import metrics
from cioguard.ops.logs import reason_code

log = logging.getLogger("cioguard.delivery")

ERASED_DETAIL = "dropped: subject erased"
ERASED_AFTER_ATTEMPT_DETAIL = (
    "dropped: subject erased; an earlier attempt, begun before the erasure request, "
    "may have reached Customer.io"
)


@dataclass(frozen=True)
class Item:
    """One queued job in the pipeline: its sealed form (for retry/dead letter) and its attempt."""

    job: Job
    sealed: str
    attempt: int
    redelivered: bool = False  # a worker died holding it: an attempt may have been sent


@dataclass(frozen=True)
class ItemResult:
    """``outcome`` when the job is finished; otherwise ``retry`` holds why it must run again."""

    item: Item
    outcome: str | None = None
    retry: Exception | None = None


def erased_detail(*, attempt: int, redelivered: bool) -> str:
    """The audit detail of a job dropped because its subject is under erasure.

    A retry (``attempt > 1``) or a redelivery (a worker died holding the message) follows an
    attempt that passed the erasure check before the request was recorded and may have sent
    its data; the trail says so rather than claim nothing left. The erasure removes that data.
    """
    return ERASED_AFTER_ATTEMPT_DETAIL if attempt > 1 or redelivered else ERASED_DETAIL


def finish(
    rt: Runtime,
    job: Job,
    outcome: str,
    attempt: int,
    *,
    status: int | None = None,
    detail: str | None = None,
) -> str:
    """Write the job's final row; ``duplicate`` if another run already wrote it."""
    recorded = rt.audit.record(_entry(rt, job, outcome, attempt, status, detail))
    report(job, outcome if recorded else "duplicate", status)
    return outcome if recorded else "duplicate"


def finish_many(rt: Runtime, items: Sequence[Item], status: int) -> list[ItemResult]:
    """``delivered`` rows for many items in one transaction; one by one if one is a duplicate."""
    entries = [_entry(rt, i.job, "delivered", i.attempt, status, None) for i in items]
    try:
        with rt.audit.transaction() as conn:
            rt.audit.append_many(conn, entries)
    except IntegrityError:
        return [
            ItemResult(i, outcome=finish(rt, i.job, "delivered", i.attempt, status=status))
            for i in items
        ]
    report_many([i.job for i in items], "delivered", status)
    return [ItemResult(i, outcome="delivered") for i in items]


def complete_erasures(
    rt: Runtime, items: Sequence[Item], status: int, details: dict[str, str] | None = None
) -> list[ItemResult]:
    """Close accepted erasure requests in one transaction (one by one if that fails).

    Their people's dead letters lose their payloads first (a separate, repeatable step), so a
    request never reads completed while a dead letter still holds the person's data.
    """
    with rt.audit.transaction() as conn:
        deadletters.erase_payloads(conn, rt.audit, [i.job.person_hash for i in items])
    details = details or {}
    changes = [_completed(i, status, details.get(i.job.job_id)) for i in items]
    moved = deletions.apply_transitions(rt.audit, changes)
    if moved is None:  # one final row existed already: settle each on its own
        moved = set()
        for change in changes:
            moved |= deletions.apply_transitions(rt.audit, [change]) or set()
    results = []
    for item in items:
        outcome = "completed" if item.job.request_id in moved else "duplicate"
        report(item.job, outcome, status)
        results.append(ItemResult(item, outcome=outcome))
    return results


def _completed(item: Item, status: int, detail: str | None) -> deletions.Transition:
    job = item.job
    return deletions.Transition(
        job.request_id or "", "completed", job.job_id, attempts=item.attempt,
        http_status=status, final=True, detail=detail,
    )  # fmt: skip


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
    report(job, "dead_lettered", status, reason=reason_code(exc, status))
    return "dead_lettered"


def _entry(
    rt: Runtime, job: Job, outcome: str, attempt: int, status: int | None, detail: str | None
) -> AuditEntry:
    return AuditEntry(
        kind=job.kind, outcome=outcome, person_hash=job.person_hash, job_id=job.job_id,
        final=True, attempts=attempt, http_status=status, policy_version=rt.policy_version,
        detail=detail,
    )  # fmt: skip


def report_many(jobs: Sequence[Job], outcome: str, status: int | None) -> None:
    """:func:`report` for a batch's jobs that ended alike: counted once per kind, and the
    per-job DEBUG lines built only when DEBUG is on."""
    for kind, count in Counter(job.kind for job in jobs).items():
        metrics.job_finished(kind, outcome, count)
    if log.isEnabledFor(logging.DEBUG):
        for job in jobs:
            _log_outcome(job, outcome, status, None)


def report(job: Job, outcome: str, status: int | None, *, reason: str | None = None) -> None:
    """Count and log a job's outcome (fixed fields only; ``reason``: ops.logs.reason_code).

    A dead letter is logged at INFO; the other outcomes at DEBUG, the pipeline logging one INFO
    line per batch with the counts (a line per job was a measurable share of a batch's cost).
    """
    metrics.job_finished(job.kind, outcome)
    _log_outcome(job, outcome, status, reason)


def _log_outcome(job: Job, outcome: str, status: int | None, reason: str | None) -> None:
    log.log(
        logging.INFO if outcome == "dead_lettered" else logging.DEBUG,
        "job %s",
        outcome,
        extra={
            "job_id": job.job_id, "kind": job.kind, "outcome": outcome,
            "person_hash": job.person_hash[:16], "status": status, "reason": reason,
        },
    )  # fmt: skip
