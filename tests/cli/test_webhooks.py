"""`cioguard webhooks serve`: a configuration error is one line naming the variable, exit 2.

The command serving real requests is covered by tests/e2e/test_webhooks_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cioguard.broker.envelope import new_key

WEBHOOK_VARS = (
    "CUSTOMERIO_WEBHOOK_SECRET",
    "CIOGUARD_PAYLOAD_KEY",
    "CIOGUARD_WEBHOOK_MAX_BODY_BYTES",
)


def serve(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in WEBHOOK_VARS}
    return subprocess.run(
        [sys.executable, "-m", "cioguard", "webhooks", "serve", "--port", "1"],
        capture_output=True, text=True, env={**base, **env}, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CIOGUARD_PAYLOAD_KEY": new_key()}, "CUSTOMERIO_WEBHOOK_SECRET"),
        ({"CUSTOMERIO_WEBHOOK_SECRET": "whsec-x"}, "CIOGUARD_PAYLOAD_KEY"),
        (
            {
                "CUSTOMERIO_WEBHOOK_SECRET": "s",
                "CIOGUARD_PAYLOAD_KEY": new_key(),
                "CIOGUARD_WEBHOOK_MAX_BODY_BYTES": "10",
            },
            "CIOGUARD_WEBHOOK_MAX_BODY_BYTES",
        ),
    ],
    ids=["no-secret", "no-payload-key", "tiny-body-cap"],
)
def test_a_configuration_error_is_one_line(env: dict[str, str], variable: str) -> None:
    done = serve(**env)
    assert done.returncode == 2
    assert variable in done.stderr
    assert "Traceback" not in done.stderr
    # One message (Rich may wrap it at the console width when stderr is not a terminal).
    assert done.stderr.startswith("cioguard: configuration error: ")
    assert done.stderr.count("cioguard:") == 1
    assert "whsec-x" not in done.stderr


def test_help_lists_serve() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cioguard", "webhooks", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert "serve" in done.stdout
