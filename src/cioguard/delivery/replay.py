"""Replaying dead letters: open the sealed job, give it a new job id, seal and enqueue again.

A new id is needed because the old one already has its final audit row (``dead_lettered``),
which makes the worker treat a re-run of that id as done.

Nothing is marked before it exists: an identify/track/webhook letter is enqueued first and
marked replayed after, so with the broker down it stays listed and the audit never says
"replayed as" a job that was not sent (at worst a second replay sends a second copy, which the
event id and the identify's idempotence absorb). An erase letter moves its request back to
``received`` with the new sealed job in the outbox, in the same transaction that marks the letter
replayed, then publishes: if the publish fails, the workers' relay sends it. A letter that cannot
be opened (no configured key opens it), or whose person was erased since, is reported and
skipped; it never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cioguard.broker.celeryconf import DELIVER_TASK, ERASE_TASK, WEBHOOK_TASK
from cioguard.broker.envelope import EnvelopeError
from cioguard.broker.jobs import Job, new_job_id
from cioguard.delivery import deadletters
from cioguard.erasure import outbox
from cioguard.erasure import requests as deletions
from cioguard.errors import BrokerUnavailableError
from cioguard.producer.api import Producer, get_producer


@dataclass
class ReplayReport:
    """What a replay did: ``(old, new)`` job ids sent, and ``(job id, reason)`` skipped."""

    replayed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def replay(*, job_id: str | None, producer: Producer | None = None) -> ReplayReport:
    """Replay every unreplayed dead letter, or the one with ``job_id``."""
    producer = producer or get_producer()
    report = ReplayReport()
    letters = [
        dl for dl in deadletters.list_all(producer.audit) if job_id is None or dl.job_id == job_id
    ]
    for letter in letters:
        reason = _why_not(letter)
        if reason is None:
            try:
                report.replayed.append((letter.job_id, _replay_one(producer, letter)))
                continue
            except (EnvelopeError, ValueError, TypeError):
                reason = "the payload cannot be opened with the configured keys"
            except BrokerUnavailableError:
                reason = "the broker did not answer; the letter stays listed"
            except _NotReopened:
                reason = "its erasure request is no longer failed (completed or reopened since)"
        report.skipped.append((letter.job_id, reason))
    return report


class _NotReopened(Exception):
    """The erase letter's request moved on since it failed: nothing to replay."""


def _why_not(letter: deadletters.DeadLetter) -> str | None:
    if letter.erased_at is not None:
        return "refused: the person was erased since (the payload was destroyed)"
    return None


def _replay_one(producer: Producer, letter: deadletters.DeadLetter) -> str:
    if letter.kind == "webhook":  # not a Job: re-sent sealed as is
        return replay_webhook(producer, letter)
    job = Job.from_payload(producer.envelope.open(letter.sealed))
    fresh = replace(job, job_id=new_job_id(), original_event_id=job.event_id)
    sealed = producer.envelope.seal(fresh.to_payload())
    if job.kind == "delete" and job.request_id:
        return _replay_erasure(producer, letter, job.request_id, fresh.job_id, sealed)
    producer.send_sealed(sealed, fresh.job_id, DELIVER_TASK)
    deadletters.mark_replayed(producer.audit, letter.job_id, fresh.job_id)
    return fresh.job_id


def _replay_erasure(
    producer: Producer, letter: deadletters.DeadLetter, request_id: str, job_id: str, sealed: str
) -> str:
    reopened = deletions.Transition(request_id, "received", job_id, sealed_job=sealed)
    if request_id not in (deletions.apply_transitions(producer.audit, [reopened]) or set()):
        raise _NotReopened()
    deadletters.mark_replayed(producer.audit, letter.job_id, job_id)
    try:
        producer.send_sealed(sealed, job_id, ERASE_TASK)
    except BrokerUnavailableError:
        return job_id  # kept in the outbox: the workers' relay publishes it
    outbox.mark_published(producer.audit, [request_id])
    return job_id


def replay_webhook(producer: Producer, letter: deadletters.DeadLetter) -> str:
    """Enqueue a dead-lettered webhook job again, as is, under a new job id; return that id.

    A new id is needed because the old one already has its final (``dead_lettered``) row. The
    sealed payload is re-sent unopened: it keeps its ``received_at``, like replayed deliveries
    keep their ``created_at``.
    """
    fresh = new_job_id()
    producer.send_sealed(letter.sealed, fresh, WEBHOOK_TASK)
    deadletters.mark_replayed(producer.audit, letter.job_id, fresh)
    return fresh
