"""Unit tests for metrics.py: labels everywhere, deletion gauges from the audit store, and the
multiprocess endpoint (in a subprocess, so this test process keeps prometheus-client's defaults).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy import update

from cioguard.audit.schema import deletion_requests
from cioguard.audit.store import AuditStore, utcnow
from cioguard.erasure import opening
from cioguard.ops import metrics
from cioguard.sandbox.devstack import free_port


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    audit = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    audit.migrate()
    yield audit
    audit.dispose()


def gauges(collector: metrics.DeletionCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(s.labels.values())): s.value
        for family in collector.collect()
        for s in family.samples
    }


def open_request(store: AuditStore, n: int) -> str:
    opened = opening.open_request(
        store, f"{n:064x}", reason="erasure", manner="api", mode="suppress"
    )
    return opened.request_id


def set_row(store: AuditStore, request_id: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(deletion_requests)
            .where(deletion_requests.c.request_id == request_id)
            .values(**values)
        )


def test_every_metric_has_labels_so_multiprocess_mode_covers_it() -> None:
    defined = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert set(defined) == set(metrics.ALL)
    assert all(m._labelnames for m in defined)


def test_deletion_gauges_count_states_and_overdue_requests(
    store: AuditStore, tmp_path: Path
) -> None:
    ids = [open_request(store, n) for n in range(5)]
    yesterday, next_week = utcnow() - timedelta(days=1), utcnow() + timedelta(days=7)
    set_row(store, ids[0], state="completed", due_at=yesterday)  # done: never overdue
    set_row(store, ids[1], state="failed", due_at=yesterday)  # overdue
    set_row(store, ids[2], state="in_progress", due_at=yesterday)  # overdue
    set_row(store, ids[3], due_at=yesterday, extended_to=next_week)  # extended: not overdue
    collector = metrics.DeletionCollector(f"sqlite:///{tmp_path / 'audit.db'}")

    found = gauges(collector)
    collector.close()

    assert found[("cioguard_deletion_requests", ("received",))] == 2
    assert found[("cioguard_deletion_requests", ("in_progress",))] == 1
    assert found[("cioguard_deletion_requests", ("completed",))] == 1
    assert found[("cioguard_deletion_requests", ("failed",))] == 1
    assert found[("cioguard_deletion_requests_overdue", ())] == 2
    assert found[("cioguard_audit_store_up", ())] == 1


def test_an_unreachable_audit_store_reports_down_instead_of_failing_the_scrape(
    tmp_path: Path,
) -> None:
    collector = metrics.DeletionCollector(f"sqlite:///{tmp_path / 'missing' / 'audit.db'}")
    assert gauges(collector) == {("cioguard_audit_store_up", ()): 0}
    collector.close()


def test_start_server_refuses_to_serve_without_multiprocess_mode() -> None:
    with pytest.raises(RuntimeError, match="setup_multiprocess"):
        metrics.start_server(free_port(), "sqlite://")


MULTIPROCESS_SCRIPT = """
import os, socket, sys, urllib.request
from pathlib import Path
from cioguard.ops import metrics

directory = Path(sys.argv[1])
(directory / "counter_999999.db").write_bytes(b"stale")
metrics.setup_multiprocess()
assert not (directory / "counter_999999.db").exists()
assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)

for _ in range(3):
    pid = os.fork()
    if pid == 0:
        metrics.job_finished("identify", "delivered")
        metrics.response("identify", 200)
        metrics.limiter_waited(0.01)
        metrics.process_exited(os.getpid())
        os._exit(0)
    os.waitpid(pid, 0)

port = int(sys.argv[2])
server = metrics.start_server(port, "sqlite:///" + str(directory / "audit.db"), addr="127.0.0.1")
assert server is not None
with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    assert metrics.start_server(busy.getsockname()[1], "sqlite://", addr="127.0.0.1") is None
body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
server.stop()
print(body)
"""


def test_counters_from_forked_processes_are_summed_on_one_port(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    script = textwrap.dedent(MULTIPROCESS_SCRIPT)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory), str(free_port())],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = done.stdout
    assert 'cioguard_jobs_total{kind="identify",outcome="delivered"} 3.0' in body
    assert 'cioguard_customerio_responses_total{operation="identify",status="200"} 3.0' in body
    assert 'cioguard_limiter_wait_seconds_count{limiter="track"} 3.0' in body
    assert "cioguard_audit_store_up 0.0" in body  # no audit tables there: reported, not fatal
