"""Measured runs: a warm fleet of workers, N jobs, time until the N-th completion.

Two ways to time a run, both used by the benchmarks:

* ``e2e``: the application enqueues N jobs as fast as it can while the workers consume; the clock
  runs from the first enqueue to the N-th completion. This is the full path (validate, sanitize,
  encrypt and enqueue in the application; the worker's steps; the audit row), on one machine.
* ``drain``: the workers stop consuming, N jobs are enqueued, the workers resume; the clock runs
  from the resume to the N-th completion. This is the workers' throughput alone (the
  application's cost per call is measured on its own by the enqueue benchmark).

Every run starts with a warm-up (each pool process builds its clients and opens its HTTPS
connection on its first job), so start-up is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.bare_app import QUEUE as BARE_QUEUE
from bench.bare_app import TASK as BARE_TASK
from bench.bare_app import BareWorker, bare_env
from bench.common import (
    CpuSnapshot,
    Stack,
    attributes,
    final_count,
    final_times,
    ok_requests,
    wait_for,
)
from cioguard.broker.celeryconf import build_celery
from cioguard.config import Settings

WARMUP_JOBS = 40


@dataclass(frozen=True)
class RunResult:
    """One measured run."""

    system: str
    mode: str
    concurrency: int
    batch: bool
    jobs: int
    seconds: float
    jobs_per_s: float
    enqueue_s: float
    cpu_ms_per_job: dict[str, float]
    requests: int
    per_second: list[int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timeout_s(jobs: int) -> float:
    return 120 + jobs / 10


def _measure(
    stack: Stack,
    *,
    system: str,
    mode: str,
    concurrency: int,
    batch: bool,
    jobs: int,
    enqueue: Callable[[int, int], None],
    done: Callable[[], int],
    queue: str,
    completions: Callable[[], list[float]] | None = None,
) -> RunResult:
    """Warm up, then time ``jobs`` jobs in ``mode`` (``done()`` counts completions)."""
    [result] = _measure_drains(
        stack, system=system, mode=mode, concurrency=concurrency, batch=batch, jobs=jobs,
        enqueue=enqueue, done=done, queue=queue, completions=completions, drains=1,
    )  # fmt: skip
    return result


def _measure_drains(
    stack: Stack,
    *,
    system: str,
    mode: str,
    concurrency: int,
    batch: bool,
    jobs: int,
    enqueue: Callable[[int, int], None],
    done: Callable[[], int],
    queue: str,
    completions: Callable[[], list[float]] | None = None,
    drains: int,
) -> list[RunResult]:
    """Warm up once, then time ``drains`` runs of ``jobs`` jobs each on the same warm workers.

    Several drains per worker start give a median at a fraction of the cost of restarting the
    fleet for every sample (most of a phase is starting workers and enqueueing).
    """
    enqueue(0, WARMUP_JOBS)
    wait_for(done, WARMUP_JOBS, timeout_s=120)
    results = []
    for n in range(drains):
        start = WARMUP_JOBS + n * jobs
        results.append(_one_run(
            stack, system=system, mode=mode, concurrency=concurrency, batch=batch, jobs=jobs,
            enqueue=lambda count, first=start: enqueue(first, count), done=done, queue=queue,
            completions=completions, already=start,
        ))  # fmt: skip
    return results


def _one_run(
    stack: Stack,
    *,
    system: str,
    mode: str,
    concurrency: int,
    batch: bool,
    jobs: int,
    enqueue: Callable[[int], None],
    done: Callable[[], int],
    queue: str,
    completions: Callable[[], list[float]] | None,
    already: int,
) -> RunResult:
    """Time ``jobs`` more completions after ``already`` (see the module docstring's modes)."""
    requests_before = stack.sandbox.control.stats()["requests_total"]
    if mode == "drain":
        stack.pause_consumers(queue)
        time.sleep(0.5)
        t_enq = time.perf_counter()
        enqueue(jobs)
        enqueue_s = time.perf_counter() - t_enq
        cpu0 = CpuSnapshot.take(stack)
        stack.resume_consumers(queue)
    else:
        cpu0 = CpuSnapshot.take(stack)
        t_enq = time.perf_counter()
        enqueue(jobs)
        enqueue_s = time.perf_counter() - t_enq
    started_wall = time.time() - (time.monotonic() - cpu0.at)
    finished_at = wait_for(done, already + jobs, timeout_s=_timeout_s(jobs), poll_s=0.05)
    cpu1 = CpuSnapshot.take(stack)
    seconds = finished_at - cpu0.at
    per_second = _per_second(completions(), started_wall) if completions else []
    requests = stack.sandbox.control.stats()["requests_total"] - requests_before
    return RunResult(
        system=system, mode=mode, concurrency=concurrency, batch=batch, jobs=jobs,
        seconds=round(seconds, 3), jobs_per_s=round(jobs / seconds, 1),
        enqueue_s=round(enqueue_s, 3), cpu_ms_per_job=cpu0.per_job_ms(cpu1, jobs),
        requests=requests, per_second=per_second,
    )  # fmt: skip


def _per_second(stamps: list[float], started_wall: float) -> list[int]:
    """Completions in each second after ``started_wall`` (warm-up rows fall before it)."""
    buckets: list[int] = []
    for stamp in stamps:
        second = int(stamp - started_wall)
        if second < 0:
            continue
        buckets.extend([0] * (second + 1 - len(buckets)))
        buckets[second] += 1
    return buckets


def cioguard_run(
    stack: Stack, *, jobs: int, mode: str, concurrency: int = 2, batch: bool = False,
    faults: dict[str, Any] | None = None, **env_overrides: Any,
) -> RunResult:  # fmt: skip
    """A cioguard fleet (one node) at an unlimited rate unless ``env_overrides`` say otherwise.

    ``faults`` configure the sandbox for this run (``strict_rate_per_s`` for a limit).
    """
    stack.phase(**(faults or {}))
    env = stack.env(CIOGUARD_BATCH=int(batch), **env_overrides)
    producer = stack.producer(env)
    stack.start_workers(env, nodes=1, concurrency=concurrency)

    def enqueue(start: int, count: int) -> None:
        for i in range(start, start + count):
            producer.identify(f"person-{i}", attributes(i))

    try:
        return _measure(
            stack, system="cioguard", mode=mode, concurrency=concurrency, batch=batch, jobs=jobs,
            enqueue=enqueue, done=lambda: final_count(producer.audit), queue="cioguard",
            completions=lambda: final_times(producer.audit),
        )  # fmt: skip
    finally:
        stack.stop_workers()
        producer.audit.dispose()
        producer.celery.close()


def bare_run(stack: Stack, *, jobs: int, mode: str, concurrency: int = 2) -> RunResult:
    """The bare Celery task (:mod:`bench.bare_app`), no rate limit, same sandbox."""
    stack.phase()
    sandbox = stack.sandbox
    env = bare_env(
        stack.redis.url, sandbox.url, str(sandbox.ca_path), sandbox.site_id, sandbox.api_key
    )
    stack.start_workers(env, nodes=1, concurrency=concurrency, factory=BareWorker)
    celery = build_celery(Settings(CIOGUARD_BROKER_URL=stack.redis.url), "bench-bare-producer")

    def enqueue(start: int, count: int) -> None:
        for i in range(start, start + count):
            celery.send_task(BARE_TASK, args=[f"person-{i}", attributes(i)], queue=BARE_QUEUE)

    try:
        return _measure(
            stack, system="bare celery", mode=mode, concurrency=concurrency, batch=False,
            jobs=jobs, enqueue=enqueue, done=lambda: ok_requests(sandbox.control),
            queue=BARE_QUEUE,
        )  # fmt: skip
    finally:
        stack.stop_workers()
        celery.close()
