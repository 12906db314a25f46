"""Prometheus metrics of the worker (prometheus-client), served on ``CIOGUARD_METRICS_PORT``.

The functions at the top are the only way the rest of the code touches metrics, so the data path
does not depend on prometheus-client's API. Label values are fixed vocabularies (kinds, outcomes,
operations, statuses, states), never ids.

What is exported:

* ``cioguard_jobs_total{kind, outcome}``: jobs finished (delivered, dropped, dead_lettered, ...);
* ``cioguard_job_retries_total{kind}``: task retries scheduled;
* ``cioguard_customerio_responses_total{operation, status}``: Track API answers (``error`` when
  no HTTP answer came);
* ``cioguard_limiter_wait_seconds{limiter}``: time spent waiting for a rate-limit token;
* ``cioguard_deletion_requests{state}`` and ``cioguard_deletion_requests_overdue``: erasure
  requests by current state, and those past their due date in force (extension included) and
  not completed; ``cioguard_audit_store_up`` says whether those two could be read.

Several processes, one port. Celery's prefork pool runs a main process and N children; each child
counts in its own memory. prometheus-client's multiprocess mode is used: :func:`setup_multiprocess`
(called in the main process from ``celeryd_init``, before the pool forks) points
``PROMETHEUS_MULTIPROC_DIR`` at an empty directory, so every process writes its counters to its
own mmap file there; :func:`start_server` (called from ``worker_ready``) serves their sum from the
main process; :func:`process_exited` (``worker_process_shutdown``) does the bookkeeping for a
child that leaves. The directory is ``PROMETHEUS_MULTIPROC_DIR`` when set (emptied at start: one
worker main process per directory), or a fresh temporary directory.

The deletion gauges are computed at scrape time by :class:`DeletionCollector` (two indexed
``COUNT`` queries on ``deletion_requests``), not kept by the worker: they are always current,
whatever process changed the rows, and cost nothing between scrapes.

Note:
    The mode is switched on at run time (``prometheus_client.values.ValueClass``) rather than by
    the environment variable alone, because the CLI has imported prometheus-client long before
    the worker starts. A metric's values are created when its labels are first used, so every
    metric here must have labels (a test holds this): an unlabeled one would be created at
    import, in the main process only, and never counted across processes.

Note:
    One scrape per container/host: a fleet scaled to N containers has N targets (Prometheus'
    DNS service discovery on the compose service name finds them all). Counters restart from
    zero when a worker restarts; ``rate()``/``increase()`` handle that.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = logging.getLogger("cioguard.ops.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

JOBS = Counter("cioguard_jobs_total", "Jobs finished, by kind and outcome", ["kind", "outcome"])
RETRIES = Counter("cioguard_job_retries_total", "Task retries scheduled, by kind", ["kind"])
UNPUBLISHED = Counter(
    "cioguard_retry_publish_failures_total",
    "Retries the broker would not take (the message was kept and handed back), by kind",
    ["kind"],
)
RESPONSES = Counter(
    "cioguard_customerio_responses_total", "Customer.io responses, by operation and status",
    ["operation", "status"],
)  # fmt: skip
LIMITER_WAIT = Histogram(
    "cioguard_limiter_wait_seconds", "Time spent waiting for a rate-limit token, by limiter",
    ["limiter"], buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)  # fmt: skip
ALL = (JOBS, RETRIES, UNPUBLISHED, RESPONSES, LIMITER_WAIT)


def job_finished(kind: str, outcome: str, count: int = 1) -> None:
    """``count`` jobs of ``kind`` ended with ``outcome`` (a batch counts its jobs at once)."""
    JOBS.labels(kind=kind, outcome=outcome).inc(count)


def job_retried(kind: str) -> None:
    RETRIES.labels(kind=kind).inc()


def retry_unpublished(kind: str) -> None:
    UNPUBLISHED.labels(kind=kind).inc()


def response(operation: str, status: int | None) -> None:
    RESPONSES.labels(operation=operation, status=str(status) if status else "error").inc()


def limiter_waited(seconds: float, limiter: str = "track") -> None:
    LIMITER_WAIT.labels(limiter=limiter).observe(seconds)


# -- deletion gauges, computed at scrape time ----------------------------------------------


@dataclass(frozen=True)
class AuditCounts:
    """One reading of the audit store for the gauges; ages in seconds."""

    by_state: dict[str, int]
    overdue: int
    oldest_open_age_s: float
    next_due_s: float | None
    dead_letters: int
    dead_letters_waiting: int
    unpublished: int = 0
    unpublished_oldest_age_s: float = 0.0


class DeletionCollector(Collector):
    """Erasure requests and dead letters, counted in the audit store at each scrape.

    * ``cioguard_deletion_requests{state}``, ``cioguard_deletion_requests_overdue``;
    * ``cioguard_deletion_requests_oldest_open_age_seconds``: since the oldest request not yet
      completed (received, in progress or failed) was received; 0 if there is none;
    * ``cioguard_deletion_requests_next_due_seconds``: until the nearest due date in force of a
      request not completed (negative once overdue); absent when there is none;
    * ``cioguard_dead_letters`` (every row) and ``cioguard_dead_letters_waiting`` (not replayed);
    * ``cioguard_deletion_requests_unpublished`` and its ``_oldest_age_seconds``: requests whose
      erase job is in the outbox and not known to have reached the broker (a failed publish);
      the workers re-publish them after ``CIOGUARD_REQUEUE_AFTER_S``, so an age above that
      means no relay is running or the broker is still refusing;
    * ``cioguard_audit_store_up``.

    Uses its own engine without a pool: no connection is held between scrapes, so none is
    inherited by the pool processes Celery forks later.
    """

    def __init__(self, audit_url: str, *, timeout_s: float = 5.0) -> None:
        self._engine = _scrape_engine(audit_url, timeout_s)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        by_state, overdue, oldest, next_due, letters, waiting, unpub, unpub_age, up = (
            self._families()
        )
        try:
            found = self.read()
        except SQLAlchemyError as exc:
            log.warning("deletion metrics unavailable", extra={"error_class": type(exc).__name__})
            up.add_metric([], 0)
            return [up]
        for state, count in found.by_state.items():
            by_state.add_metric([state], count)
        overdue.add_metric([], found.overdue)
        oldest.add_metric([], found.oldest_open_age_s)
        if found.next_due_s is not None:
            next_due.add_metric([], found.next_due_s)
        letters.add_metric([], found.dead_letters)
        waiting.add_metric([], found.dead_letters_waiting)
        unpub.add_metric([], found.unpublished)
        unpub_age.add_metric([], found.unpublished_oldest_age_s)
        up.add_metric([], 1)
        return [by_state, overdue, oldest, next_due, letters, waiting, unpub, unpub_age, up]

    def counts(self) -> tuple[dict[str, int], int]:
        """``({state: count}, overdue)``; every known state is present, zero if it has no row."""
        found = self.read()
        return found.by_state, found.overdue

    def read(self) -> AuditCounts:
        """Every gauge's value, in one connection (indexed queries, and a count of dead letters)."""
        from cioguard.audit.schema import dead_letters as dl
        from cioguard.audit.schema import deletion_requests as dr
        from cioguard.erasure.requests import STATES

        due = func.coalesce(dr.c.extended_to, dr.c.due_at)
        now = _now()
        with self._engine.connect() as conn:
            rows = conn.execute(select(dr.c.state, func.count()).group_by(dr.c.state)).all()
            open_ = select(func.min(dr.c.received_at), func.min(due)).where(
                dr.c.state != "completed"
            )
            first_received, first_due = conn.execute(open_).one()
            late = conn.scalar(
                select(func.count()).where(dr.c.state != "completed").where(due < now)
            )
            total, waiting = conn.execute(
                select(func.count(), func.count().filter(dl.c.replayed_at.is_(None)))
            ).one()
            unpublished, first_unpublished = conn.execute(
                select(func.count(), func.min(dr.c.received_at))
                .where(dr.c.state == "received")
                .where(dr.c.sealed_job.is_not(None))
                .where(dr.c.published_at.is_(None))
            ).one()
        counts = dict.fromkeys(STATES, 0)
        counts.update({str(state): int(n) for state, n in rows})
        received, due_at = _aware(first_received), _aware(first_due)
        return AuditCounts(
            by_state=counts, overdue=int(late or 0),
            oldest_open_age_s=max(0.0, (now - received).total_seconds()) if received else 0.0,
            next_due_s=(due_at - now).total_seconds() if due_at else None,
            dead_letters=int(total or 0), dead_letters_waiting=int(waiting or 0),
            unpublished=int(unpublished or 0),
            unpublished_oldest_age_s=_age_s(now, _aware(first_unpublished)),
        )  # fmt: skip

    def close(self) -> None:
        self._engine.dispose()

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "cioguard_deletion_requests", "Erasure requests, by current state", labels=["state"]
            ),
            GaugeMetricFamily(
                "cioguard_deletion_requests_overdue",
                "Erasure requests past their due date in force and not completed",
            ),
            GaugeMetricFamily(
                "cioguard_deletion_requests_oldest_open_age_seconds",
                "Since the oldest erasure request not completed was received",
            ),
            GaugeMetricFamily(
                "cioguard_deletion_requests_next_due_seconds",
                "Until the nearest due date in force of a request not completed (negative: late)",
            ),
            GaugeMetricFamily("cioguard_dead_letters", "Dead-lettered jobs kept (all)"),
            GaugeMetricFamily(
                "cioguard_dead_letters_waiting", "Dead-lettered jobs not yet replayed"
            ),
            GaugeMetricFamily(
                "cioguard_deletion_requests_unpublished",
                "Erasure requests whose job is in the outbox and has not reached the broker",
            ),
            GaugeMetricFamily(
                "cioguard_deletion_requests_unpublished_oldest_age_seconds",
                "Since the oldest erasure request whose job has not reached the broker was "
                "received",
            ),
            GaugeMetricFamily(
                "cioguard_audit_store_up", "1 if the audit store answered the deletion counts"
            ),
        ]


