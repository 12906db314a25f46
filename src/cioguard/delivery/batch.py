"""Track v2 batching: many people's operations in one request, each still its own job.

At a fixed request rate, the only way to move more people per second is more operations per
request: ``POST /api/v2/batch`` takes up to 500 KB of operations (32 KB each) and answers 207
with the indexes of the operations it refused, having accepted all the others.

Each item keeps its own fate: a refused operation is dead-lettered against its own person; a
retryable failure of the whole request (429, 5xx, timeout) sends every item of that request back
to the queue with a countdown; a 400 for the whole request (which should not happen, since every
operation was checked) falls back to one v1 request per item so one bad person never fails the
others. Every item ends with exactly one final audit row, or is re-enqueued.

Celery wiring lives in tasks.py (celery-batches); this module knows nothing of Celery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from cioguard.audit.store import AuditEntry
from cioguard.broker.jobs import Job
from cioguard.delivery import pipeline as delivery
from cioguard.delivery.runtime import Runtime
from cioguard.erasure import requests as deletions
from cioguard.errors import AuditUnavailableError, PermanentError, RetryableError

log = logging.getLogger("cioguard.delivery.pipeline")
MAX_REQUEST_BYTES = 500_000
MAX_OP_BYTES = 32_000
_ENVELOPE_BYTES = len(b'{"batch":[]}')


class OperationTooLargeError(PermanentError):
    """One operation is over Customer.io's 32 KB per-operation limit."""


class OperationRejectedError(PermanentError):
    """Customer.io refused this operation in a 207 (its reason is a fixed code)."""


@dataclass(frozen=True)
class BatchItem:
    """One queued job inside a batch: its sealed form (for retry/dead letter) and its attempt."""

    job: Job
    sealed: str
    attempt: int
    redelivered: bool = False  # a worker died holding it: an attempt may have been sent


@dataclass(frozen=True)
class ItemResult:
    """``outcome`` when the job is finished; otherwise ``retry`` holds why it must run again."""

    item: BatchItem
    outcome: str | None = None
    retry: Exception | None = None


def run_batch(rt: Runtime, items: Sequence[BatchItem]) -> list[ItemResult]:
    """Deliver a buffer of identify/track/delete jobs; never raises for one item's sake."""
    try:
        finals, erased = rt.tombstones.gates(
            [i.job.job_id for i in items], [i.job.person_hash for i in items]
        )
        results, ready = _start_erasures(rt, [i for i in items if i.job.kind == "delete"], finals)
    except (RetryableError, AuditUnavailableError) as exc:
        return [ItemResult(item, retry=exc) for item in items]
    live: list[tuple[BatchItem, list[dict[str, Any]]]] = []
    for item in items:
        try:
            if item.job.kind == "delete":
                if item.job.job_id in ready:
                    live.append((item, _operations(rt, item, ready[item.job.job_id])))
                continue
            settled = _precheck(rt, item, finals, erased)
            if settled is not None:
                results.append(ItemResult(item, outcome=settled))
                continue
            live.append((item, _operations(rt, item, rt.settings.deletion_mode)))
        except (RetryableError, AuditUnavailableError) as exc:
            results.append(ItemResult(item, retry=exc))
        except Exception as exc:  # permanent, or a job this worker cannot build: a dead letter
            results.append(_dead(rt, item, exc))
    for chunk in chunked(live, MAX_REQUEST_BYTES - _ENVELOPE_BYTES):
        results.extend(_send_chunk(rt, chunk))
    return results


