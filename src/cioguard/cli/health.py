"""``cioguard check``'s health findings: is anything working, and is anything piling up?

* ``workers``: the workers that answer Celery's control API (``inspect().stats()``, the same
  broadcast Flower uses), with each one's pool concurrency; none answering is a finding;
* ``backlog``: jobs ready in the queue, the age of the oldest (from its job id), and messages
  out with workers but not acknowledged; an oldest job older than ``max_queue_age_s`` is a
  finding (read as :mod:`cioguard.ops.queue_metrics` reads it for Prometheus);
* ``dead letters``: any dead letter not yet replayed is a finding;
* ``erasure``: failed requests, requests past or within ``due_within`` of their due date in
  force, and requests received or in progress without a change for ``stuck_after`` are findings.

Findings carry counts, ages, worker names and request ids only (no person data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from sqlalchemy import func, select

from cioguard.cli.check import TIMEOUT_S, Finding
from cioguard.config import Settings

CONTROL_TIMEOUT_S = 2.0
SHOWN = 5  # request ids listed per finding; the rest are counted


@dataclass(frozen=True)
class Limits:
    """When a fact becomes a finding."""

    max_queue_age_s: float = 300.0
    due_within: timedelta = timedelta(days=3)
    stuck_after: timedelta = timedelta(hours=6)


def check_workers(settings: Settings) -> Finding:
    """Workers answering the control API, and their concurrency."""
    from cioguard.broker.celeryconf import build_celery

    app = build_celery(settings, "cioguard-check")
    try:
        stats = app.control.inspect(timeout=CONTROL_TIMEOUT_S).stats() or {}
    finally:
        app.close()
    if not stats:
        return Finding(
            "workers", False, f"no worker answers within {CONTROL_TIMEOUT_S:g} s: jobs are "
            "queued but nothing delivers them (start `cioguard worker`)",
        )  # fmt: skip
    sizes = {
        name: int((s.get("pool") or {}).get("max-concurrency") or 0) for name, s in stats.items()
    }
    listed = ", ".join(f"{name} ({n})" for name, n in sorted(sizes.items()))
    return Finding(
        "workers", True, f"{len(sizes)} worker(s), {sum(sizes.values())} process(es): {listed}"
    )


def check_backlog(settings: Settings, limits: Limits) -> Finding:
    """Queue depth, oldest queued job, unacknowledged messages."""
    from cioguard.ops.queue_metrics import read_broker

    client = redis.Redis.from_url(
        settings.broker_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
    )
    try:
        counts = read_broker(client)
    finally:
        client.close()
    [(queue, depth)] = counts.depth.items()
    oldest = counts.oldest_age_s[queue]
    text = (
        f"{depth} job(s) queued, oldest {_age(oldest)}; {counts.unacked} with workers "
        f"(unacknowledged), {counts.inflight} in flight"
    )
    if depth and oldest > limits.max_queue_age_s:
        return Finding(
            "backlog", False, f"{text}: the oldest waited more than {_age(limits.max_queue_age_s)} "
            "(too few workers, or they are waiting on the rate limit or Customer.io)",
        )  # fmt: skip
    return Finding("backlog", True, text)


def check_dead_letters(settings: Settings) -> Finding:
    """Dead letters not yet replayed."""
    from cioguard.ops.metrics import DeletionCollector

    collector = DeletionCollector(settings.audit_url, timeout_s=TIMEOUT_S)
    try:
        found = collector.read()
    finally:
        collector.close()
    if found.dead_letters_waiting:
        return Finding(
            "dead letters", False, f"{found.dead_letters_waiting} dead letter(s) not replayed: "
            "`cioguard dead-letters list`, fix the cause, then `cioguard dead-letters replay`",
        )  # fmt: skip
    return Finding("dead letters", True, f"none waiting ({found.dead_letters} replayed)")


def check_erasure(settings: Settings, limits: Limits) -> list[Finding]:
    """Failed, overdue or nearly due, and stuck erasure requests."""
    from cioguard.audit.schema import deletion_requests as dr
    from cioguard.audit.store import AuditStore, utcnow
    from cioguard.erasure import requests

    store = AuditStore.from_url(settings.audit_url)
    try:
        near = requests.overdue(store, within=limits.due_within)
        with store.reading() as conn:
            stuck = list(
                conn.scalars(
                    select(dr.c.request_id)
                    .where(dr.c.state.in_(requests.OPEN_STATES))
                    .where(dr.c.updated_at < utcnow() - limits.stuck_after)
                    .order_by(dr.c.updated_at)
                )
            )
            failed = int(conn.scalar(select(func.count()).where(dr.c.state == "failed")) or 0)
    finally:
        store.dispose()
    findings = []
    if near:
        now = utcnow()
        late = sum(1 for st in near if st.effective_due_at < now)
        findings.append(Finding(
            "erasure deadlines", False, f"{late} request(s) overdue, {len(near) - late} due within "
            f"{limits.due_within.days} day(s): {_ids([st.request_id for st in near])} "
            "(`cioguard deletions overdue`)",
        ))  # fmt: skip
    if stuck:
        findings.append(Finding(
            "erasure stuck", False, f"{len(stuck)} request(s) received or in progress without a "
            f"change for {_age(limits.stuck_after.total_seconds())}: {_ids(stuck)} (is a worker "
            "running? `cioguard status ID`)",
        ))  # fmt: skip
    if failed:
        findings.append(Finding(
            "erasure failed", False, f"{failed} request(s) failed: `cioguard deletions list "
            "--state failed`, then their dead letters",
        ))  # fmt: skip
    return findings or [Finding("erasure", True, "no request failed, stuck or near its deadline")]


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def run_health(settings: Settings, earlier: list[Finding], limits: Limits) -> list[Finding]:
    """The health findings, after :func:`cioguard.cli.check.run_checks`' ``earlier`` ones.

    Those that need the broker (workers, backlog) or the audit store (dead letters, erasure)
    are left out when that part already failed: one finding per cause.
    """
    up = {f.name: f.ok for f in earlier}
    checks: list[tuple[str, bool, Callable[[], list[Finding]]]] = [
        ("workers", up.get("broker", True), lambda: [check_workers(settings)]),
        ("backlog", up.get("broker", True), lambda: [check_backlog(settings, limits)]),
        ("dead letters", up.get("audit store", True), lambda: [check_dead_letters(settings)]),
        ("erasure", up.get("audit store", True), lambda: check_erasure(settings, limits)),
    ]
    findings: list[Finding] = []
    for name, reachable, check in checks:
        if not reachable:
            continue
        try:
            findings.extend(check())
        except Exception as exc:  # one broken check must not hide the others
            findings.append(Finding(name, False, f"could not be checked ({type(exc).__name__})"))
    return findings
