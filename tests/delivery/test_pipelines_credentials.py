"""The Pipelines key through the secret source: `cioguard rotate`/`check`'s verification
(``check_credentials``), and a rotated key picked up after a 401 without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cioguard.cli.credentials import check_credentials
from cioguard.config import Settings
from cioguard.delivery.credentials import PIPELINES_KEY_VAR, source_from_spec
from cioguard.delivery.pipelines_client import PipelinesClient
from cioguard.errors import ConfigurationError, CredentialsError
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.pipelines import DEFAULT_PIPELINES_API_KEY, PipelinesControl


@pytest.fixture
def keys(sandbox: SandboxServer) -> Iterator[PipelinesControl]:
    control = PipelinesControl(sandbox.url, sandbox.ssl_context())
    control.set_keys([DEFAULT_PIPELINES_API_KEY])
    control.reset()
    yield control
    control.set_keys([DEFAULT_PIPELINES_API_KEY])
    control.close()


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    (tmp_path / PIPELINES_KEY_VAR).write_text(DEFAULT_PIPELINES_API_KEY)
    return tmp_path


def settings(sandbox: SandboxServer, secrets_dir: Path) -> Settings:
    return Settings(
        CIOGUARD_API="pipelines", CIOGUARD_SECRETS=f"dir:{secrets_dir}",
        CIOGUARD_PIPELINES_URL=sandbox.url, CIOGUARD_CA_BUNDLE=str(sandbox.ca_path),
    )  # type: ignore[call-arg]  # fmt: skip


def by_name(sandbox: SandboxServer, secrets_dir: Path) -> dict[str, tuple[bool | None, str]]:
    found = check_credentials(settings(sandbox, secrets_dir))
    return {c.name: (c.ok, c.detail) for c in found}


def test_the_pipelines_key_is_verified_without_a_region_check(
    sandbox: SandboxServer, secrets_dir: Path, keys: PipelinesControl
) -> None:
    checks = by_name(sandbox, secrets_dir)
    assert checks["secret source"][0] is True and PIPELINES_KEY_VAR in checks["secret source"][1]
    assert checks["credentials"] == (True, "Pipelines key accepted (POST /v1/batch, empty, strict)")
    assert "region" not in checks and checks["key age"][0] is True
    assert sandbox.control.stats()["people"] == 0  # the check wrote nothing


def test_a_revoked_key_fails_and_a_missing_one_is_named(
    sandbox: SandboxServer, secrets_dir: Path, keys: PipelinesControl
) -> None:
    keys.set_keys(["another-key"])
    ok, detail = by_name(sandbox, secrets_dir)["credentials"]
    assert ok is False and "401" in detail and DEFAULT_PIPELINES_API_KEY not in detail
    (secrets_dir / PIPELINES_KEY_VAR).unlink()
    ok, detail = by_name(sandbox, secrets_dir)["secret source"]
    assert ok is False and PIPELINES_KEY_VAR in detail


def test_a_rotated_key_is_read_again_after_a_401(
    sandbox: SandboxServer, secrets_dir: Path, keys: PipelinesControl
) -> None:
    source = source_from_spec(f"dir:{secrets_dir}", api="pipelines")
    source.min_refresh_interval_s = 0
    client = PipelinesClient.from_settings(settings(sandbox, secrets_dir), source.get())
    try:
        assert client.check() == 200
        keys.set_keys(["rotated-key"])  # the old key is revoked, the new one stored
        (secrets_dir / PIPELINES_KEY_VAR).write_text("rotated-key")
        with pytest.raises(CredentialsError):
            client.check()
        fresh = source.refresh()  # what Runtime.refresh_credentials does after a 401
        client.use_credentials(fresh.site_id, fresh.api_key)
        assert client.check() == 200
    finally:
        client.close()


def test_env_source_needs_the_pipelines_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIPELINES_KEY_VAR, raising=False)
    with pytest.raises(ConfigurationError) as info:
        source_from_spec("env", api="pipelines").get()
    assert PIPELINES_KEY_VAR in str(info.value)


def test_the_key_stays_out_of_the_settings_repr() -> None:
    key = "pipelines-secret-canary-91c2"
    assert key not in repr(Settings(CUSTOMERIO_PIPELINES_API_KEY=key))  # type: ignore[call-arg]


def test_the_runtime_picks_the_pipelines_destination_and_refreshes_its_key(
    sandbox: SandboxServer, secrets_dir: Path, keys: PipelinesControl, redis_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    from cioguard.broker.envelope import new_key
    from cioguard.delivery.runtime import build_runtime

    base = settings(sandbox, secrets_dir).model_dump(by_alias=True)
    full = Settings(**{**base, "CIOGUARD_BROKER_URL": redis_url,
                       "CIOGUARD_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}",
                       "CIOGUARD_HASH_KEY": "k" * 8 + "0123456789abcdefghijklmnopqrstuv",
                       "CIOGUARD_PAYLOAD_KEY": new_key()})  # fmt: skip
    rt = build_runtime(full)
    try:
        assert rt.destination.name == "pipelines" and isinstance(rt.client, PipelinesClient)
        assert (rt.limiter.spec.name, rt.limiter.spec.rate_per_s) == ("pipelines", 900.0)
        keys.set_keys(["rotated-in-runtime"])
        (secrets_dir / PIPELINES_KEY_VAR).write_text("rotated-in-runtime")
        with pytest.raises(CredentialsError):
            rt.client.check()
        rt.credentials.min_refresh_interval_s = 0
        rt.refresh_credentials()
        assert rt.client.check() == 200
    finally:
        rt.client.close()
        rt.audit.dispose()
        rt.redis.close()