def _start_erasures(
    rt: Runtime, deletes: Sequence[BatchItem], finals: set[str]
) -> tuple[list[ItemResult], dict[str, str]]:
    """Move a buffer's open erasure requests to in_progress in one transaction.

    Returns the items settled without a request (duplicates) and, for the others, the mode each
    request was opened in, by job id.
    """
    settled: list[ItemResult] = []
    ready: dict[str, str] = {}
    current = deletions.statuses(rt.audit, [i.job.request_id or "" for i in deletes])
    starting: list[deletions.Transition] = []
    for item in deletes:
        job = item.job
        status = current.get(job.request_id or "")
        if job.job_id in finals or status is None or status.state == "completed":
            settled.append(ItemResult(item, outcome="duplicate"))
            continue
        ready[job.job_id] = status.mode
        starting.append(
            deletions.Transition(
                job.request_id or "", "in_progress", job.job_id, status.attempts + 1
            )
        )
    rt.tombstones.add(*[i.job.person_hash for i in deletes if i.job.job_id in ready])
    deletions.transition_many(rt.audit, starting)
    return settled, ready


def _precheck(rt: Runtime, item: BatchItem, finals: set[str], erased: set[str]) -> str | None:
    """Settle an identify/track that needs no request: already final, or erased subject."""
    job = item.job
    if job.job_id in finals:
        return "duplicate"
    if job.person_hash in erased:
        detail = delivery.erased_detail(attempt=item.attempt, redelivered=item.redelivered)
        return delivery.finish(rt, job, "dropped", item.attempt, detail=detail)
    return None


def _operations(rt: Runtime, item: BatchItem, mode: str) -> list[dict[str, Any]]:
    job = item.job
    who = {"type": "person", "identifiers": {"id": job.person_id}}
    if job.kind == "identify":
        ops = [
            {
                **who,
                "action": "identify",
                "attributes": rt.sanitizer.apply(job.attributes or {}, rehash=False),
            }
        ]
    elif job.kind == "track":
        op: dict[str, Any] = {
            **who, "action": "event", "name": job.name, "id": job.event_id,
            "attributes": rt.sanitizer.apply(job.data or {}, rehash=False, enforce_limits=False),
        }  # fmt: skip
        if job.timestamp is not None:
            op["timestamp"] = job.timestamp
        ops = [op]
    else:
        actions = {"suppress": ["suppress"], "delete": ["delete"]}.get(mode, ["suppress", "delete"])
        ops = [{**who, "action": action} for action in actions]
    for op in ops:
        if _size(op) > MAX_OP_BYTES:
            raise OperationTooLargeError(f"{job.kind} operation is over {MAX_OP_BYTES} bytes")
    return ops


def _size(op: dict[str, Any]) -> int:
    return len(json.dumps(op, separators=(",", ":"), ensure_ascii=False).encode()) + 1


def chunked(
    live: Sequence[tuple[BatchItem, list[dict[str, Any]]]], max_bytes: int
) -> Iterator[list[tuple[BatchItem, list[dict[str, Any]]]]]:
    """Group items so each request's operations stay under ``max_bytes``."""
    chunk: list[tuple[BatchItem, list[dict[str, Any]]]] = []
    used = 0
    for entry in live:
        size = sum(_size(op) for op in entry[1])
        if chunk and used + size > max_bytes:
            yield chunk
            chunk, used = [], 0
        chunk.append(entry)
        used += size
    if chunk:
        yield chunk


def _send_chunk(
    rt: Runtime, chunk: list[tuple[BatchItem, list[dict[str, Any]]]]
) -> list[ItemResult]:
    ops = [op for _, item_ops in chunk for op in item_ops]
    owner = [item for item, item_ops in chunk for _ in item_ops]
    try:
        answer = delivery.send(rt, lambda: delivery.limited(rt, lambda: rt.client.batch(ops)))
    except RetryableError as exc:
        return [ItemResult(item, retry=exc) for item, _ in chunk]
    except PermanentError:
        log.warning("batch refused as a whole; falling back to one request per item")
        return [_one_by_one(rt, item) for item, _ in chunk]
    refused = {id(owner[i]): reason for i, reason in answer.failed.items() if 0 <= i < len(owner)}
    accepted = [item for item, _ in chunk if id(item) not in refused]
    results = _complete_all(rt, accepted, answer.status)
    for item, _ in chunk:
        reason = refused.get(id(item))
        if reason is not None:
            rejected = OperationRejectedError(
                f"Customer.io refused the {item.job.kind} operation ({_code(reason)})", status=207
            )
            results.append(_dead(rt, item, rejected))
    return results


