"""The worker's steps, once, for a list of jobs: gate -> build -> take a token -> send -> settle.

The batched wiring hands :func:`run` up to ``CIOGUARD_BATCH_MAX_OPS`` jobs, the unbatched wiring
one. How each operation travels (in a v2 batch, a v1 request, or a single v2 request) is chosen
per operation by :func:`cioguard.delivery.operations.route`; the steps are the same.

Each item keeps its own fate and ends with exactly one outcome: a final audit row (delivered,
dropped, completed, duplicate), a dead letter, or ``retry`` (the task sends it back to the
queue). An exception while building, sending or settling one item settles that item alone. A
refused operation in a 207 is dead-lettered against its own person; a retryable failure of a
whole request (429, 5xx, timeout) sends every item of that request back; a 400 for a whole batch
(which should not happen, every operation being sized and built to the spec) sends each item
again on its own, so one bad person never fails the others.

Celery-free on purpose: ``tasks.py`` wires this to Celery, and tests can drive it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from cioguard.broker.jobs import Job
from cioguard.delivery import settle
from cioguard.delivery.destination import BATCH, Operation, Route
from cioguard.delivery.retrying import call_with_fast_retries
from cioguard.delivery.runtime import Runtime
from cioguard.delivery.settle import (
    ERASED_AFTER_ATTEMPT_DETAIL,
    ERASED_DETAIL,
    Item,
    ItemResult,
    erased_detail,
)
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from cioguard.errors import (
    AuditUnavailableError,
    CredentialsError,
    PermanentError,
    RetryableError,
)
from cioguard.ops import metrics

log = logging.getLogger("cioguard.delivery")
T = TypeVar("T")
DEFAULT_429_PAUSE_S = 1.0  # a 429 without Retry-After still slows the whole fleet down
TRANSIENT = (RetryableError, AuditUnavailableError)

__all__ = [
    "ERASED_AFTER_ATTEMPT_DETAIL", "ERASED_DETAIL", "Item", "ItemResult", "deliver", "erase",
    "run", "run_one",
]  # fmt: skip


class OperationRejectedError(PermanentError):
    """Customer.io refused this operation in a 207 (its reason is a fixed code)."""


@dataclass(frozen=True)
class Planned:
    """An item ready to send: its operations and the route of each."""

    item: Item
    ops: list[Operation]
    routes: list[Route]

    @property
    def batchable(self) -> bool:
        return all(r == BATCH for r in self.routes)


def run(rt: Runtime, items: Sequence[Item], *, batching: bool) -> list[ItemResult]:
    """Deliver identify/track/delete jobs; never raises for one item's sake."""
    try:
        finals, erased = rt.tombstones.gates(
            [i.job.job_id for i in items], [i.job.person_hash for i in items]
        )
        results, modes = _start_erasures(rt, [i for i in items if i.job.kind == "delete"], finals)
    except TRANSIENT as exc:
        return [ItemResult(item, retry=exc) for item in items]
    planned: list[Planned] = []
    for item in items:
        if item.job.kind == "delete" and item.job.job_id not in modes:
            continue  # settled by _start_erasures
        result = _guarded(rt, item, partial(_plan, rt, item, finals, erased, modes, batching))
        if isinstance(result, Planned):
            planned.append(result)
        else:
            results.append(result)
    for chunk in _chunked(rt, [p for p in planned if p.batchable]):
        results.extend(_send_chunk(rt, chunk))
    for alone in (p for p in planned if not p.batchable):
        results.append(_guarded(rt, alone.item, partial(_send_alone, rt, alone)))
    return results


def run_one(rt: Runtime, item: Item, *, batching: bool = False) -> str:
    """:func:`run` for one item: its outcome, or the retryable error it must run again for."""
    [result] = run(rt, [item], batching=batching)
    if result.retry is not None:
        raise result.retry
    assert result.outcome is not None
    return result.outcome


def deliver(rt: Runtime, job: Job, sealed: str, *, attempt: int, redelivered: bool = False) -> str:
    """One identify or track job, unbatched (see :func:`run_one`)."""
    return run_one(rt, Item(job, sealed, attempt, redelivered))


def erase(rt: Runtime, job: Job, sealed: str, *, attempt: int) -> str:
    """One erasure job, unbatched, in its request's mode; a 404 to a v1 path counts as done."""
    return run_one(rt, Item(job, sealed, attempt))