def _age_s(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then else 0.0


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _scrape_engine(audit_url: str, timeout_s: float) -> Engine:
    key = "timeout" if audit_url.startswith("sqlite") else "connect_timeout"
    return create_engine(audit_url, poolclass=NullPool, connect_args={key: int(timeout_s)})


# -- multiprocess mode and the HTTP endpoint -----------------------------------------------


def setup_multiprocess(directory: str | Path | None = None) -> Path:
    """Switch this process (and the children it forks from now on) to multiprocess mode.

    ``directory`` defaults to ``$PROMETHEUS_MULTIPROC_DIR``, else a new temporary directory;
    stale ``*.db`` files in it are removed (a restarted worker must not add an old run's counts
    or be confused by a reused pid). Returns the directory.
    """
    given = directory or os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="cioguard-metrics-"))
        atexit.register(_remove_dir, path, os.getpid())
    for stale in glob.glob(str(path / "*.db")):
        os.remove(stale)
    os.environ[MULTIPROC_ENV] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def _remove_dir(path: Path, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # forked children inherit atexit handlers
        shutil.rmtree(path, ignore_errors=True)


def process_exited(pid: int) -> None:
    """Bookkeeping for a pool process that leaves (its live gauges stop counting)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


@dataclass
class MetricsServer:
    """The running endpoint: ``GET /metrics`` on ``port``."""

    port: int
    httpd: WSGIServer
    thread: threading.Thread
    deletions: DeletionCollector
    queues: Collector | None = None

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.deletions.close()
        close = getattr(self.queues, "close", None)
        if close is not None:
            close()


def start_server(
    port: int, audit_url: str, *, addr: str = "127.0.0.1", broker_url: str | None = None
) -> MetricsServer | None:
    """Serve ``/metrics`` on ``addr:port`` from this (the main) process in a daemon thread.

    With ``broker_url``, the broker gauges (:mod:`cioguard.ops.queue_metrics`) are served too.
    Needs :func:`setup_multiprocess` first. A port already in use is logged, not fatal: delivery
    matters more than its metrics.
    """
    from cioguard.ops.queue_metrics import QueueCollector

    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("metrics: setup_multiprocess() must run before start_server()")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    deletions = DeletionCollector(audit_url)
    registry.register(deletions)
    queues = QueueCollector(broker_url) if broker_url else None
    if queues is not None:
        registry.register(queues)
    try:
        httpd, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        deletions.close()
        if queues is not None:
            queues.close()
        log.error("metrics port unavailable", extra={"error_class": type(exc).__name__})
        return None
    log.info("metrics served on port %d", port)
    return MetricsServer(port, httpd, thread, deletions, queues)
