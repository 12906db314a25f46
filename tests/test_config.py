"""Tests for config.py: invalid values refused with the variable's name and expected form (never
the value), empty values treated as unset, secrets out of ``repr``, and .env.example complete.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cioguard import config
from cioguard.broker.envelope import new_key
from cioguard.config import Settings, load_settings
from cioguard.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
ALIASES = {field.alias for field in Settings.model_fields.values()}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No cioguard variable from the outer environment leaks into these tests."""
    for name in ALIASES:
        if name:
            monkeypatch.delenv(name, raising=False)
    yield monkeypatch


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CIOGUARD_RATE_LIMIT", "abc"),
        ("CIOGUARD_RATE_LIMIT", "-1"),
        ("CUSTOMERIO_REGION", "mars"),
        ("CIOGUARD_PAYLOAD_KEY", "notakey-secret-looking-value"),
        ("CIOGUARD_HASH_KEY", "short-secret"),
        ("CIOGUARD_METRICS_PORT", "70000"),
        ("CIOGUARD_BROKER_URL", "localhost:6380"),
        ("CIOGUARD_BROKER_URL", "amqp://guest@rabbit//"),
        ("CIOGUARD_AUDIT_URL", "audit.db"),
        ("CIOGUARD_AUDIT_URL", "mysql://user:pw@db/audit"),
        ("CIOGUARD_TRACK_URL", "http://track.example"),
        ("CIOGUARD_TRACK_URL", "https:///no-host"),
        ("CIOGUARD_FLOWER_URL", "flower.internal:5555"),
        ("CIOGUARD_POLICY", "/does/not/exist.toml"),
        ("CIOGUARD_DELETION_MODE", "shred"),
    ],
)
def test_an_invalid_value_names_the_variable_and_the_expected_form(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{variable} is invalid: expected ")
    assert message.removeprefix(f"{variable} is invalid: expected ") == config._EXPECTED[variable]
    assert value not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_several_problems_are_reported_on_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CIOGUARD_RATE_LIMIT", "abc")
    clean_env.setenv("CUSTOMERIO_REGION", "mars")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "CIOGUARD_RATE_LIMIT is invalid" in message and "CUSTOMERIO_REGION is invalid" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CIOGUARD_BROKER_URL", "rediss://:pw@redis.example:6380/1"),
        ("CIOGUARD_BROKER_URL", "redis://"),
        ("CIOGUARD_AUDIT_URL", "sqlite:///cioguard-audit.db"),
        ("CIOGUARD_AUDIT_URL", "postgresql+psycopg://cioguard:pw@postgres:5432/cioguard"),
        ("CIOGUARD_TRACK_URL", "https://127.0.0.1:8443"),
        ("CIOGUARD_FLOWER_URL", "http://flower:5555"),
    ],
)
def test_valid_urls_are_accepted(clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    clean_env.setenv(variable, value)
    load_settings()


def test_empty_values_count_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("CIOGUARD_RATE_BURST", "CIOGUARD_METRICS_PORT", "CIOGUARD_CA_BUNDLE"):
        clean_env.setenv(name, "")
    clean_env.setenv("CIOGUARD_HASH_KEY", "")
    settings = load_settings()
    assert settings.rate_burst is None and settings.metrics_port is None
    assert settings.ca_bundle is None
    with pytest.raises(ConfigurationError, match="CIOGUARD_HASH_KEY is not set: expected"):
        settings.hash_key_bytes()


def test_the_env_example_file_loads_as_it_is(clean_env: pytest.MonkeyPatch) -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.hash_key is None and settings.metrics_port is None


def test_every_setting_is_documented_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
    assert ALIASES - documented == set()


def test_every_expected_form_belongs_to_a_setting() -> None:
    assert set(config._EXPECTED) - ALIASES == set()


def test_secrets_stay_out_of_repr() -> None:
    hash_key, payload_key = secrets.token_urlsafe(48), new_key()
    settings = Settings(CIOGUARD_HASH_KEY=hash_key, CIOGUARD_PAYLOAD_KEY=payload_key)
    assert hash_key not in repr(settings) and payload_key not in repr(settings)