def _guarded(rt: Runtime, item: Item, step: Callable[[], Any]) -> Any:
    """Run one item's step; any failure settles this item alone (retry or dead letter)."""
    try:
        return step()
    except TRANSIENT as exc:
        return ItemResult(item, retry=exc)
    except Exception as exc:  # permanent, or a job this worker cannot build: a dead letter
        if not isinstance(exc, PermanentError):
            log.exception("unexpected error", extra={"job_id": item.job.job_id})
        return _dead(rt, item, exc)


def _start_erasures(
    rt: Runtime, deletes: Sequence[Item], finals: set[str]
) -> tuple[list[ItemResult], dict[str, str]]:
    """Move the open erasure requests to in_progress in one transaction.

    Returns the items settled without a request (duplicates) and, for the others, the mode each
    request was opened in, by job id.
    """
    settled: list[ItemResult] = []
    modes: dict[str, str] = {}
    current = _requests_of(rt, deletes)
    starting: list[deletions.Transition] = []
    for item in deletes:
        job = item.job
        status = current.get(job.request_id or "")
        if job.job_id in finals or status is None or status.state == "completed":
            settled.append(ItemResult(item, outcome="duplicate"))
            continue
        modes[job.job_id] = status.mode
        starting.append(
            deletions.Transition(
                job.request_id or "", "in_progress", job.job_id, status.attempts + 1
            )
        )
    erasing = [i.job.person_hash for i in deletes if i.job.job_id in modes]
    if erasing:
        rt.tombstones.add(*erasing)
    deletions.transition_many(rt.audit, starting)
    return settled, modes


def _requests_of(rt: Runtime, deletes: Sequence[Item]) -> dict[str, deletions.DeletionStatus]:
    """The requests of a buffer's erase jobs; one this store does not know is recorded from its
    job (never taken for a duplicate: the application may use another store)."""
    ids = [i.job.request_id or "" for i in deletes]
    current = deletions.statuses(rt.audit, ids)
    unknown = [i for i in deletes if i.job.request_id and i.job.request_id not in current]
    for item in unknown:
        job = item.job
        assert job.request_id is not None
        opening.record_from_job(
            rt.audit, request_id=job.request_id, job_id=job.job_id,
            person_hash=job.person_hash, erasure=job.erasure,
            default_mode=rt.settings.deletion_mode,
        )  # fmt: skip
        log.warning("erasure request recorded from its job", extra={"job_id": job.job_id})
    if unknown:
        current = deletions.statuses(rt.audit, ids)
    return current


def _plan(
    rt: Runtime,
    item: Item,
    finals: set[str],
    erased: set[str],
    modes: dict[str, str],
    batching: bool,
) -> Planned | ItemResult:
    """Settle an identify/track that needs no request, or build the item's operations."""
    job = item.job
    if job.kind != "delete":
        if job.job_id in finals:
            return ItemResult(item, outcome="duplicate")
        if job.person_hash in erased:
            detail = erased_detail(attempt=item.attempt, redelivered=item.redelivered)
            return ItemResult(
                item, outcome=settle.finish(rt, job, "dropped", item.attempt, detail=detail)
            )
    ops = rt.destination.operations(job, partial(_clean, rt), modes.get(job.job_id, ""))
    return Planned(item, ops, [rt.destination.route(op, batching=batching) for op in ops])


def _clean(rt: Runtime, job: Job) -> dict[str, Any]:
    """Sanitize again in the worker (defence in depth: the policy may have changed since)."""
    if job.kind == "identify":
        return rt.sanitizer.apply(job.attributes or {}, rehash=False)
    return rt.sanitizer.apply(job.data or {}, rehash=False, enforce_limits=False)


def _chunked(rt: Runtime, planned: Sequence[Planned]) -> Iterator[list[Planned]]:
    """Group items so each batch body, as sent, stays within the destination's limit."""
    dest = rt.destination
    chunk: list[Planned] = []
    used = dest.batch_envelope_bytes - 1  # n operations need n - 1 commas
    for entry in planned:
        size = sum(len(op.body) + 1 for op in entry.ops)
        if chunk and used + size > dest.batch_max_bytes:
            yield chunk
            chunk, used = [], dest.batch_envelope_bytes - 1
        chunk.append(entry)
        used += size
    if chunk:
        yield chunk


