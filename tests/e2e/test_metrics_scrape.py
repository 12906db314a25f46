"""Scrape a real worker: prefork pool of 2 processes, real Redis, the TLS sandbox, real HTTP.

The counters must add up across the pool processes (multiprocess mode) and the deletion gauges
must reflect the audit store at scrape time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from cioguard.audit.schema import deletion_requests
from cioguard.audit.store import utcnow
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess, free_port
from tests.helpers import wait_for_finals, wait_until

pytestmark = pytest.mark.e2e
RESPONSES = "cioguard_customerio_responses_total"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return samples(response.text)


def test_metrics_reflect_the_jobs_a_prefork_worker_ran(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    tmp_path: Path,
) -> None:
    cio.control.configure(reject_id_prefix="poison-")
    port = free_port()
    start_worker(concurrency=2, CIOGUARD_METRICS_PORT=port, CIOGUARD_BATCH="0")

    jobs = [producer.identify(f"m-{i}", {"plan": "pro"}) for i in range(6)]
    jobs += [producer.track(f"m-{i}", "signed_up", {"source": "ads"}) for i in range(3)]
    jobs.append(producer.identify("poison-1", {"plan": "pro"}))
    done = producer.delete_person("m-gone")
    late = producer.delete_person("m-late")  # completed, then made failed and overdue below
    wait_for_finals(producer.audit, len(jobs) + 2)
    with producer.audit.engine.begin() as conn:
        conn.execute(
            update(deletion_requests)
            .where(deletion_requests.c.request_id == late)
            .values(state="failed", due_at=utcnow() - timedelta(days=1))
        )

    def counted() -> bool:
        found = scrape(port)
        return value(found, "cioguard_jobs_total", kind="identify", outcome="delivered") == 6

    wait_until(counted, timeout_s=60, what="the identify counter")
    found = scrape(port)

    assert value(found, "cioguard_jobs_total", kind="identify", outcome="delivered") == 6
    assert value(found, "cioguard_jobs_total", kind="track", outcome="delivered") == 3
    assert value(found, "cioguard_jobs_total", kind="identify", outcome="dead_lettered") == 1
    assert (
        value(found, "cioguard_customerio_responses_total", operation="identify", status="200") == 6
    )
    assert (
        value(found, "cioguard_customerio_responses_total", operation="identify", status="400") == 1
    )
    assert value(found, "cioguard_limiter_wait_seconds_count", limiter="track") >= 10
    assert value(found, "cioguard_deletion_requests", state="completed") == 1
    assert value(found, "cioguard_deletion_requests", state="failed") == 1
    assert value(found, "cioguard_deletion_requests_overdue") == 1
    assert value(found, "cioguard_audit_store_up") == 1
    assert producer.deletion_status(done).state == "completed"
    assert not any("m-" in name or "poison" in name for name, _ in found)
    assert not any("poison" in v or "m-gone" in v for _, labels in found for _, v in labels)

    # the pool processes log one JSON line per finished job, with context and no person id
    log = (tmp_path / "worker-0.log").read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    delivered = [e for e in entries if e.get("outcome") == "delivered"]
    assert len(delivered) == 9
    assert all({"job_id", "kind", "person_hash"} <= e.keys() for e in delivered)
    assert "poison-1" not in log and "m-gone" not in log


def test_metrics_count_jobs_of_a_batching_worker(
    producer: Producer, start_worker: Callable[..., WorkerProcess], cio: SandboxServer
) -> None:
    cio.control.configure(reject_id_prefix="poison-")
    port = free_port()
    start_worker(concurrency=2, CIOGUARD_METRICS_PORT=port, CIOGUARD_BATCH="1")

    jobs = [producer.identify(f"b-{i}", {"plan": "pro"}) for i in range(6)]
    jobs.append(producer.identify("poison-2", {"plan": "pro"}))
    wait_for_finals(producer.audit, len(jobs))

    def counted() -> bool:
        found = scrape(port)
        return value(found, "cioguard_jobs_total", kind="identify", outcome="delivered") == 6

    wait_until(counted, timeout_s=60, what="the identify counter")
    found = scrape(port)
    assert value(found, "cioguard_jobs_total", kind="identify", outcome="dead_lettered") == 1
    batches = [v for (name, labels), v in found.items() if name == RESPONSES and
               dict(labels).get("operation") == "batch"]  # fmt: skip
    assert sum(batches) >= 1


# -- the shipped alert rules and dashboard use only metrics a real worker exposes -------------

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts"
METRIC = re.compile(r"\bcioguard_[a-z0-9_]+")


def shipped_expressions() -> dict[str, str]:
    """Every PromQL expression of docs/alerts/: alert rules and dashboard panel targets."""
    rules = yaml.safe_load((ALERTS / "cioguard-rules.yml").read_text())
    found = {f"rule {r['alert']}": str(r["expr"]) for g in rules["groups"] for r in g["rules"]}
    dashboard = json.loads((ALERTS / "cioguard-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    return found


def test_shipped_rules_and_dashboard_use_only_metrics_of_a_real_scrape(
    producer: Producer, start_worker: Callable[..., WorkerProcess], cio: SandboxServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    cio.control.configure(reject_id_prefix="poison-")
    port = free_port()
    start_worker(concurrency=2, CIOGUARD_METRICS_PORT=port, CIOGUARD_BATCH="0")
    jobs = [producer.identify(f"a-{i}", {"plan": "pro"}) for i in range(3)]
    jobs.append(producer.identify("poison-a", {"plan": "pro"}))  # a dead letter (400)
    wait_for_finals(producer.audit, len(jobs))
    cio.control.set_credentials([("another-site", "another-key")])  # the key is now refused
    refused = producer.identify("a-refused", {"plan": "pro"})
    producer.delete_person("a-gone")  # stays open: its job retries on the refused key too
    log = tmp_path / "worker-0.log"

    def retry_logged() -> list[dict[str, object]]:
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        return [e for e in lines if e.get("msg") == "job retrying" and e.get("job_id") == refused]

    wait_until(lambda: bool(retry_logged()), timeout_s=60, what="the refused job's retry")
    [retry] = retry_logged()[:1]
    assert (retry["reason"], retry["status"]) == ("credentials_rejected", 401)
    dead = [json.loads(x) for x in log.read_text().splitlines() if '"dead_lettered"' in x]
    assert any(e.get("reason") == "operation_rejected" and e.get("status") == 400 for e in dead)

    wait_until(lambda: value(scrape(port), RESPONSES, operation="identify", status="401") > 0,
               timeout_s=60, what="the 401 counter")  # fmt: skip
    found = scrape(port)
    exposed = {name for name, _ in found}
    used = {m for expr in shipped_expressions().values() for m in METRIC.findall(expr)}
    assert len(used) >= 12
    assert used - exposed == set(), "docs/alerts/ uses metrics no worker exposes"
    assert value(found, "cioguard_dead_letters_waiting") == 1
    assert value(found, "cioguard_queue_depth", queue="cioguard") == 0
    assert value(found, "cioguard_broker_up") == 1
    assert value(found, "cioguard_deletion_requests_next_due_seconds") > 25 * 86400


def test_metrics_bind_127_0_0_1_by_default(
    producer: Producer, start_worker: Callable[..., WorkerProcess], cio: SandboxServer
) -> None:
    port = free_port()
    start_worker(concurrency=1, CIOGUARD_METRICS_PORT=port)
    assert scrape(port)  # answers on 127.0.0.1
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = {line.split()[1] for line in listening if line.split()[3] == "0A"}  # LISTEN
    assert f"0100007F:{port:04X}" in local and f"00000000:{port:04X}" not in local
