"""Broker URL forms: sentinel:// parsing, the Celery configuration it gives, and refusals."""

from __future__ import annotations

import pytest

from cioguard.broker.celeryconf import celery_config
from cioguard.broker.clients import redis_client, sentinel_parts
from cioguard.config import Settings, load_settings
from cioguard.errors import ConfigurationError

URL = "sentinel://:pw@s1:26379/2;sentinel://s2:26380;sentinel://s3?master_name=mymaster"


def test_a_sentinel_url_names_every_sentinel_the_master_and_the_database() -> None:
    parts = sentinel_parts(URL)
    assert parts.sentinels == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert (parts.master_name, parts.db, parts.password) == ("mymaster", 2, "pw")
    assert parts.kombu_url == "sentinel://:pw@s1:26379/2"


def test_celery_gets_the_sentinel_transport_and_the_master_name_as_an_option() -> None:
    conf = celery_config(Settings(CIOGUARD_BROKER_URL=URL))
    assert conf["broker_transport"] == "cioguard.broker.transport:SentinelTransport"
    assert conf["broker_transport_options"]["master_name"] == "mymaster"
    assert "?" not in conf["broker_url"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sentinel://s1:26379", "master_name"),
        ("sentinel://s1:26379/x?master_name=m", "database"),
        ("sentinel://s1:26379;redis://s2?master_name=m", "every part"),
    ],
)
def test_a_bad_sentinel_url_is_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        sentinel_parts(url)


def test_settings_refuse_a_sentinel_url_without_a_master_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIOGUARD_BROKER_URL", "sentinel://:secret-pw@s1:26379")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CIOGUARD_BROKER_URL" in str(caught.value) and "secret-pw" not in str(caught.value)


def test_redis_client_takes_every_supported_scheme(redis_url: str) -> None:
    client = redis_client(redis_url, socket_timeout=2)
    assert client.ping()
    client.close()
