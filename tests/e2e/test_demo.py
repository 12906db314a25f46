"""`cioguard demo` runs the whole path and ends with its summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_reaches_its_summary() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIOGUARD_", "CUSTOMERIO_"))}
    cmd = [sys.executable, "-m", "cioguard", "demo", "--identifies", "60", "--events", "40",
           "--deletions", "5"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "cioguard demo summary" in out
    finished = re.search(r"jobs finished \(final audit rows\)\s*│\s*(\d+)", out)
    assert finished and int(finished.group(1)) == 105, out
    delivered = re.search(r"delivered\s*│\s*(\d+)", out)
    assert delivered and int(delivered.group(1)) == 100
    leaked = re.search(r"requests carrying a password, card or raw phone\s*│\s*(\d+)", out)
    assert leaked and int(leaked.group(1)) == 0
    assert "Traceback" not in done.stderr
