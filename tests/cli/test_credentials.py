"""`cioguard rotate` against the TLS sandbox: the printed order and each check's OK/FAIL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cioguard.cli.credentials import check_credentials
from cioguard.cli.main import app
from cioguard.config import Settings, get_settings
from cioguard.delivery.credentials import API_KEY_VAR, SITE_ID_VAR
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import free_port

runner = CliRunner()


@pytest.fixture
def secrets_dir(tmp_path: Path, sandbox: SandboxServer) -> Path:
    root = tmp_path / "secrets"
    root.mkdir()
    (root / SITE_ID_VAR).write_text(sandbox.site_id)
    (root / API_KEY_VAR).write_text(sandbox.api_key)
    return root


@pytest.fixture
def rotate_env(
    monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer, secrets_dir: Path
) -> Iterator[dict[str, str]]:
    """The environment `cioguard rotate` reads, pointed at the sandbox and a secrets dir."""
    values = {
        "CIOGUARD_SECRETS": f"dir:{secrets_dir}",
        "CIOGUARD_TRACK_URL": sandbox.url,
        "CIOGUARD_CA_BUNDLE": str(sandbox.ca_path),
        "CUSTOMERIO_REGION": "us",
        "COLUMNS": "200",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    sandbox.control.set_credentials([(sandbox.site_id, sandbox.api_key)])
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()
    sandbox.control.set_credentials([(sandbox.site_id, sandbox.api_key)])


def age_key(secrets_dir: Path, days: float) -> None:
    stamp = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(secrets_dir / API_KEY_VAR, (stamp, stamp))


def rotate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["rotate", *args])
    return result.exit_code, result.output


def test_prints_the_zero_downtime_order_and_passes(rotate_env: dict[str, str]) -> None:
    code, out = rotate()
    assert code == 0, out
    store, revoke, verify = (out.index(f"  {n}. ") for n in (1, 2, 3))
    assert store < revoke < verify
    assert "store it in the secret source" in out and rotate_env["CIOGUARD_SECRETS"] in out
    assert "Revoke" in out and "Verify" in out
    assert "FAIL" not in out
    assert sum("│ OK " in line for line in out.splitlines()) == 4


def test_refused_key_fails(rotate_env: dict[str, str], sandbox: SandboxServer) -> None:
    sandbox.control.set_credentials([(sandbox.site_id, "the-new-key")])
    code, out = rotate()
    assert code == 1
    assert "FAIL" in out and "refused by Customer.io (401)" in out
    assert "sandbox-key" not in out and "the-new-key" not in out


def test_new_key_in_the_source_passes_after_revocation(
    rotate_env: dict[str, str], sandbox: SandboxServer, secrets_dir: Path
) -> None:
    (secrets_dir / API_KEY_VAR).write_text("the-new-key")
    sandbox.control.set_credentials([(sandbox.site_id, "the-new-key")])
    code, out = rotate()
    assert code == 0, out


def test_region_mismatch_fails(rotate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMERIO_REGION", "eu")
    get_settings.cache_clear()
    code, out = rotate()
    assert code == 1
    assert "the account is in 'us' but CUSTOMERIO_REGION='eu'" in out


def test_key_past_the_rotation_policy_fails(rotate_env: dict[str, str], secrets_dir: Path) -> None:
    age_key(secrets_dir, 120)
    code, out = rotate()
    assert code == 1
    assert "120 days: rotation due (rotation policy: 90 days)" in out


def test_max_age_days_sets_the_policy(rotate_env: dict[str, str], secrets_dir: Path) -> None:
    age_key(secrets_dir, 120)
    code, out = rotate("--max-age-days", "180")
    assert code == 0, out
    assert "120 days (rotation policy: 180 days)" in out


def test_missing_secret_fails_naming_it(rotate_env: dict[str, str], secrets_dir: Path) -> None:
    (secrets_dir / API_KEY_VAR).unlink()
    code, out = rotate()
    assert code == 1
    assert f"{API_KEY_VAR} is not set in the secret source" in out


def test_unreachable_api_fails(rotate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIOGUARD_TRACK_URL", f"https://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    code, out = rotate()
    assert code == 1
    assert "not verified: Customer.io unreachable" in out


def test_env_source_reports_age_unknown_without_failing(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SITE_ID_VAR, sandbox.site_id)
    monkeypatch.setenv(API_KEY_VAR, sandbox.api_key)
    settings = Settings(
        CIOGUARD_SECRETS="env", CIOGUARD_TRACK_URL=sandbox.url, CIOGUARD_CA_BUNDLE=sandbox.ca_path
    )
    checks = {c.name: c for c in check_credentials(settings)}
    assert [checks[n].ok for n in ("secret source", "credentials", "region")] == [True] * 3
    assert checks["key age"].ok is None and "unknown" in checks["key age"].detail
