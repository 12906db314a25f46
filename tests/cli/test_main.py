"""The root CLI commands owned by cli.py: keys, help, status of an unknown request."""

from __future__ import annotations

import subprocess
import sys

from cryptography.fernet import Fernet


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cioguard", *args], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip


def test_keys_new_prints_a_valid_fernet_key_and_a_strong_hash_key() -> None:
    done = run("keys", "new")
    assert done.returncode == 0
    lines = dict(line.split("=", 1) for line in done.stdout.split())
    Fernet(lines["CIOGUARD_PAYLOAD_KEY"].encode())
    assert len(lines["CIOGUARD_HASH_KEY"]) >= 32
    assert run("keys", "new").stdout != done.stdout


def test_help_lists_every_command() -> None:
    out = run("--help").stdout
    for command in ("worker", "sandbox", "demo", "status", "policy", "dead-letters", "keys"):
        assert command in out


def test_status_of_unknown_request_is_one_line(env: dict[str, str]) -> None:
    done = run("status", "01NOSUCHREQUEST", env=env)
    assert done.returncode != 0
    assert "no deletion request" in done.stderr
    assert "Traceback" not in done.stderr
