"""Where Customer.io credentials come from, behind one interface, re-readable on a 401.

``CIOGUARD_SECRETS`` chooses the source:

* ``env`` (default): ``CUSTOMERIO_SITE_ID`` / ``CUSTOMERIO_TRACK_API_KEY`` from the environment
  as it was at start (a process cannot see its environment change, so rotation needs a restart);
* ``dir:/run/secrets``: one file per secret named after its variable (Docker/Kubernetes
  secrets); files are re-read on demand, so a rotated key is picked up without a restart;
* ``gcp:projects/PROJECT``: Google Cloud Secret Manager, secrets named after the variables,
  version ``latest`` (extra ``cioguard[gcp]``);
* ``aws:PREFIX``: AWS Secrets Manager, secret ids ``PREFIX`` + variable name, e.g.
  ``aws:prod/cioguard/`` reads ``prod/cioguard/CUSTOMERIO_TRACK_API_KEY`` (extra ``cioguard[aws]``).

Values are cached; :meth:`CredentialSource.refresh` re-reads (the worker calls it after a 401
before retrying once). The cloud clients are imported lazily, so the extras stay optional, and can
be injected (tests pass fakes; no network).
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cioguard.errors import ConfigurationError, RetryableError

SITE_ID_VAR = "CUSTOMERIO_SITE_ID"
API_KEY_VAR = "CUSTOMERIO_TRACK_API_KEY"
PIPELINES_KEY_VAR = "CUSTOMERIO_PIPELINES_API_KEY"
GCP_INSTALL = "pip install 'cioguard[gcp]'"
AWS_INSTALL = "pip install 'cioguard[aws]'"
MIN_REFRESH_INTERVAL_S = 5.0
SOURCE_RETRY_AFTER_S = 30.0
_GCP_SPEC = re.compile(r"projects/([A-Za-z0-9][A-Za-z0-9-]*)")
_AWS_PREFIX = re.compile(r"[A-Za-z0-9/_+=.@-]*")
_NOT_FOUND = frozenset({"NotFound", "ResourceNotFoundException"})

Secret = tuple[str | None, datetime | None]


@dataclass(frozen=True)
class Credentials:
    """A Track API pair (or a Pipelines API key, ``site_id`` empty); ``created_at`` is when the
    key was stored, if the source knows it."""

    site_id: str
    api_key: str
    created_at: datetime | None = None

    def __repr__(self) -> str:
        return "Credentials(site_id=***, api_key=***)"

    def age_days(self, now: datetime | None = None) -> float | None:
        """Days since ``created_at``; ``None`` when the source cannot tell (``env``)."""
        if self.created_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.created_at).total_seconds() / 86400


class SecretSourceUnavailableError(RetryableError):
    """The secret source gave no usable pair right now (network, permissions, a half-written
    file); the job tries again later instead of being dead-lettered."""


class SecretReader(Protocol):
    """Reads one secret by variable name: ``(value or None if absent, creation time or None)``."""

    def read(self, name: str) -> Secret: ...


class EnvReader:
    """The process environment; knows no key age."""

    def read(self, name: str) -> Secret:
        return os.environ.get(name), None


class DirReader:
    """One file per secret. Key age is the file's modification time.

    Note: Kubernetes rewrites secret files when it syncs a volume, so the mtime is when the key
    reached this pod, which may be later than when it was created.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> Secret:
        path = self.root / name
        try:
            created = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
            return path.read_text(encoding="utf-8").strip() or None, created
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise SecretSourceUnavailableError(
                f"cannot read {name} from the secrets directory ({type(exc).__name__})",
                retry_after_s=SOURCE_RETRY_AFTER_S,
            ) from None


class GcpReader:
    """Google Cloud Secret Manager: ``projects/P/secrets/NAME/versions/latest``.

    Key age is the version's ``create_time``, read with ``get_secret_version``.

    Note: reading the age needs ``secretmanager.versions.get`` (Secret Manager Viewer), which
    the Secret Accessor role alone does not grant; without it the age is reported unknown.
    """

    def __init__(self, project: str, client: Any) -> None:
        self.project = project
        self.client = client

    def read(self, name: str) -> Secret:
        path = f"projects/{self.project}/secrets/{name}/versions/latest"
        try:
            response = self.client.access_secret_version(request={"name": path})
        except Exception as exc:
            if _not_found(exc):
                return None, None
            raise _unavailable("GCP Secret Manager", name, exc) from None
        value = bytes(response.payload.data).decode("utf-8").strip()
        return value or None, self._created(str(response.name or path))

    def _created(self, version_name: str) -> datetime | None:
        try:
            version = self.client.get_secret_version(request={"name": version_name})
        except Exception:  # the age is informative only; never fail a read over it
            return None
        return _aware(getattr(version, "create_time", None))


class AwsReader:
    """AWS Secrets Manager: secret id ``prefix + name``, current version; age = ``CreatedDate``."""

    def __init__(self, prefix: str, client: Any) -> None:
        self.prefix = prefix
        self.client = client

    def read(self, name: str) -> Secret:
        try:
            response = self.client.get_secret_value(SecretId=f"{self.prefix}{name}")
        except Exception as exc:
            if _not_found(exc):
                return None, None
            raise _unavailable("AWS Secrets Manager", name, exc) from None
        value = response.get("SecretString")
        if value is None and response.get("SecretBinary") is not None:
            value = bytes(response["SecretBinary"]).decode("utf-8")
        return (value or "").strip() or None, _aware(response.get("CreatedDate"))


def _not_found(exc: Exception) -> bool:
    """A missing secret, told apart without importing the cloud SDKs' exception classes."""
    if type(exc).__name__ in _NOT_FOUND:
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in _NOT_FOUND


