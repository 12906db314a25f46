"""`cioguard demo`: the whole path on one machine, start to summary.

Starts a private Redis (or uses one that answers), the TLS sandbox and a worker; enqueues a
realistic mix of identifies, events and deletions through the public API; shows the queue
draining; ends with a summary table read from the audit store and the sandbox's own counts.
Everything lives in a temporary directory and stops at the end.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from cioguard.audit.schema import audit_log
from cioguard.audit.store import AuditStore
from cioguard.broker.envelope import new_key
from cioguard.cli._common import console
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess, redis_answers

PLANS = ["free", "starter", "pro", "enterprise"]


def _broker(stack: ExitStack) -> str:
    """A private redis-server when installed (demo jobs must never reach a real worker fleet)."""
    if shutil.which("redis-server"):
        return stack.enter_context(RedisServer()).url
    if redis_answers("redis://127.0.0.1:6379/15"):
        console.print("[yellow]redis-server not installed; using 127.0.0.1:6379 db 15[/]")
        return "redis://127.0.0.1:6379/15"
    raise SystemExit("cioguard demo: no Redis answers and redis-server is not installed")


def _person(i: int) -> tuple[str, dict[str, object]]:
    pid = f"demo-{i:05d}"
    return pid, {
        "email": f"person{i}@example.com",
        "firstName": f"Person{i}",
        "plan": random.choice(PLANS),
        "phone": f"+1415555{i % 10000:04d}",
        "password": "hunter2",  # dropped by the default policy
        "profile": {"creditCard": "4111 1111 1111 1111", "city": "Lyon"},
        "created_at": 1_700_000_000 + i,
    }


def run_demo(*, identifies: int, events: int, deletions: int, concurrency: int) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="cioguard-demo-"))
        stack.callback(shutil.rmtree, tmp, True)
        console.print(
            "[bold]cioguard demo[/]: starting Redis, the Customer.io sandbox and a worker"
        )
        broker = _broker(stack)
        sandbox = stack.enter_context(SandboxServer(ca_path=tmp / "sandbox-ca.pem"))
        env = {
            "CIOGUARD_BROKER_URL": broker,
            "CIOGUARD_AUDIT_URL": f"sqlite:///{tmp / 'audit.db'}",
            "CIOGUARD_HASH_KEY": secrets.token_urlsafe(48),
            "CIOGUARD_PAYLOAD_KEY": new_key(),
            "CIOGUARD_TRACK_URL": sandbox.url,
            "CIOGUARD_CA_BUNDLE": str(sandbox.ca_path),
            "CUSTOMERIO_SITE_ID": sandbox.site_id,
            "CUSTOMERIO_TRACK_API_KEY": sandbox.api_key,
            "CIOGUARD_RATE_LIMIT": os.environ.get("CIOGUARD_RATE_LIMIT", "200"),
            "CIOGUARD_LOG_FORMAT": "json",
            "CIOGUARD_SECRETS": "env",
        }
        os.environ.update(env)
        from cioguard.config import get_settings
        from cioguard.producer.api import get_producer

        get_settings.cache_clear()
        get_producer.cache_clear()
        producer = get_producer()
        producer.audit.migrate()
        stack.enter_context(
            WorkerProcess(env, concurrency=concurrency, log_path=tmp / "worker.log")
        )
        total = identifies + events + deletions
        t0 = time.monotonic()
        with _progress() as progress:
            task = progress.add_task("enqueue", total=total)
            for i in range(identifies):
                producer.identify(*_person(i))
                progress.advance(task)
            for i in range(events):
                pid, _ = _person(i % max(identifies, 1))
                producer.track(pid, "page_viewed", {"path": f"/docs/{i}", "plan": "pro"})
                progress.advance(task)
            for i in range(deletions):
                producer.delete_person(f"demo-erase-{i:03d}", reason="gdpr")
                progress.advance(task)
        finals = _drain(producer.audit, total)
        elapsed = time.monotonic() - t0
        leaked = _dropped_values_seen(sandbox)
        _summary(producer.audit, sandbox.control.stats(), finals, total, elapsed, leaked)
        producer.audit.dispose()
    console.print(f"demo finished in {time.monotonic() - started:.1f} s")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip


def _final_count(store: AuditStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.scalar(select(func.count()).where(audit_log.c.final_job_id.is_not(None))) or 0
        )


def _drain(store: AuditStore, total: int, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s
    with _progress() as progress:
        task = progress.add_task("deliver", total=total)
        done = 0
        while done < total and time.monotonic() < deadline:
            done = _final_count(store)
            progress.update(task, completed=done)
            time.sleep(0.25)
    return done


DROPPED_VALUES = ("hunter2", "4111 1111 1111 1111", "+1415555")


def _dropped_values_seen(sandbox: SandboxServer) -> int:
    """How many requests that reached 'Customer.io' carry a value the policy drops or hashes."""
    bodies = [r["body"] for r in sandbox.control.requests()]
    return sum(1 for body in bodies if any(v in body for v in DROPPED_VALUES))


def _summary(
    store: AuditStore,
    stats: dict[str, object],
    finals: int,
    total: int,
    elapsed: float,
    leaked: int,
) -> None:
    with store.engine.connect() as conn:
        outcomes: dict[str, int] = dict(
            conn.execute(
                select(audit_log.c.outcome, func.count())
                .where(audit_log.c.final_job_id.is_not(None))
                .group_by(audit_log.c.outcome)
            ).all()
        )
        rows = int(conn.scalar(select(func.count()).select_from(audit_log)) or 0)
    requests = int(stats.get("requests_total", 0))  # type: ignore[call-overload]
    table = Table(title="cioguard demo summary", show_header=False)
    table.add_row("jobs enqueued", str(total))
    table.add_row("jobs finished (final audit rows)", str(finals))
    table.add_row("delivered", str(outcomes.get("delivered", 0)))
    table.add_row("deletions completed", str(outcomes.get("completed", 0)))
    table.add_row("dropped (subject erased)", str(outcomes.get("dropped", 0)))
    table.add_row("failed (dead-lettered)", str(outcomes.get("dead_lettered", 0)))
    table.add_row("requests to Customer.io (sandbox)", str(requests))
    table.add_row("requests/s", f"{requests / elapsed:.1f}" if elapsed else "-")
    table.add_row(
        "jobs/s (enqueue to last audit row)", f"{finals / elapsed:.0f}" if elapsed else "-"
    )
    table.add_row("audit rows (hash-chained)", str(rows))
    table.add_row("requests carrying a password, card or raw phone", str(leaked))
    table.add_row("wall time", f"{elapsed:.1f} s")
    console.print(table)
