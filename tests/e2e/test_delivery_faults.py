"""Failures cost only the failing person: transient faults end delivered, exactly once; a poisoned
person ends as a dead letter that the CLI lists and replays, while a thousand others go through.
Each test runs for each API (the ``api`` fixture).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from cioguard.delivery import deadletters
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from cioguard.sandbox.state import FaultConfig
from tests.helpers import final_rows, wait_for_finals, wait_until

pytestmark = pytest.mark.e2e

BATCH_MODES = ["0", "1"]
# The fault test needs enough requests for every fault to show up, so a batching worker sends
# few operations per request there.
FAULT_MODE_SETTINGS: dict[str, dict[str, str]] = {"0": {}, "1": {"CIOGUARD_BATCH_MAX_OPS": "1"}}
# How Customer.io refuses a poisoned person: a v1 400, or one failed operation in a v2 207;
# Pipelines refuses its batch whole (400), and the person alone again when sent on its own.
REJECTION = {
    ("track", "0"): ("PermanentError", 400), ("track", "1"): ("OperationRejectedError", 207),
    ("pipelines", "0"): ("PermanentError", 400), ("pipelines", "1"): ("PermanentError", 400),
}  # fmt: skip
POISON_PREFIX = "poison-"


@pytest.fixture
def clean_cio(cio: SandboxServer) -> Iterator[SandboxServer]:
    """The stand-in with default faults; faults outlive ``reset``, so they are undone after."""
    cio.control.configure(**FaultConfig().as_dict())
    yield cio
    cio.control.configure(**FaultConfig().as_dict())


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``cioguard ARGS`` in a subprocess, wide enough that Rich never folds a job id."""
    return subprocess.run(
        [sys.executable, "-m", "cioguard", *args], env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("batch", BATCH_MODES)
def test_transient_faults_end_delivered_once_each(
    batch: str,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    clean_cio: SandboxServer,
    api: str,
) -> None:
    clean_cio.control.configure(
        fail_5xx_ratio=0.2, fail_429_ratio=0.1, retry_after_s=1, slow_ratio=0.05, slow_s=2,
        seed=11,
    )  # fmt: skip
    start_worker(
        concurrency=2, CIOGUARD_BATCH=batch, CIOGUARD_HTTP_TIMEOUT_S=1,
        **FAULT_MODE_SETTINGS[batch],
    )  # fmt: skip
    identifies = [producer.identify(f"flaky-{i}", {"plan": "pro"}) for i in range(50)]
    tracks = [producer.track(f"flaky-{i}", "paid", {"amount": i}) for i in range(50)]
    jobs = identifies + tracks

    wait_for_finals(producer.audit, len(jobs), timeout_s=180)
    rows = final_rows(producer.audit)
    assert collections.Counter(r["final_job_id"] for r in rows) == dict.fromkeys(jobs, 1)
    assert {r["outcome"] for r in rows} == {"delivered"}
    assert deadletters.list_all(producer.audit) == []

    stats = clean_cio.control.stats()
    print({k: stats[k] for k in ("requests_total", "injected_5xx", "injected_429", "slow",
                                 "duplicate_events", "events_unique")})  # fmt: skip
    assert stats["injected_5xx"] > 0 and stats["injected_429"] > 0 and stats["slow"] > 0
    assert stats["events_unique"] == len(tracks)
    stored = collections.Counter(event["id"] for event in clean_cio.control.events())
    assert stored == dict.fromkeys(tracks, 1)
    assert stats["people"] == len(identifies)


@pytest.mark.parametrize("batch", BATCH_MODES)
def test_poisoned_person_is_dead_lettered_listed_and_replayed(
    batch: str,
    env: dict[str, str],
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    clean_cio: SandboxServer,
    api: str,
) -> None:
    clean_cio.control.configure(reject_id_prefix=POISON_PREFIX)
    start_worker(concurrency=2, CIOGUARD_BATCH=batch)
    others = [producer.identify(f"ok-{i}", {"plan": "pro"}) for i in range(500)]
    poisoned = producer.identify(f"{POISON_PREFIX}1", {"plan": "pro"})
    others += [producer.identify(f"ok-{i}", {"plan": "pro"}) for i in range(500, 1000)]

    wait_for_finals(producer.audit, 1001, timeout_s=180)
    outcomes = {r["final_job_id"]: r["outcome"] for r in final_rows(producer.audit)}
    assert len(outcomes) == 1001
    assert outcomes.pop(poisoned) == "dead_lettered"
    assert set(outcomes) == set(others) and set(outcomes.values()) == {"delivered"}
    [letter] = deadletters.list_all(producer.audit)
    assert letter.job_id == poisoned
    assert (letter.error_class, letter.http_status) == REJECTION[api, batch]
    assert clean_cio.control.stats()["people"] == 1000

    listed = cli(env, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert poisoned in listed.stdout and REJECTION[api, batch][0] in listed.stdout
    assert f"{POISON_PREFIX}1" not in listed.stdout

    clean_cio.control.configure(reject_id_prefix=None)
    replayed = cli(env, "dead-letters", "replay", poisoned)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 job(s)" in replayed.stdout

    wait_for_finals(producer.audit, 1002, timeout_s=60)
    wait_until(lambda: clean_cio.control.person(f"{POISON_PREFIX}1") is not None, what="replay")
    [replay_row] = [r for r in producer.audit.rows() if r["outcome"] == "replayed"]
    new_job = str(replay_row["detail"]).removeprefix("replayed as ")
    new_final = producer.audit.final_row(new_job)
    assert new_final is not None and new_final["outcome"] == "delivered"
    assert new_final["person_hash"] == letter.person_hash
    assert poisoned not in cli(env, "dead-letters", "list").stdout
    assert poisoned in cli(env, "dead-letters", "list", "--all").stdout


def test_replay_needs_an_id_or_all(env: dict[str, str], producer: Producer) -> None:
    done = cli(env, "dead-letters", "replay")
    assert done.returncode == 2
    assert "give a job id or --all" in done.stderr