def _complete_all(rt: Runtime, items: Sequence[BatchItem], status: int) -> list[ItemResult]:
    """Final rows for every accepted item: one transaction for identify/track, then deletes.

    If the shared transaction fails because one job already has its final row (a concurrent
    re-run), each item is recorded on its own so the others still get theirs.
    """
    deliveries = [i for i in items if i.job.kind != "delete"]
    results: list[ItemResult] = []
    entries = [_delivered_entry(rt, i, status) for i in deliveries]
    try:
        with rt.audit.transaction() as conn:
            rt.audit.append_many(conn, entries)
    except IntegrityError:
        results += [_settle(rt, i, _completer(rt, i, status)) for i in deliveries]
    except AuditUnavailableError as exc:
        results += [ItemResult(i, retry=exc) for i in deliveries]
    else:
        for item in deliveries:
            delivery.report(item.job, "delivered", status)
            results.append(ItemResult(item, outcome="delivered"))
    return results + _complete_erasures(rt, [i for i in items if i.job.kind == "delete"], status)


def _complete_erasures(rt: Runtime, items: Sequence[BatchItem], status: int) -> list[ItemResult]:
    """Close accepted erasure requests in one transaction (one by one if that fails)."""
    changes = [
        deletions.Transition(i.job.request_id or "", "completed", i.job.job_id, attempts=i.attempt,
                        http_status=status, final=True)
        for i in items
    ]  # fmt: skip
    try:
        together = deletions.transition_many(rt.audit, changes)
    except AuditUnavailableError as exc:
        return [ItemResult(i, retry=exc) for i in items]
    if not together:
        return [_settle(rt, i, _completer(rt, i, status)) for i in items]
    for item in items:
        delivery.report(item.job, "completed", status)
    return [ItemResult(i, outcome="completed") for i in items]


def _delivered_entry(rt: Runtime, item: BatchItem, status: int) -> AuditEntry:
    job = item.job
    return AuditEntry(
        kind=job.kind, outcome="delivered", person_hash=job.person_hash, job_id=job.job_id,
        final=True, attempts=item.attempt, http_status=status, policy_version=rt.policy_version,
    )  # fmt: skip


def _completer(rt: Runtime, item: BatchItem, status: int) -> Callable[[], str]:
    return lambda: _complete(rt, item, status)


def _code(reason: str) -> str:
    """Keep only a short token of Customer.io's reason (it is a code, never echo free text)."""
    token = "".join(ch for ch in reason[:40] if ch.isalnum() or ch in "_-")
    return token or "invalid"


def _complete(rt: Runtime, item: BatchItem, status: int) -> str:
    job = item.job
    if job.kind == "delete":
        assert job.request_id is not None
        deletions.transition(
            rt.audit, job.request_id, "completed", job_id=job.job_id, attempts=item.attempt,
            http_status=status, final=True,
        )  # fmt: skip
        delivery.report(job, "completed", status)
        return "completed"
    return delivery.finish(rt, job, "delivered", item.attempt, status=status)


def _one_by_one(rt: Runtime, item: BatchItem) -> ItemResult:
    step = delivery.erase if item.job.kind == "delete" else delivery.deliver
    return _settle(rt, item, lambda: step(rt, item.job, item.sealed, attempt=item.attempt))


def _dead(rt: Runtime, item: BatchItem, exc: Exception) -> ItemResult:
    return _settle(
        rt, item, lambda: delivery.dead_letter(rt, item.job, item.sealed, exc, item.attempt)
    )


def _settle(rt: Runtime, item: BatchItem, step: Callable[[], str]) -> ItemResult:
    """Run a recording step; a store or transient failure sends the item back to the queue."""
    try:
        return ItemResult(item, outcome=step())
    except (RetryableError, AuditUnavailableError) as exc:
        return ItemResult(item, retry=exc)
