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


def job_finished(kind: str, outcome: str) -> None:
    JOBS.labels(kind=kind, outcome=outcome).inc()


def job_retried(kind: str) -> None:
    RETRIES.labels(kind=kind).inc()


def retry_unpublished(kind: str) -> None:
    UNPUBLISHED.labels(kind=kind).inc()


def response(operation: str, status: int | None) -> None:
    RESPONSES.labels(operation=operation, status=str(status) if status else "error").inc()


def limiter_waited(seconds: float, limiter: str = "track") -> None:
    LIMITER_WAIT.labels(limiter=limiter).observe(seconds)


# -- deletion gauges, computed at scrape time ----------------------------------------------


class DeletionCollector(Collector):
    """Erasure requests by state and overdue, counted in the audit store at each scrape.

    Uses its own engine without a pool: no connection is held between scrapes, so none is
    inherited by the pool processes Celery forks later.
    """

    def __init__(self, audit_url: str, *, timeout_s: float = 5.0) -> None:
        self._engine = _scrape_engine(audit_url, timeout_s)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        by_state, overdue, up = self._families()
        try:
            counts, late = self.counts()
        except SQLAlchemyError as exc:
            log.warning("deletion metrics unavailable", extra={"error_class": type(exc).__name__})
            up.add_metric([], 0)
            return [up]
        for state, count in counts.items():
            by_state.add_metric([state], count)
        overdue.add_metric([], late)
        up.add_metric([], 1)
        return [by_state, overdue, up]

    def counts(self) -> tuple[dict[str, int], int]:
        """``({state: count}, overdue)``; every known state is present, zero if it has no row."""
        from cioguard.audit.schema import deletion_requests as dr
        from cioguard.erasure.requests import STATES

        due = func.coalesce(dr.c.extended_to, dr.c.due_at)
        with self._engine.connect() as conn:
            rows = conn.execute(select(dr.c.state, func.count()).group_by(dr.c.state)).all()
            late = conn.scalar(
                select(func.count()).where(dr.c.state != "completed").where(due < _now())
            )
        counts = dict.fromkeys(STATES, 0)
        counts.update({str(state): int(n) for state, n in rows})
        return counts, int(late or 0)

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
                "cioguard_audit_store_up", "1 if the audit store answered the deletion counts"
            ),
        ]


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

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.deletions.close()


def start_server(port: int, audit_url: str, *, addr: str = "0.0.0.0") -> MetricsServer | None:
    """Serve ``/metrics`` from this (the main) process in a daemon thread.

    Needs :func:`setup_multiprocess` first. A port already in use is logged, not fatal: delivery
    matters more than its metrics.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("metrics: setup_multiprocess() must run before start_server()")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    deletions = DeletionCollector(audit_url)
    registry.register(deletions)
    try:
        httpd, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        deletions.close()
        log.error("metrics port unavailable", extra={"error_class": type(exc).__name__})
        return None
    log.info("metrics served on port %d", port)
    return MetricsServer(port, httpd, thread, deletions)
