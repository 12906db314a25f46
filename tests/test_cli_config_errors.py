"""Every entry point stops on a configuration error with one line naming the variable and the
expected form, a non-zero exit and no traceback; and every CLI command formats cioguard's logs.

Entry points: ``cioguard worker``, ``python -m cioguard worker``, ``celery -A cioguard.worker
worker``, ``cioguard check``, ``cioguard status X`` and ``cioguard dead-letters list``, each run
as a real subprocess. ``cioguard check`` reports what is missing (rather than malformed) as a
FAIL finding on stdout, like every other finding; malformed values stop it like the others.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cioguard.broker.envelope import new_key
from cioguard.sandbox.devstack import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKERS = {
    "cioguard worker": [str(BIN / "cioguard"), "worker"],
    "python -m cioguard worker": [sys.executable, "-m", "cioguard", "worker"],
    "celery worker": [str(BIN / "celery"), "-A", "cioguard.worker", "worker"],
}
CHECK = {"cioguard check": [str(BIN / "cioguard"), "check"]}
ADMIN = {
    "cioguard status X": [str(BIN / "cioguard"), "status", "X"],
    "cioguard dead-letters list": [str(BIN / "cioguard"), "dead-letters", "list"],
}
EVERY = {**WORKERS, **CHECK, **ADMIN}
UNSET = None

# (variable, value or UNSET, the entry points that need it). A malformed value stops every
# entry point (settings are read whole); a missing one only those that need it: the admin
# commands read the audit store and need neither the keys nor Customer.io credentials.
CASES = [
    ("CIOGUARD_RATE_LIMIT", "abc", EVERY),
    ("CIOGUARD_HASH_KEY", UNSET, {**WORKERS, **CHECK}),
    ("CIOGUARD_PAYLOAD_KEY", "notakey", EVERY),
    ("CUSTOMERIO_REGION", "mars", EVERY),
    ("CUSTOMERIO_TRACK_API_KEY", UNSET, {**WORKERS, **CHECK}),
    ("CIOGUARD_BROKER_URL", "localhost:6379", {"cioguard worker": WORKERS["cioguard worker"]}),
    ("CIOGUARD_AUDIT_URL", "audit.db", {"cioguard worker": WORKERS["cioguard worker"]}),
    ("CIOGUARD_TRACK_URL", "http://track.example", {"celery worker": WORKERS["celery worker"]}),
    ("CIOGUARD_METRICS_PORT", "70000", {"cioguard worker": WORKERS["cioguard worker"]}),
]


def base_env(tmp_path: Path) -> dict[str, str]:
    """A valid configuration (nothing runs on the broker port: nothing can start by mistake)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CIOGUARD_", "CUSTOMERIO_"))}
    return {
        **keep, "CIOGUARD_HASH_KEY": secrets.token_urlsafe(48), "CIOGUARD_PAYLOAD_KEY": new_key(),
        "CUSTOMERIO_SITE_ID": "site", "CUSTOMERIO_TRACK_API_KEY": "key",
        "CIOGUARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CIOGUARD_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}", "CIOGUARD_LOG_FORMAT": "json",
    }  # fmt: skip


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("entry", "variable", "value"),
    [(entry, var, value) for var, value, entries in CASES for entry in entries],
)
def test_a_configuration_error_is_one_line_naming_the_variable(
    tmp_path: Path, entry: str, variable: str, value: str | None
) -> None:
    env = base_env(tmp_path)
    if value is UNSET:
        env.pop(variable)
    else:
        env[variable] = value

    done = run(EVERY[entry], env, tmp_path)

    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    if entry in CHECK and value is UNSET:  # a finding, not a start-up error
        [line] = [line for line in done.stdout.splitlines() if variable in line]
        assert line.startswith("FAIL ") and "expected" in line
        return
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and "expected" in lines[0]
    assert "configuration error" in lines[0]
    if value is not UNSET:
        assert f"={value}" not in lines[0] and f"'{value}'" not in lines[0]


def test_env_example_with_its_empty_values_is_a_valid_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in base_env(tmp_path).items() if not k.startswith("CIOGUARD_")}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            env[name] = value
    env.update({k: v for k, v in base_env(tmp_path).items() if k.startswith("CIOGUARD_")})

    done = run(ADMIN["cioguard status X"], env, tmp_path)

    assert done.returncode == 1
    assert "no deletion request with id X" in done.stderr
    assert "configuration error" not in done.stderr


@pytest.fixture
def cioguard_logger() -> Iterator[logging.Logger]:
    """The ``cioguard`` logger, restored afterwards (other tests rely on its defaults)."""
    logger = logging.getLogger("cioguard")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def test_every_cli_command_formats_cioguard_logs(
    cioguard_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cioguard.cli import main as cli
    from cioguard.ops.logs import JsonFormatter

    monkeypatch.setenv("CIOGUARD_LOG_FORMAT", "json")
    with pytest.raises(SystemExit) as exited:
        cli.main(["keys", "new"])
    assert exited.value.code == 0
    [handler] = [h for h in cioguard_logger.handlers if getattr(h, "_cioguard", False)]
    assert isinstance(handler.formatter, JsonFormatter)
    assert cioguard_logger.level == logging.WARNING and not cioguard_logger.propagate
