"""Tests for `cioguard check` (check.py): every failure it reports, and an all-green run against
the private Redis, the TLS sandbox, a migrated audit store and a real Flower with auth on.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from cioguard.audit.store import AuditStore
from cioguard.broker.envelope import new_key
from cioguard.cli import check
from cioguard.config import Settings
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess, free_port
from tests.conftest import settings_from

FLOWER_AUTH = "ops:correct-horse-battery-staple"
CREDENTIAL_VARS = ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY")


def settings(**env: str) -> Settings:
    base = {"CIOGUARD_HASH_KEY": secrets.token_urlsafe(48), "CIOGUARD_PAYLOAD_KEY": new_key()}
    return settings_from({**base, **env})


def one(findings: list[check.Finding], name: str) -> check.Finding:
    [found] = [f for f in findings if f.name == name]
    return found


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("", "empty"),
        ("ab" * 20, "repeats a shorter pattern"),
        ("0123456789abcdef" * 2, "repeats a shorter pattern"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "distinct symbols"),
        ("abcdefghij" + "a" * 30, "vary too little"),
        (b"\0" * 32, "repeats a shorter pattern"),
    ],
)
def test_weak_secrets_are_named(secret: str | bytes, why: str) -> None:
    found = check.weakness(secret)
    assert found is not None and why in found


@pytest.mark.parametrize(
    "secret",
    [
        secrets.token_urlsafe(48),
        secrets.token_hex(32),
        base64.urlsafe_b64decode(new_key()),
        "correct horse battery staple, with a long tail!",
    ],
)
def test_random_secrets_pass(secret: str | bytes) -> None:
    assert check.weakness(secret) is None


def test_missing_hash_key_fails() -> None:
    found = check.check_hash_key(settings_from({"CIOGUARD_PAYLOAD_KEY": new_key()}))
    assert not found.ok and "CIOGUARD_HASH_KEY is not set" in found.message


def test_weak_hash_key_fails_without_printing_it() -> None:
    key = "ab" * 20
    found = check.check_hash_key(settings(CIOGUARD_HASH_KEY=key))
    assert not found.ok and "CIOGUARD_HASH_KEY looks weak" in found.message
    assert key not in found.line()


def test_missing_payload_key_fails() -> None:
    found = check.check_payload_key(settings_from({"CIOGUARD_HASH_KEY": "x" * 40}))
    assert not found.ok and "CIOGUARD_PAYLOAD_KEY is not set" in found.message


def test_a_payload_key_listed_twice_fails() -> None:
    key = new_key()
    found = check.check_payload_key(settings(CIOGUARD_PAYLOAD_KEY=f"{key},{key}"))
    assert not found.ok and "same key twice" in found.message


def test_payload_key_equal_to_hash_key_fails() -> None:
    key = new_key()
    found = check.check_payload_key(settings(CIOGUARD_PAYLOAD_KEY=key, CIOGUARD_HASH_KEY=key))
    assert not found.ok and "share a key" in found.message
    assert key not in found.line()


def test_weak_payload_key_fails() -> None:
    zeros = base64.urlsafe_b64encode(b"\0" * 32).decode()
    found = check.check_payload_key(settings(CIOGUARD_PAYLOAD_KEY=f"{new_key()},{zeros}"))
    assert not found.ok and "key 2 looks weak" in found.message


def test_good_keys_pass() -> None:
    assert check.check_hash_key(settings()).ok
    assert check.check_payload_key(settings(CIOGUARD_PAYLOAD_KEY=f"{new_key()},{new_key()}")).ok


# -- policy, webhook secret --------------------------------------------------------------------


def test_invalid_policy_file_fails_with_the_bad_field(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "mine"\n[[rules]]\nkeys = ["card"]\nmatch = "exact"\naction = "x"\n')
    found = check.check_policy(settings(CIOGUARD_POLICY=str(policy)))
    assert not found.ok and "rules[0].action" in found.message


def test_valid_policy_file_and_default_policy_pass(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "mine"\n')
    assert check.check_policy(settings(CIOGUARD_POLICY=str(policy))).ok
    assert check.check_policy(settings()).message.startswith("default policy default@")


def test_missing_webhook_secret_fails() -> None:
    found = check.check_webhook_secret(settings())
    assert not found.ok and "CUSTOMERIO_WEBHOOK_SECRET is not set" in found.message


def test_short_webhook_secret_fails() -> None:
    found = check.check_webhook_secret(settings(CUSTOMERIO_WEBHOOK_SECRET="secret"))
    assert not found.ok and "too short" in found.message and "secret)" not in found.message


# -- broker ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ok"),
    [("7.0.15", True), ("6.2.0", True), ("6.0.16", False), ("5.0.7", False), ("", False)],
)
def test_redis_older_than_6_2_is_refused(version: str, ok: bool) -> None:
    assert check.redis_version_ok(version) is ok


def test_unreachable_broker_fails() -> None:
    found = check.check_broker(settings(CIOGUARD_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"))
    assert not found.ok and "does not answer" in found.message


def test_broker_that_may_evict_jobs_fails(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        found = check.check_broker(settings(CIOGUARD_BROKER_URL=redis_url))
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
    assert not found.ok and "maxmemory-policy allkeys-lru" in found.message


def test_broker_password_is_never_printed(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:hunter2-password@")
    found = check.check_broker(settings(CIOGUARD_BROKER_URL=url))
    assert "hunter2" not in found.line()


# -- audit store ----------------------------------------------------------------------------------


def test_missing_sqlite_audit_store_fails(tmp_path: Path) -> None:
    found = check.check_audit(settings(CIOGUARD_AUDIT_URL=f"sqlite:///{tmp_path / 'none.db'}"))
    assert not found.ok and "does not exist" in found.message
    assert not (tmp_path / "none.db").exists()


def test_unmigrated_audit_store_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    create_engine(url).connect().close()
    found = check.check_audit(settings(CIOGUARD_AUDIT_URL=url))
    assert not found.ok and "not migrated" in found.message and "audit_log" in found.message


def test_audit_store_missing_a_column_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = AuditStore.from_url(url)
    store.migrate()
    store.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE deletion_requests DROP COLUMN extension_reason"))
    engine.dispose()
    found = check.check_audit(settings(CIOGUARD_AUDIT_URL=url))
    assert not found.ok and "deletion_requests.extension_reason" in found.message


def test_unreachable_postgres_audit_store_fails_without_its_password() -> None:
    url = f"postgresql+psycopg://cioguard:pg-secret-pw@127.0.0.1:{free_port()}/cioguard"
    found = check.check_audit(settings(CIOGUARD_AUDIT_URL=url))
    assert not found.ok and "does not answer" in found.message
    assert "pg-secret-pw" not in found.line()


def test_migrated_audit_store_passes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore.from_url(url)
    store.migrate()
    store.dispose()
    assert check.check_audit(settings(CIOGUARD_AUDIT_URL=url)).ok


# -- Customer.io (against the TLS sandbox) ---------------------------------------------------------


@pytest.fixture
def cio_env(
    env: dict[str, str], cio: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """``env``, with the credentials also in os.environ (where the ``env`` source reads them)."""
    for name in CREDENTIAL_VARS:
        monkeypatch.setenv(name, env[name])
    return env


def test_refused_credentials_fail(cio_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMERIO_TRACK_API_KEY", "not-the-key")
    findings = check.check_customerio(settings_from(cio_env))
    found = one(findings, "customer.io credentials")
    assert not found.ok and "refused by Customer.io (401)" in found.message
    assert all("not-the-key" not in f.line() for f in findings)


def test_missing_credentials_fail(cio_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTOMERIO_TRACK_API_KEY")
    found = one(check.check_customerio(settings_from(cio_env)), "customer.io secret source")
    assert not found.ok and "CUSTOMERIO_TRACK_API_KEY" in found.message


def test_region_mismatch_fails(cio_env: dict[str, str]) -> None:
    findings = check.check_customerio(settings_from({**cio_env, "CUSTOMERIO_REGION": "eu"}))
    found = one(findings, "customer.io region")
    assert not found.ok and "CUSTOMERIO_REGION='eu'" in found.message


def test_key_older_than_the_rotation_policy_fails(
    cio_env: dict[str, str], tmp_path: Path, cio: SandboxServer
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    old = (datetime.now(UTC) - timedelta(days=120)).timestamp()
    for name, value in (CREDENTIAL_VARS[0], cio.site_id), (CREDENTIAL_VARS[1], cio.api_key):
        (secrets_dir / name).write_text(value)
        os.utime(secrets_dir / name, (old, old))
    findings = check.check_customerio(
        settings_from({**cio_env, "CIOGUARD_SECRETS": f"dir:{secrets_dir}"})
    )
    assert one(findings, "customer.io credentials").ok
    found = one(findings, "customer.io key age")
    assert not found.ok and "rotation due" in found.message


def test_unreachable_customerio_fails(cio_env: dict[str, str]) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    findings = check.run_checks(settings_from({**cio_env, "CIOGUARD_TRACK_URL": url}), {})
    assert not one(findings, "customer.io credentials").ok


# -- Flower ---------------------------------------------------------------------------------------


class FakeFlower(BaseHTTPRequestHandler):
    """Answers like a misconfigured Flower: ``anonymous`` for GET, ``control`` for POST."""

    anonymous = 200
    control = 404

    def do_GET(self) -> None:
        self.send_response(self.anonymous)
        self.end_headers()

    def do_POST(self) -> None:
        self.send_response(self.control)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_flower() -> Iterator[tuple[str, type[FakeFlower]]]:
    handler = type("Handler", (FakeFlower,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_flower_not_configured_is_skipped() -> None:
    [found] = check.check_flower(settings(), {})
    assert found.ok and "skipped" in found.message


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"FLOWER_BASIC_AUTH": "pw-7x-no-colon"}, "FLOWER_BASIC_AUTH is invalid"),
        ({"FLOWER_BASIC_AUTH": "ops:pw-7x"}, "at least 12 characters"),
        (
            {"FLOWER_BASIC_AUTH": "ops:pw-7x-long-enough", "FLOWER_UNAUTHENTICATED_API": "true"},
            "FLOWER_UNAUTHENTICATED_API",
        ),
    ],
)
def test_bad_flower_auth_settings_fail(environ: dict[str, str], expected: str) -> None:
    [found] = check.check_flower(settings(), environ)
    assert not found.ok and expected in found.message
    assert "pw-7x" not in found.line()


def test_flower_open_to_anonymous_users_fails(fake_flower: tuple[str, type[FakeFlower]]) -> None:
    url, _ = fake_flower
    [found] = check.check_flower(settings(CIOGUARD_FLOWER_URL=url), {})
    assert not found.ok and "answers 200 without credentials" in found.message


def test_flower_accepting_control_commands_fails(
    fake_flower: tuple[str, type[FakeFlower]],
) -> None:
    url, handler = fake_flower
    handler.anonymous, handler.control = 401, 404
    findings = check.check_flower(
        settings(CIOGUARD_FLOWER_URL=url), {"FLOWER_BASIC_AUTH": FLOWER_AUTH}
    )
    found = one(findings, "flower")
    assert not found.ok and "accepts control commands" in found.message
    assert "correct-horse" not in found.line()


def test_flower_refusing_the_configured_password_fails(
    fake_flower: tuple[str, type[FakeFlower]],
) -> None:
    url, handler = fake_flower
    handler.anonymous, handler.control = 401, 401
    findings = check.check_flower(
        settings(CIOGUARD_FLOWER_URL=url), {"FLOWER_BASIC_AUTH": FLOWER_AUTH}
    )
    assert "refuses FLOWER_BASIC_AUTH" in one(findings, "flower").message


def test_unreachable_flower_fails() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    [found] = check.check_flower(settings(CIOGUARD_FLOWER_URL=url), {})
    assert not found.ok and "does not answer" in found.message


# -- the whole command ----------------------------------------------------------------------------


def test_a_crashing_check_is_a_failed_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: Settings) -> check.Finding:
        raise KeyError("boom")

    monkeypatch.setattr(check, "check_broker", broken)
    found = one(check.run_checks(settings(), {}), "broker")
    assert not found.ok and "could not be checked (KeyError)" in found.message


@pytest.fixture
def green_env(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A complete installation: migrated audit store, webhook secret, a real Flower with auth."""
    store = AuditStore.from_url(env["CIOGUARD_AUDIT_URL"])
    store.migrate()
    store.dispose()
    port = free_port()
    full = {
        **os.environ, **env, "CUSTOMERIO_WEBHOOK_SECRET": secrets.token_hex(32),
        "FLOWER_BASIC_AUTH": FLOWER_AUTH, "CIOGUARD_FLOWER_URL": f"http://127.0.0.1:{port}",
    }  # fmt: skip
    flower = subprocess.Popen(
        [sys.executable, "-m", "cioguard.ops.flower", "--address=127.0.0.1", f"--port={port}"],
        env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthcheck"):
            assert flower.poll() is None and time.monotonic() < deadline, "Flower did not start"
            time.sleep(0.2)
        yield full
    finally:
        flower.terminate()
        flower.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_check(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cioguard", "check"]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)


def test_cioguard_check_is_all_green_on_a_complete_installation(
    green_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(concurrency=1)
    done = run_check(green_env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "everything checked is in order"
    assert all(line.startswith("ok ") for line in lines[:-1]), done.stdout
    names = {line.split(":", 1)[0].split(None, 1)[1] for line in lines[:-1]}
    assert names >= {
        "broker", "audit store", "customer.io credentials", "customer.io region", "hash key",
        "payload key", "policy", "webhook secret", "flower auth", "flower", "workers", "backlog",
        "dead letters", "erasure",
    }  # fmt: skip
    assert "read-only" in done.stdout
    assert f"1 worker(s), 1 process(es): {worker.name} (1)" in done.stdout
    for name in ("CIOGUARD_HASH_KEY", "CIOGUARD_PAYLOAD_KEY", "CUSTOMERIO_WEBHOOK_SECRET"):
        assert green_env[name] not in done.stdout + done.stderr
    assert "correct-horse" not in done.stdout + done.stderr
    assert green_env["CUSTOMERIO_TRACK_API_KEY"] not in done.stdout + done.stderr


def test_cioguard_check_exits_non_zero_with_one_line_per_failure(
    green_env: dict[str, str],
) -> None:
    broken = {**green_env, "CIOGUARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    broken.pop("CUSTOMERIO_WEBHOOK_SECRET")
    done = run_check(broken)
    assert done.returncode == 1
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert [f.split(":")[0] for f in failures] == ["FAIL broker", "FAIL webhook secret"]
    assert done.stdout.strip().endswith("2 problem(s) found")
    assert "Traceback" not in done.stderr
