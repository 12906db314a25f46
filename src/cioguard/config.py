"""Typed settings, read once from the environment (and ``.env``).

One frozen object built from environment variables, then from a ``.env`` file in the working
directory when there is one (pydantic-settings' ``env_file``; the environment wins over the
file, and empty values count as unset), and for Customer.io credentials from the secret source
chosen by ``CIOGUARD_SECRETS``. (The ``cioguard`` command also loads ``.env`` into its process
environment, the environment again winning, because the ``env`` secret source, Celery and
Flower read the environment themselves.) Invalid values are refused at start with a
:class:`~cioguard.errors.ConfigurationError` that names the variable and the expected form, and
never echoes the value (it may be a secret). Secrets are ``SecretStr`` so they stay out of
``repr`` and logs.

The application process needs only the broker, the keys and the policy; the worker also needs
Customer.io credentials, which come from the secret source (:mod:`cioguard.delivery.credentials`).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cioguard.errors import ConfigurationError

MIN_HASH_KEY_BYTES = 32
ENV_FILE = ".env"
"""Read from the working directory when present; a variable set in the environment wins."""

_EXPECTED: dict[str, str] = {
    "CUSTOMERIO_REGION": "'us' or 'eu'",
    "CUSTOMERIO_WEBHOOK_SECRET": "the reporting-webhook signing key(s), comma-separated",
    "CIOGUARD_HASH_KEY": f"a random secret of at least {MIN_HASH_KEY_BYTES} characters "
    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)",
    "CIOGUARD_PAYLOAD_KEY": "comma-separated Fernet keys, newest first "
    "(`cioguard keys new` prints one)",
    "CIOGUARD_RATE_LIMIT": "a positive number of requests per second",
    "CIOGUARD_RATE_BURST": "a number of requests >= 1",
    "CIOGUARD_APP_RATE_LIMIT": "a positive number of requests per second",
    "CIOGUARD_HTTP_TIMEOUT_S": "a positive number of seconds",
    "CIOGUARD_DELETION_MODE": "'suppress', 'suppress_and_delete' or 'delete'",
    "CIOGUARD_MAX_ATTEMPTS": "a whole number >= 1",
    "CIOGUARD_MAX_AGE_S": "a positive number of seconds",
    "CIOGUARD_VISIBILITY_TIMEOUT_S": "a whole number of seconds >= 5",
    "CIOGUARD_REQUEUE_AFTER_S": "a number of seconds >= 1",
    "CIOGUARD_METRICS_PORT": "a TCP port number (1-65535)",
    "CIOGUARD_METRICS_ADDR": "an IP address to bind, e.g. 127.0.0.1 or 0.0.0.0",
    "CIOGUARD_TASK_EVENTS": "0 or 1",
    "CIOGUARD_BATCH": "0 or 1",
    "CIOGUARD_CA_BUNDLE": "the path of a readable PEM file",
    "CIOGUARD_POLICY": "the path of a readable TOML policy file",
    "CIOGUARD_LOG_FORMAT": "'auto', 'json' or 'text'",
    "CIOGUARD_RETENTION_DAYS": "a whole number of days >= 1",
    "CIOGUARD_WEBHOOK_HANDLERS": "comma-separated importable module names",
    "CIOGUARD_WEBHOOK_MAX_BODY_BYTES": "a whole number of bytes >= 1024",
    "FLOWER_BASIC_AUTH": "user:password",
    "CIOGUARD_BATCH_LINGER_S": "seconds between 0 and 5",
    "CIOGUARD_BATCH_MAX_OPS": "a whole number between 1 and 1000",
    "CIOGUARD_BROKER_URL": "a redis://, rediss:// or sentinel:// URL, e.g. "
    "redis://localhost:6379/0 or sentinel://s1:26379/0;sentinel://s2:26379?master_name=mymaster",
    "CIOGUARD_AUDIT_URL": "an SQLAlchemy URL: sqlite:///path.db or "
    "postgresql+psycopg://user:password@host:5432/db",
    "CIOGUARD_TRACK_URL": "an https:// URL (unset = Customer.io's host for CUSTOMERIO_REGION)",
    "CIOGUARD_API": "'track' or 'pipelines'",
    "CUSTOMERIO_PIPELINES_API_KEY": "the API key of a Customer.io HTTP source",
    "CIOGUARD_PIPELINES_URL": "an https:// URL (unset = Customer.io's Pipelines host for "
    "CUSTOMERIO_REGION)",
    "CIOGUARD_PIPELINES_RATE_LIMIT": "a positive number of requests per second",
    "CIOGUARD_FLOWER_URL": "the http(s):// URL Flower answers on, e.g. http://flower:5555",
}
_AUDIT_DIALECTS = ("sqlite", "postgresql")


class Settings(BaseSettings):
    """Every setting cioguard reads. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True,
        env_file=ENV_FILE, env_file_encoding="utf-8",
    )  # fmt: skip

    region: Literal["us", "eu"] = Field("us", alias="CUSTOMERIO_REGION")
    webhook_secret: SecretStr | None = Field(None, alias="CUSTOMERIO_WEBHOOK_SECRET")
    track_url: str | None = Field(None, alias="CIOGUARD_TRACK_URL")
    ca_bundle: Path | None = Field(None, alias="CIOGUARD_CA_BUNDLE")
    broker_url: str = Field("redis://localhost:6379/0", alias="CIOGUARD_BROKER_URL")
    audit_url: str = Field("sqlite:///cioguard-audit.db", alias="CIOGUARD_AUDIT_URL")
    hash_key: SecretStr | None = Field(None, alias="CIOGUARD_HASH_KEY")
    payload_key: SecretStr | None = Field(None, alias="CIOGUARD_PAYLOAD_KEY")
    policy_path: Path | None = Field(None, alias="CIOGUARD_POLICY")
    secrets_source: str = Field("env", alias="CIOGUARD_SECRETS")
    rate_limit_per_s: float = Field(100.0, gt=0, alias="CIOGUARD_RATE_LIMIT")
    rate_burst: float | None = Field(None, ge=1, alias="CIOGUARD_RATE_BURST")
    app_rate_limit_per_s: float = Field(10.0, gt=0, alias="CIOGUARD_APP_RATE_LIMIT")
    http_timeout_s: float = Field(10.0, gt=0, alias="CIOGUARD_HTTP_TIMEOUT_S")
    deletion_mode: Literal["suppress", "suppress_and_delete", "delete"] = Field(
        "suppress", alias="CIOGUARD_DELETION_MODE"
    )
    max_attempts: int = Field(12, ge=1, alias="CIOGUARD_MAX_ATTEMPTS")
    max_age_s: float = Field(24 * 3600.0, gt=0, alias="CIOGUARD_MAX_AGE_S")
    visibility_timeout_s: int = Field(900, ge=5, alias="CIOGUARD_VISIBILITY_TIMEOUT_S")
    requeue_after_s: float = Field(300.0, ge=1, alias="CIOGUARD_REQUEUE_AFTER_S")
    batch: bool = Field(True, alias="CIOGUARD_BATCH")
    metrics_port: int | None = Field(None, ge=1, le=65535, alias="CIOGUARD_METRICS_PORT")
    metrics_addr: str = Field("127.0.0.1", alias="CIOGUARD_METRICS_ADDR")
    task_events: bool = Field(True, alias="CIOGUARD_TASK_EVENTS")
    sentry_dsn: SecretStr | None = Field(None, alias="SENTRY_DSN")
    environment: str = Field("production", alias="CIOGUARD_ENVIRONMENT")
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="CIOGUARD_LOG_FORMAT")
    retention_days: int = Field(730, ge=1, alias="CIOGUARD_RETENTION_DAYS")
    webhook_handlers: str = Field("", alias="CIOGUARD_WEBHOOK_HANDLERS")
    webhook_max_body_bytes: int = Field(
        256 * 1024, ge=1024, alias="CIOGUARD_WEBHOOK_MAX_BODY_BYTES"
    )
    flower_basic_auth: SecretStr | None = Field(None, alias="FLOWER_BASIC_AUTH")
    batch_linger_s: float = Field(0.2, ge=0, le=5, alias="CIOGUARD_BATCH_LINGER_S")
    batch_max_ops: int = Field(100, ge=1, le=1000, alias="CIOGUARD_BATCH_MAX_OPS")
    flower_url: str | None = Field(None, alias="CIOGUARD_FLOWER_URL")
    # Which Customer.io API the worker delivers to (see README, "Choosing an API").
    api: Literal["track", "pipelines"] = Field("track", alias="CIOGUARD_API")
    # Read by the worker through the secret source (CIOGUARD_SECRETS), like the Track key;
    # declared here so it is validated and never shown in a repr.
    pipelines_api_key: SecretStr | None = Field(None, alias="CUSTOMERIO_PIPELINES_API_KEY")
    pipelines_url: str | None = Field(None, alias="CIOGUARD_PIPELINES_URL")
    # 3,000 requests per 3 s documented; 900/s with its default burst (90) stays under it.
    pipelines_rate_limit_per_s: float = Field(900.0, gt=0, alias="CIOGUARD_PIPELINES_RATE_LIMIT")

    @field_validator("broker_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "sentinel"):
            raise ValueError("not a redis:// URL")
        if scheme == "sentinel" and "master_name=" not in value:
            raise ValueError("a sentinel:// URL needs ?master_name=NAME")
        return value

    @field_validator("metrics_addr")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        ipaddress.ip_address(value)  # raises ValueError on anything but an IP address
        return value

    @field_validator("audit_url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError("not an SQLAlchemy URL") from None
        if backend not in _AUDIT_DIALECTS:
            raise ValueError("unsupported database")
        return value

    @field_validator("track_url", "pipelines_url", "flower_url")
    @classmethod
    def _web_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        https_only = info.field_name in ("track_url", "pipelines_url")
        schemes = ("https",) if https_only else ("http", "https")
        parts = urlsplit(value or "")
        if value is not None and (parts.scheme not in schemes or not parts.hostname):
            raise ValueError("not a usable URL")
        return value

    @field_validator("ca_bundle", "policy_path")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("file not found")
        return value

    @field_validator("hash_key")
    @classmethod
    def _strong_hash_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_HASH_KEY_BYTES:
            raise ValueError("too short")
        return value

    @field_validator("payload_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                Fernet(key.strip().encode())  # raises ValueError on a malformed key
        return value

    # -- derived values -------------------------------------------------------------------

    @property
    def api_rate_per_s(self) -> float:
        """The fleet-wide rate for the chosen API (``CIOGUARD_RATE_LIMIT`` for Track,
        ``CIOGUARD_PIPELINES_RATE_LIMIT`` for Pipelines)."""
        return self.pipelines_rate_limit_per_s if self.api == "pipelines" else self.rate_limit_per_s

    @property
    def burst(self) -> float:
        """Bucket capacity: ``CIOGUARD_RATE_BURST`` or a tenth of a second's worth (min 1)."""
        return self.rate_burst or max(1.0, self.api_rate_per_s / 10)

    @property
    def countdown_cap_s(self) -> float:
        """The longest Celery countdown allowed: well inside the Redis visibility timeout."""
        return min(300.0, self.visibility_timeout_s / 4)

    def hash_key_bytes(self) -> bytes:
        """The keyed-hash key; raises ConfigurationError when unset."""
        return _require(self.hash_key, "CIOGUARD_HASH_KEY").encode()

    def payload_keys(self) -> list[bytes]:
        """Fernet keys, newest first; raises ConfigurationError when unset."""
        raw = _require(self.payload_key, "CIOGUARD_PAYLOAD_KEY")
        return [k.strip().encode() for k in raw.split(",") if k.strip()]

    def webhook_secrets(self) -> list[str]:
        """Active webhook signing secrets (several during a rotation)."""
        raw = _require(self.webhook_secret, "CUSTOMERIO_WEBHOOK_SECRET")
        return [s.strip() for s in raw.split(",") if s.strip()]

    def require_application(self) -> None:
        """Fail fast on what the application side needs to enqueue."""
        self.hash_key_bytes()
        self.payload_keys()


def _require(value: SecretStr | None, name: str) -> str:
    if value is None or not value.get_secret_value().strip():
        raise ConfigurationError(f"{name} is not set: expected {_EXPECTED.get(name, 'a value')}")
    return value.get_secret_value()


def setting_names() -> frozenset[str]:
    """The environment variable names :class:`Settings` reads (``CIOGUARD_BROKER_URL``...)."""
    return frozenset(field.alias or name for name, field in Settings.model_fields.items())


def load_settings(defaults: Mapping[str, Any] | None = None) -> Settings:
    """Build settings from the environment, turning validation errors into one clear line.

    ``defaults`` (a framework's settings, keyed by the environment variables' names, e.g. Django's
    ``CIOGUARD`` dict) apply where the environment does not set the variable: the environment
    wins, so an operator can override a deployed value without a code change, and secrets can stay
    out of settings files. An unknown name is refused (a typo would otherwise be ignored).
    """
    values = dict(defaults or {})
    known = setting_names()
    for name in values:
        if name not in known:
            raise ConfigurationError(f"{name} is not a cioguard setting (see .env.example)")
    try:
        return Settings(**{k: v for k, v in values.items() if k not in os.environ})
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    aliases = {name: field.alias for name, field in Settings.model_fields.items()}
    problems = []
    for error in exc.errors(include_input=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        var = aliases.get(field) or field
        expected = _EXPECTED.get(var, error["msg"])
        problems.append(f"{var} is invalid: expected {expected}")
    return "; ".join(problems)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use. Tests call ``get_settings.cache_clear()``."""
    return load_settings()
