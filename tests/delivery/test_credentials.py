"""Tests for the secret sources: env, a directory, and fake GCP / AWS clients (no network)."""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cioguard.delivery.credentials import (
    API_KEY_VAR,
    SITE_ID_VAR,
    Credentials,
    CredentialSource,
    DirReader,
    SecretSourceUnavailableError,
    source_from_spec,
)
from cioguard.errors import ConfigurationError, RetryableError

CREATED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def write_secrets(root: Path, site_id: str = "site-1", api_key: str = "key-1") -> None:
    (root / SITE_ID_VAR).write_text(f"{site_id}\n")
    (root / API_KEY_VAR).write_text(f"{api_key}\n")


# -- env ----------------------------------------------------------------------------------------


def test_env_source_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SITE_ID_VAR, "site-env")
    monkeypatch.setenv(API_KEY_VAR, "key-env")
    creds = source_from_spec("env").get()
    assert (creds.site_id, creds.api_key) == ("site-env", "key-env")
    assert creds.created_at is None and creds.age_days() is None


def test_missing_credential_is_a_configuration_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SITE_ID_VAR, "site-env")
    monkeypatch.delenv(API_KEY_VAR, raising=False)
    with pytest.raises(ConfigurationError, match=API_KEY_VAR):
        source_from_spec("env").get()


def test_credentials_repr_hides_the_secret() -> None:
    creds = Credentials("site-secret", "key-secret")
    assert "secret" not in repr(creds) and "secret" not in str(creds)


# -- dir ----------------------------------------------------------------------------------------


