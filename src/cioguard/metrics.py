"""Prometheus metrics of the worker (prometheus-client).

The functions below are the only way the rest of the code touches metrics, so the data path does
not depend on prometheus-client's API. Label values are fixed vocabularies (kinds, outcomes,
statuses), never ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS = Counter("cioguard_jobs_total", "Jobs finished, by kind and outcome", ["kind", "outcome"])
RETRIES = Counter("cioguard_job_retries_total", "Task retries scheduled, by kind", ["kind"])
RESPONSES = Counter(
    "cioguard_customerio_responses_total", "Customer.io responses, by operation and status",
    ["operation", "status"],
)  # fmt: skip
LIMITER_WAIT = Histogram(
    "cioguard_limiter_wait_seconds", "Time spent waiting for a rate-limit token",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)  # fmt: skip


def job_finished(kind: str, outcome: str) -> None:
    JOBS.labels(kind=kind, outcome=outcome).inc()


def job_retried(kind: str) -> None:
    RETRIES.labels(kind=kind).inc()


def response(operation: str, status: int | None) -> None:
    RESPONSES.labels(operation=operation, status=str(status) if status else "error").inc()


def limiter_waited(seconds: float) -> None:
    LIMITER_WAIT.observe(seconds)
