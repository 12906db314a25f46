"""The Flower launcher refuses unsafe set-ups and always adds its guards."""

from __future__ import annotations

import sys

import pytest

import cioguard.ops.flower
from cioguard.errors import ConfigurationError
from cioguard.ops.flower import (
    check_environment,
    flower_command,
    flower_environment,
    main,
    monitor_app,
)

GOOD = {"FLOWER_BASIC_AUTH": "ops:a-long-password-1"}


def test_auth_is_required() -> None:
    with pytest.raises(ConfigurationError, match="FLOWER_BASIC_AUTH is not set"):
        check_environment({})
    check_environment(GOOD)
    check_environment({"FLOWER_AUTH": r".*@example\.com"})


@pytest.mark.parametrize("value", ["ops", "ops:", ":a-long-password-1", "ops:short"])
def test_weak_or_malformed_basic_auth_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="FLOWER_BASIC_AUTH is invalid") as info:
        check_environment({"FLOWER_BASIC_AUTH": value})
    assert "long-password" not in str(info.value) and "short" not in str(info.value)


def test_unauthenticated_api_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="FLOWER_UNAUTHENTICATED_API"):
        check_environment({**GOOD, "FLOWER_UNAUTHENTICATED_API": "true"})
    check_environment({**GOOD, "FLOWER_UNAUTHENTICATED_API": "false"})


def test_command_guards_come_last_so_they_win() -> None:
    argv = flower_command(address="127.0.0.1", port=5599, extra=["--read_only=False"])
    assert argv[:6] == [sys.executable, "-m", "celery", "-A", "cioguard.ops.flower:app", "flower"]
    assert argv.index("--read_only=True") > argv.index("--read_only=False")
    assert {"--persistent=False", "--debug=False", "--port=5599"} <= set(argv)
    assert not any("basic" in arg for arg in argv)  # the password stays in the environment


def test_main_exits_with_one_line_without_auth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.delenv("FLOWER_AUTH", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["--port", "5599"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("cioguard: configuration error: FLOWER_BASIC_AUTH")


def test_flower_gets_no_key_credential_or_dsn() -> None:
    environ = {
        "PATH": "/usr/bin", "HOME": "/home/x", "CIOGUARD_BROKER_URL": "redis://r:6379/0",
        "FLOWER_BASIC_AUTH": "ops:a-long-password", "CIOGUARD_PAYLOAD_KEY": "k",
        "CIOGUARD_HASH_KEY": "h", "CUSTOMERIO_TRACK_API_KEY": "c", "SENTRY_DSN": "d",
        "CIOGUARD_AUDIT_URL": "postgresql+psycopg://u:pw@h/db", "POSTGRES_PASSWORD": "pw",
    }  # fmt: skip
    assert flower_environment(environ) == {
        "PATH": "/usr/bin", "HOME": "/home/x", "CIOGUARD_BROKER_URL": "redis://r:6379/0",
        "FLOWER_BASIC_AUTH": "ops:a-long-password",
    }  # fmt: skip


def test_the_monitor_app_needs_only_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CIOGUARD_PAYLOAD_KEY", "CIOGUARD_HASH_KEY", "CUSTOMERIO_TRACK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIOGUARD_BROKER_URL", "redis://127.0.0.1:1/0")
    monitor_app.cache_clear()
    try:
        app = cioguard.ops.flower.app
        assert app.conf.broker_url == "redis://127.0.0.1:1/0"
        assert app.conf.task_default_queue == "cioguard"
        assert app.conf.result_backend is None
    finally:
        monitor_app.cache_clear()
    with pytest.raises(AttributeError):
        _ = cioguard.ops.flower.nothing_here
