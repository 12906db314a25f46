"""The floors: a bare celery-batches task doing only the Track v2 batch POST, no cioguard step.

``BENCH_FLOOR_TRANSPORT`` picks the broker transport:

* ``stock``: kombu's own Redis transport, Celery's per-message acks: what a team gets from
  celery-batches alone (the *stock floor*);
* ``cioguard`` (default): cioguard's transport (:mod:`cioguard.broker.transport`, BLMOVE pops and
  one Lua claim per group of messages) with a batch's acks in one round trip, as cioguard's
  worker does them: the *tuned floor*, the fastest a Celery worker on this transport gets doing
  the same request.

Both use cioguard's Celery settings (late acks, JSON) and the batched prefetch (two buffers per
process), the same sandbox and ``requests`` session. Nothing is validated, sealed, gated or
audited; a batch the sandbox refuses is lost. Run by ``bench.runs.floor_run`` as
``python -m celery -A bench.floor_app worker``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Collection
from typing import Any

import requests
from celery import Celery
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from cioguard.broker.celeryconf import celery_config
from cioguard.broker.transport import acks_in_one_round_trip
from cioguard.config import Settings
from cioguard.sandbox.devstack import WorkerProcess

QUEUE = "bench-floor"
TASK = "bench.floor.identify"
FLUSH_EVERY = 100
TUNED = os.environ.get("BENCH_FLOOR_TRANSPORT", "cioguard") == "cioguard"


def _config() -> dict[str, Any]:
    config = celery_config(
        Settings(CIOGUARD_BROKER_URL=os.environ.get("BENCH_BROKER_URL", "redis://"))
    )
    if not TUNED:
        config.pop("broker_transport", None)  # kombu's own Redis transport
    config["worker_prefetch_multiplier"] = 2 * FLUSH_EVERY
    return config


app = Celery("bench-floor")
app.conf.update(_config())
app.conf.task_default_queue = QUEUE


class FloorBatches(Batches):  # type: ignore[misc]
    """``Batches`` acking a batch's messages together (tuned) or one by one (stock)."""

    def flush(self, requests: Collection[Request]) -> Any:
        reqs = list(requests)

        def on_return(_result: Any) -> None:
            if TUNED:
                with acks_in_one_round_trip(reqs[0].message.channel):
                    for req in reqs:
                        req.message.ack()
            else:
                for req in reqs:
                    req.acknowledge()

        batch = ([SimpleRequest.from_request(r) for r in reqs],)
        return self._pool.apply_async(
            apply_batches_task, (self, batch, 0, None), callback=on_return
        )


@functools.lru_cache(maxsize=1)
def _session() -> requests.Session:
    session = requests.Session()
    session.auth = (os.environ["BENCH_SITE_ID"], os.environ["BENCH_API_KEY"])
    session.headers["Content-Type"] = "application/json"
    return session


os.register_at_fork(after_in_child=_session.cache_clear)


@app.task(  # type: ignore[untyped-decorator]
    name=TASK, base=FloorBatches, flush_every=FLUSH_EVERY, flush_interval=0.2, acks_late=True
)
def identify(reqs: list[SimpleRequest]) -> int:
    """One ``POST /api/v2/batch`` of every buffered identify; nothing else."""
    ops = [
        {"type": "person", "identifiers": {"id": r.args[0]}, "action": "identify",
         "attributes": r.args[1]}
        for r in reqs
    ]  # fmt: skip
    body = json.dumps({"batch": ops}, separators=(",", ":")).encode()
    url = f"{os.environ['BENCH_TRACK_URL']}/api/v2/batch"
    return (
        _session()
        .post(url, data=body, timeout=10, verify=os.environ["BENCH_CA_BUNDLE"])
        .status_code
    )


class FloorWorker(WorkerProcess):
    """A worker node of this app, started and pinged like ``cioguard worker``."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "bench.floor_app", "worker", "--loglevel",
            "warning", "--concurrency", str(self.concurrency), "--hostname", self.name,
            "--pool", "prefork", "--without-gossip", "--without-mingle", "-Q", QUEUE,
        ]  # fmt: skip
