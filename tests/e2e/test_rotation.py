"""Key rotation without downtime: the new key goes into the secret source first, then the old key
is revoked at the stand-in while jobs flow. Each worker process gets one 401, re-reads the source,
retries with the new key, and no job fails. ``cioguard rotate`` then verifies the result.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cioguard.delivery import deadletters
from cioguard.delivery.credentials import API_KEY_VAR, SITE_ID_VAR
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import final_count, final_rows, wait_for_finals, wait_until

pytestmark = pytest.mark.e2e

BATCH_MODES = ["0", "1"]
OLD_KEY, NEW_KEY = "track-key-before-rotation", "track-key-after-rotation"
PEOPLE = 150


def write_secret(root: Path, name: str, value: str) -> None:
    """Replace a secret file atomically, as a Kubernetes secret volume update does."""
    staged = root / f".{name}.new"
    staged.write_text(value)
    os.replace(staged, root / name)


@pytest.fixture
def secrets_dir(tmp_path: Path, cio: SandboxServer) -> Iterator[Path]:
    """A secrets directory holding the old key, which is the only one the stand-in accepts."""
    root = tmp_path / "secrets"
    root.mkdir()
    write_secret(root, SITE_ID_VAR, cio.site_id)
    write_secret(root, API_KEY_VAR, OLD_KEY)
    cio.control.set_credentials([(cio.site_id, OLD_KEY)])
    yield root
    cio.control.set_credentials([(cio.site_id, cio.api_key)])


@pytest.mark.parametrize("batch", BATCH_MODES)
def test_key_rotated_mid_run_fails_no_job(
    batch: str,
    env: dict[str, str],
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    secrets_dir: Path,
) -> None:
    source = f"dir:{secrets_dir}"
    # batched, small batches at a low rate, so the 600 jobs take dozens of requests and the
    # rotation below lands mid-run however fast the machine is
    pace = {"CIOGUARD_RATE_LIMIT": 40} if batch == "0" else {
        "CIOGUARD_RATE_LIMIT": 10, "CIOGUARD_BATCH_MAX_OPS": 5,
    }  # fmt: skip
    start_worker(
        concurrency=2, CIOGUARD_BATCH=batch, CIOGUARD_SECRETS=source, **pace,
        CUSTOMERIO_SITE_ID="not-from-env", CUSTOMERIO_TRACK_API_KEY="not-from-env",
    )  # fmt: skip
    identifies = [producer.identify(f"rot-{i}", {"plan": "pro"}) for i in range(PEOPLE)]
    tracks = [producer.track(f"rot-{i}", "renewed", {"n": i}) for i in range(PEOPLE)]
    jobs = identifies + tracks

    wait_until(lambda: final_count(producer.audit) >= 60, what="jobs flowing")
    write_secret(secrets_dir, API_KEY_VAR, NEW_KEY)  # 1. store the new key first
    cio.control.set_credentials([(cio.site_id, NEW_KEY)])  # 2. revoke the old key
    assert final_count(producer.audit) < len(jobs), "the rotation must happen mid-run"

    wait_for_finals(producer.audit, len(jobs), timeout_s=120)
    rows = final_rows(producer.audit)
    assert collections.Counter(r["final_job_id"] for r in rows) == dict.fromkeys(jobs, 1)
    assert {r["outcome"] for r in rows} == {"delivered"}
    assert deadletters.list_all(producer.audit) == []
    stats = cio.control.stats()
    assert stats["unauthorized"] >= 1, "the old key must have been refused mid-run"
    assert stats["people"] == PEOPLE and stats["events_unique"] == PEOPLE

    verify = subprocess.run(  # 3. verify
        [sys.executable, "-m", "cioguard", "rotate"], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env, "CIOGUARD_SECRETS": source, "COLUMNS": "200"},
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert NEW_KEY not in verify.stdout and OLD_KEY not in verify.stdout