def _send_chunk(rt: Runtime, chunk: list[Planned]) -> list[ItemResult]:
    body = rt.destination.batch_body([op.body for p in chunk for op in p.ops])
    owners = [(p, op) for p in chunk for op in p.ops]
    try:
        answer = send(rt, lambda: limited(rt, lambda: rt.destination.post_batch(body)))
    except RetryableError as exc:
        return [ItemResult(p.item, retry=exc) for p in chunk]
    except PermanentError:
        log.warning("batch refused as a whole; sending each item on its own")
        return [_guarded(rt, p.item, partial(_send_alone, rt, _unbatched(rt, p))) for p in chunk]
    refused: dict[int, dict[str, str]] = {}
    for index, reason in answer.failed.items():
        if 0 <= index < len(owners):
            planned, op = owners[index]
            refused.setdefault(id(planned), {})[op.action] = reason
    return _settle_sent(rt, chunk, answer.status, refused)


def _unbatched(rt: Runtime, planned: Planned) -> Planned:
    routes = [rt.destination.route(op, batching=False) for op in planned.ops]
    return Planned(planned.item, planned.ops, routes)


def _send_alone(rt: Runtime, planned: Planned) -> ItemResult:
    """Send one item's operations one request each; a refused one is recorded like a 207's."""
    status, refused = 0, dict[str, str]()
    for op, way in zip(planned.ops, planned.routes, strict=True):
        call = partial(_call, rt, planned, op, way)
        try:
            status = send(rt, partial(limited, rt, call))
        except PermanentError as exc:
            if planned.item.job.kind != "delete" or op.action == planned.ops[0].action:
                raise
            refused[op.action] = f"status{exc.status}"  # a later part, after an accepted one
    return _settle_sent(rt, [planned], status, {id(planned): refused} if refused else {})[0]


def _call(rt: Runtime, planned: Planned, op: Operation, way: Route) -> int:
    dest, job = rt.destination, planned.item.job
    if way != BATCH:
        return dest.post_single(job, op, way)
    answer = dest.post_batch(dest.batch_body([op.body]))
    if answer.failed:
        raise OperationRejectedError(
            f"Customer.io refused the {job.kind} operation ({_code(answer.failed[0])})", status=207
        )
    return answer.status


def _settle_sent(
    rt: Runtime, sent: Sequence[Planned], status: int, refused: dict[int, dict[str, str]]
) -> list[ItemResult]:
    """Record the outcome of sent items: accepted ones together, refused ones alone."""
    results: list[ItemResult] = []
    accepted: list[Item] = []
    erased: list[Item] = []
    details: dict[str, str] = {}
    for planned in sent:
        item, why = planned.item, refused.get(id(planned), {})
        first = planned.ops[0].action
        if first in why:  # the item's (first) operation was refused
            error = OperationRejectedError(
                f"Customer.io refused the {item.job.kind} operation ({_code(why[first])})",
                status=status,
            )
            results.append(_dead(rt, item, error))
        elif item.job.kind == "delete":
            if why:  # suppress accepted (it deletes the profile), the delete after it refused
                details[item.job.job_id] = (
                    "suppressed; delete refused (" + _code(next(iter(why.values()))) + ")"
                )
            erased.append(item)
        else:
            accepted.append(item)
    results += _transient(lambda: settle.finish_many(rt, accepted, status), accepted)
    results += _transient(lambda: settle.complete_erasures(rt, erased, status, details), erased)
    return results


def _transient(step: Callable[[], list[ItemResult]], items: Sequence[Item]) -> list[ItemResult]:
    if not items:
        return []
    try:
        return step()
    except TRANSIENT as exc:
        return [ItemResult(i, retry=exc) for i in items]


def _dead(rt: Runtime, item: Item, exc: Exception) -> ItemResult:
    try:
        return ItemResult(
            item, outcome=settle.dead_letter(rt, item.job, item.sealed, exc, item.attempt)
        )
    except TRANSIENT as failure:
        return ItemResult(item, retry=failure)


def _code(reason: str) -> str:
    """Keep only a short token of Customer.io's reason (it is a code, never echo free text)."""
    token = "".join(ch for ch in reason[:40] if ch.isalnum() or ch in "_-")
    return token or "invalid"


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