def test_dir_source_reads_one_file_per_secret_with_mtime_as_age(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    stamp = (datetime.now(UTC) - timedelta(days=100)).timestamp()
    os.utime(tmp_path / API_KEY_VAR, (stamp, stamp))
    creds = source_from_spec(f"dir:{tmp_path}").get()
    assert (creds.site_id, creds.api_key) == ("site-1", "key-1")
    age = creds.age_days()
    assert age is not None and 99.9 < age < 100.1


def test_dir_source_is_cached_until_refreshed(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    source = source_from_spec(f"dir:{tmp_path}")
    assert source.get().api_key == "key-1"
    write_secrets(tmp_path, api_key="key-2")
    assert source.get().api_key == "key-1"
    assert source.refresh().api_key == "key-2"
    assert source.get().api_key == "key-2"


def test_refresh_with_an_empty_file_keeps_the_old_pair_and_is_retryable(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    source = source_from_spec(f"dir:{tmp_path}")
    source.get()
    (tmp_path / API_KEY_VAR).write_text("")  # caught half-way through a non-atomic write
    with pytest.raises(SecretSourceUnavailableError) as info:
        source.refresh()
    assert isinstance(info.value, RetryableError) and info.value.retry_after_s
    assert API_KEY_VAR in str(info.value)
    assert source.get().api_key == "key-1"


def test_refreshes_are_throttled_but_the_first_one_always_reads(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    clock = FakeClock()
    source = CredentialSource(DirReader(tmp_path), "dir", min_refresh_interval_s=5, clock=clock)
    source.get()
    write_secrets(tmp_path, api_key="key-2")
    assert source.refresh().api_key == "key-2"  # right after start: reads
    write_secrets(tmp_path, api_key="key-3")
    clock.now_s += 1
    assert source.refresh().api_key == "key-2"  # too soon after the last refresh
    clock.now_s += 5
    assert source.refresh().api_key == "key-3"


def test_dir_source_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        source_from_spec(f"dir:{tmp_path / 'nope'}")


@pytest.mark.parametrize("spec", ["", "vault:x", "dir:", "gcp:project/x", "gcp:", "aws:a b"])
def test_invalid_specs_are_refused_naming_the_variable(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="CIOGUARD_SECRETS"):
        source_from_spec(spec, client=object())


# -- GCP Secret Manager -------------------------------------------------------------------------


class NotFound(Exception):
    """Named like google.api_core.exceptions.NotFound."""


class ServiceUnavailable(Exception):
    """Named like google.api_core.exceptions.ServiceUnavailable."""


@dataclass
class FakeGcpClient:
    """Answers like SecretManagerServiceClient: versions/latest resolves to a numbered version."""

    secrets: dict[str, bytes]
    create_time: Any = CREATED
    calls: list[str] = field(default_factory=list)
    fail: Exception | None = None
    deny_metadata: bool = False

    def access_secret_version(self, request: dict[str, str]) -> Any:
        self.calls.append(request["name"])
        if self.fail is not None:
            raise self.fail
        _, project, _, secret, _, version = request["name"].split("/")
        assert version == "latest"
        if secret not in self.secrets:
            raise NotFound(f"Secret [{request['name']}] not found")
        payload = type("SecretPayload", (), {"data": self.secrets[secret]})()
        name = f"projects/{project}/secrets/{secret}/versions/3"
        return type("AccessSecretVersionResponse", (), {"name": name, "payload": payload})()

    def get_secret_version(self, request: dict[str, str]) -> Any:
        if self.deny_metadata:
            raise PermissionError("403 Permission 'secretmanager.versions.get' denied")
        assert request["name"].endswith("/versions/3")
        return type("SecretVersion", (), {"create_time": self.create_time})()


def gcp_secrets() -> dict[str, bytes]:
    return {SITE_ID_VAR: b"site-gcp", API_KEY_VAR: b"key-gcp\n"}


def test_gcp_source_reads_latest_versions_with_their_creation_time() -> None:
    client = FakeGcpClient(gcp_secrets())
    creds = source_from_spec("gcp:projects/my-proj", client=client).get()
    assert (creds.site_id, creds.api_key) == ("site-gcp", "key-gcp")
    assert creds.created_at == CREATED
    assert client.calls == [
        f"projects/my-proj/secrets/{SITE_ID_VAR}/versions/latest",
        f"projects/my-proj/secrets/{API_KEY_VAR}/versions/latest",
    ]


def test_gcp_protobuf_timestamps_are_converted() -> None:
    class Timestamp:
        def ToDatetime(self, tzinfo: Any = None) -> datetime:
            return CREATED.astimezone(tzinfo)

    client = FakeGcpClient(gcp_secrets(), create_time=Timestamp())
    assert source_from_spec("gcp:projects/p", client=client).get().created_at == CREATED


def test_gcp_age_is_unknown_without_viewer_permission() -> None:
    client = FakeGcpClient(gcp_secrets(), deny_metadata=True)
    creds = source_from_spec("gcp:projects/p", client=client).get()
    assert creds.api_key == "key-gcp" and creds.created_at is None


def test_gcp_missing_secret_is_a_configuration_error() -> None:
    client = FakeGcpClient({SITE_ID_VAR: b"site-gcp"})
    with pytest.raises(ConfigurationError, match=API_KEY_VAR):
        source_from_spec("gcp:projects/p", client=client).get()


def test_gcp_outage_is_retryable_and_names_no_secret_value() -> None:
    client = FakeGcpClient(gcp_secrets())
    source = source_from_spec("gcp:projects/p", client=client)
    source.get()
    client.fail = ServiceUnavailable("503 upstream connect error key-gcp")
    with pytest.raises(SecretSourceUnavailableError) as info:
        source.refresh()
    assert "ServiceUnavailable" in str(info.value)
    assert "key-gcp" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_gcp_refresh_picks_up_a_new_version() -> None:
    secrets = gcp_secrets()
    client = FakeGcpClient(secrets)
    source = source_from_spec("gcp:projects/p", client=client)
    assert source.get().api_key == "key-gcp"
    secrets[API_KEY_VAR] = b"key-gcp-2"
    assert source.refresh().api_key == "key-gcp-2"


def test_gcp_without_the_extra_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'cioguard\[gcp\]'"):
        source_from_spec("gcp:projects/p")


# -- AWS Secrets Manager ------------------------------------------------------------------------


class ClientError(Exception):
    """Shaped like botocore.exceptions.ClientError."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code}) when calling the GetSecretValue operation")
        self.response = {"Error": {"Code": code, "Message": "..."}}


@dataclass
class FakeAwsClient:
    """Answers like boto3.client('secretsmanager').get_secret_value."""

    secrets: dict[str, dict[str, Any]]
    calls: list[str] = field(default_factory=list)
    fail: Exception | None = None

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        self.calls.append(SecretId)
        if self.fail is not None:
            raise self.fail
        if SecretId not in self.secrets:
            raise ClientError("ResourceNotFoundException")
        return {"Name": SecretId, "CreatedDate": CREATED, **self.secrets[SecretId]}


def test_aws_source_reads_prefixed_secret_ids_with_their_creation_date() -> None:
    client = FakeAwsClient(
        {
            f"prod/cio/{SITE_ID_VAR}": {"SecretString": "site-aws"},
            f"prod/cio/{API_KEY_VAR}": {"SecretBinary": b"key-aws"},
        }
    )
    creds = source_from_spec("aws:prod/cio/", client=client).get()
    assert (creds.site_id, creds.api_key) == ("site-aws", "key-aws")
    assert creds.created_at == CREATED
    assert client.calls == [f"prod/cio/{SITE_ID_VAR}", f"prod/cio/{API_KEY_VAR}"]


def test_aws_naive_dates_are_taken_as_utc() -> None:
    naive = CREATED.replace(tzinfo=None)
    client = FakeAwsClient({SITE_ID_VAR: {"SecretString": "s"}, API_KEY_VAR: {"SecretString": "k"}})
    client.secrets[API_KEY_VAR]["CreatedDate"] = naive
    assert source_from_spec("aws:", client=client).get().created_at == CREATED


def test_aws_missing_secret_is_a_configuration_error() -> None:
    client = FakeAwsClient({SITE_ID_VAR: {"SecretString": "s"}})
    with pytest.raises(ConfigurationError, match=API_KEY_VAR):
        source_from_spec("aws:", client=client).get()


def test_aws_access_denied_is_retryable() -> None:
    client = FakeAwsClient({}, fail=ClientError("AccessDeniedException"))
    with pytest.raises(SecretSourceUnavailableError, match="ClientError"):
        source_from_spec("aws:", client=client).get()


def test_aws_without_the_extra_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'cioguard\[aws\]'"):
        source_from_spec("aws:prod/")


# -- building the real SDK clients (fake modules stand in for the packages) ----------------------


def test_gcp_client_is_built_over_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []

    def client_class(**kwargs: Any) -> FakeGcpClient:
        built.append(kwargs)
        return FakeGcpClient(gcp_secrets())

    module = types.SimpleNamespace(SecretManagerServiceClient=client_class)
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", module)
    assert source_from_spec("gcp:projects/p").get().api_key == "key-gcp"
    assert built == [{"transport": "rest"}]


def test_gcp_without_application_credentials_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DefaultCredentialsError(Exception):
        pass

    def client_class(**kwargs: Any) -> None:
        raise DefaultCredentialsError("Your default credentials were not found")

    module = types.SimpleNamespace(SecretManagerServiceClient=client_class)
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", module)
    with pytest.raises(ConfigurationError, match="DefaultCredentialsError"):
        source_from_spec("gcp:projects/p")


def test_aws_without_a_region_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoRegionError(Exception):
        pass

    def client(service: str) -> None:
        assert service == "secretsmanager"
        raise NoRegionError("You must specify a region.")

    monkeypatch.setitem(sys.modules, "boto3", types.SimpleNamespace(client=client))
    with pytest.raises(ConfigurationError, match=r"NoRegionError.*AWS_REGION"):
        source_from_spec("aws:prod/")