def _unavailable(service: str, name: str, exc: Exception) -> SecretSourceUnavailableError:
    return SecretSourceUnavailableError(
        f"{service} did not return {name} ({type(exc).__name__})",
        retry_after_s=SOURCE_RETRY_AFTER_S,
    )


def _aware(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from an SDK timestamp (datetime or protobuf Timestamp)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if hasattr(value, "ToDatetime"):
        converted: datetime = value.ToDatetime(tzinfo=UTC)
        return converted
    return None


class CredentialSource:
    """Cached credentials from one reader; :meth:`refresh` re-reads after a 401.

    Note: refreshes closer together than ``min_refresh_interval_s`` return the pair read by the
    last one: when a key is revoked before its successor is stored, every job would otherwise
    re-read the source (one cloud API call per job) for the same answer.
    """

    def __init__(
        self,
        reader: SecretReader,
        description: str,
        *,
        min_refresh_interval_s: float = MIN_REFRESH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        api: str = "track",
    ) -> None:
        self._reader = reader
        self.api = api  # "pipelines": one key, CUSTOMERIO_PIPELINES_API_KEY, no site id
        self.description = description
        self.min_refresh_interval_s = min_refresh_interval_s
        self._clock = clock
        self._cached: Credentials | None = None
        self._refreshed_at: float | None = None

    def get(self) -> Credentials:
        """The cached pair, read on first use. Raises ConfigurationError if it is incomplete."""
        if self._cached is None:
            self._cached = self._load()
        return self._cached

    def refresh(self) -> Credentials:
        """Re-read the source. Keeps the cached pair and raises a retryable error if the source
        has no complete pair right now (a rotation in progress is not a configuration error)."""
        now, last = self._clock(), self._refreshed_at
        throttled = last is not None and now - last < self.min_refresh_interval_s
        if throttled and self._cached is not None:
            return self._cached
        self._refreshed_at = now
        try:
            self._cached = self._load()
        except ConfigurationError as exc:
            raise SecretSourceUnavailableError(
                str(exc), retry_after_s=SOURCE_RETRY_AFTER_S
            ) from None
        return self._cached

    def _load(self) -> Credentials:
        if self.api == "pipelines":
            key, created = self._reader.read(PIPELINES_KEY_VAR)
            if not key:
                raise ConfigurationError(
                    f"{PIPELINES_KEY_VAR} is not set in the secret source ({self.description}): "
                    "expected the API key of a Customer.io HTTP source (CIOGUARD_API=pipelines)"
                )
            return Credentials("", key, created)
        site_id, _ = self._reader.read(SITE_ID_VAR)
        api_key, created = self._reader.read(API_KEY_VAR)
        for name, value in ((SITE_ID_VAR, site_id), (API_KEY_VAR, api_key)):
            if not value:
                raise ConfigurationError(
                    f"{name} is not set in the secret source ({self.description}): "
                    "expected the Customer.io Track API credential"
                )
        assert site_id and api_key
        return Credentials(site_id, api_key, created)


def source_from_spec(spec: str, *, client: Any = None, api: str = "track") -> CredentialSource:
    """Parse ``CIOGUARD_SECRETS``; ``client`` replaces the GCP/AWS SDK client (tests); ``api``
    chooses which credential is read (``track``: site id and key; ``pipelines``: one key)."""
    kind, _, arg = spec.partition(":")
    if spec == "env":
        return CredentialSource(EnvReader(), "env", api=api)
    if kind == "dir" and arg:
        root = Path(arg)
        if not root.is_dir():
            raise ConfigurationError(
                f"CIOGUARD_SECRETS names a directory that does not exist: {root}"
            )
        return CredentialSource(DirReader(root), spec, api=api)
    if kind == "gcp":
        match = _GCP_SPEC.fullmatch(arg)
        if match is None:
            raise ConfigurationError("CIOGUARD_SECRETS is invalid: expected gcp:projects/PROJECT")
        return CredentialSource(GcpReader(match[1], client or _gcp_client()), spec, api=api)
    if kind == "aws" and _AWS_PREFIX.fullmatch(arg):
        return CredentialSource(AwsReader(arg, client or _aws_client()), spec, api=api)
    raise ConfigurationError(
        "CIOGUARD_SECRETS is invalid: expected 'env', 'dir:/path/to/secrets', "
        "'gcp:projects/PROJECT' or 'aws:PREFIX'"
    )


def _gcp_client() -> Any:
    """A Secret Manager client over REST.

    Note: REST rather than the default gRPC because Celery's prefork pool forks after the worker
    has checked its credentials, and gRPC channels do not survive a fork cleanly.
    """
    module = _import("google.cloud.secretmanager", "gcp:", GCP_INSTALL)
    try:
        return module.SecretManagerServiceClient(transport="rest")
    except Exception as exc:  # e.g. DefaultCredentialsError: no application credentials
        raise ConfigurationError(
            f"CIOGUARD_SECRETS=gcp:...: cannot create a Secret Manager client "
            f"({type(exc).__name__}); expected Google application default credentials"
        ) from None


def _aws_client() -> Any:
    module = _import("boto3", "aws:", AWS_INSTALL)
    try:
        return module.client("secretsmanager")
    except Exception as exc:  # e.g. NoRegionError
        raise ConfigurationError(
            f"CIOGUARD_SECRETS=aws:...: cannot create a Secrets Manager client "
            f"({type(exc).__name__}); expected AWS_REGION and AWS credentials"
        ) from None


def _import(module: str, spec_kind: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"CIOGUARD_SECRETS={spec_kind}... needs the {module} package: {install}"
        ) from None
