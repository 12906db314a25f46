"""The baseline: a bare Celery task making the same HTTPS call, with no cioguard step at all.

What a user writes in a few lines instead of running cioguard: a task that PUTs the person's
attributes to ``/api/v1/customers/{id}`` with ``requests`` (the library the official client
uses), optionally with Celery's built-in ``rate_limit``. Same broker, same Celery settings as
cioguard (:func:`cioguard.broker.celeryconf.celery_config`: late acks, prefetch 1, JSON), same
sandbox,
so a comparison isolates what cioguard adds: validate, sanitize, encrypt, the shared limiter,
classified errors and the audit row.

Configured from the environment (``BENCH_*`` below) because a Celery worker imports it by name:
``python -m celery -A bench.bare_app worker``.

Note:
    ``BENCH_RATE_LIMIT`` is passed to ``@app.task(rate_limit=...)`` exactly as a user would write
    the limit they were given (``"50/s"``). Celery enforces it per worker node, in memory
    (celery-pitfalls.md), which is what the rate-fidelity benchmark shows.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import requests
from celery import Celery

from cioguard.broker.celeryconf import celery_config
from cioguard.config import Settings
from cioguard.sandbox.devstack import WorkerProcess

QUEUE = "bench-bare"
TASK = "bench.bare.identify"


def _config() -> dict[str, Any]:
    """cioguard's Celery settings (``BENCH_CELERY_CONFIG=cioguard``, the default) or Celery's
    own defaults (``defaults``: prefetch 4, early acks), what a user's few lines would run."""
    broker_url = os.environ.get("BENCH_BROKER_URL", "redis://")
    if os.environ.get("BENCH_CELERY_CONFIG", "cioguard") == "defaults":
        return {
            "broker_url": broker_url, "task_serializer": "json", "accept_content": ["json"],
            "task_ignore_result": True, "worker_redirect_stdouts": False,
        }  # fmt: skip
    return celery_config(Settings(CIOGUARD_BROKER_URL=broker_url))


app = Celery("bench-bare")
app.conf.update(_config())
app.conf.task_default_queue = QUEUE


@functools.lru_cache(maxsize=1)
def _session() -> requests.Session:
    """One pooled HTTPS session per pool process (built after the fork, on first use)."""
    session = requests.Session()
    session.auth = (os.environ["BENCH_SITE_ID"], os.environ["BENCH_API_KEY"])
    session.headers["User-Agent"] = "bench-bare"
    return session


os.register_at_fork(after_in_child=_session.cache_clear)


@app.task(  # type: ignore[untyped-decorator]
    name=TASK, rate_limit=os.environ.get("BENCH_RATE_LIMIT") or None, ignore_result=True
)
def identify(person_id: str, attributes: dict[str, Any]) -> int:
    """PUT the attributes; no retry (a refused request is lost, as in the seed's loop)."""
    url = f"{os.environ['BENCH_TRACK_URL']}/api/v1/customers/{quote(person_id, safe='')}"
    verify = os.environ["BENCH_CA_BUNDLE"]  # per request: a session's verify loses to the env
    return _session().put(url, json=attributes, timeout=10, verify=verify).status_code


def bare_env(
    broker_url: str,
    track_url: str,
    ca_bundle: str,
    site_id: str,
    api_key: str,
    rate_limit: str | None = None,
    celery_config: str = "cioguard",
) -> dict[str, str]:
    """The environment of a bare worker (the repository root on the path, for ``bench``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        "BENCH_BROKER_URL": broker_url, "CIOGUARD_BROKER_URL": broker_url,
        "BENCH_TRACK_URL": track_url, "BENCH_CA_BUNDLE": ca_bundle, "BENCH_SITE_ID": site_id,
        "BENCH_API_KEY": api_key, "BENCH_CELERY_CONFIG": celery_config,
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    }  # fmt: skip
    if rate_limit:
        env["BENCH_RATE_LIMIT"] = rate_limit
    return env


class BareWorker(WorkerProcess):
    """A worker node of this app, started and pinged like ``cioguard worker``."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker", "--loglevel",
            "warning", "--concurrency", str(self.concurrency), "--hostname", self.name,
            "--pool", "prefork", "--without-gossip", "--without-mingle", "-Q", QUEUE,
        ]  # fmt: skip


def send_people(celery: Celery, count: int, attrs: Any, prefix: str = "bare") -> float:
    """Enqueue ``count`` bare identifies; returns the seconds it took."""
    started = time.perf_counter()
    for i in range(count):
        celery.send_task(TASK, args=[f"{prefix}-{i}", attrs(i)], queue=QUEUE)
    return time.perf_counter() - started
