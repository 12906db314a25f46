"""Replaying dead letters: open the sealed job, give it a new job id, seal and enqueue again.

A new id is needed because the old one already has its final audit row (``dead_lettered``),
which makes the worker treat a re-run of that id as done.
"""

from __future__ import annotations

from dataclasses import replace

from cioguard.broker.celeryconf import DELIVER_TASK, ERASE_TASK, WEBHOOK_TASK
from cioguard.broker.jobs import Job, new_job_id
from cioguard.delivery import deadletters
from cioguard.producer.api import Producer, get_producer


def replay(*, job_id: str | None) -> int:
    producer = get_producer()
    letters = [
        dl for dl in deadletters.list_all(producer.audit) if job_id is None or dl.job_id == job_id
    ]
    for letter in letters:
        if letter.kind == "webhook":  # not a Job: re-sent sealed as is
            replay_webhook(producer, letter)
            continue
        job = Job.from_payload(producer.envelope.open(letter.sealed))
        fresh = replace(job, job_id=new_job_id(), original_event_id=job.event_id)
        task = ERASE_TASK if job.kind == "delete" else DELIVER_TASK
        if job.kind == "delete" and job.request_id:
            from cioguard.erasure import requests as deletions

            deletions.transition(producer.audit, job.request_id, "received", job_id=fresh.job_id)
        deadletters.mark_replayed(producer.audit, letter.job_id, fresh.job_id)
        producer.send_sealed(producer.envelope.seal(fresh.to_payload()), fresh.job_id, task)
    return len(letters)


def replay_webhook(producer: Producer, letter: deadletters.DeadLetter) -> str:
    """Enqueue a dead-lettered webhook job again, as is, under a new job id; return that id.

    A new id is needed because the old one already has its final (``dead_lettered``) row. The
    sealed payload is re-sent unopened: it keeps its ``received_at``, like replayed deliveries
    keep their ``created_at``.
    """
    fresh = new_job_id()
    deadletters.mark_replayed(producer.audit, letter.job_id, fresh)
    producer.send_sealed(letter.sealed, fresh, WEBHOOK_TASK)
    return fresh
