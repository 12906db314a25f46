"""cioguard.contrib.django in a real Django project (tests/contrib/djangoproject, SQLite file).

The private Redis is the broker: a published job is a message in the ``cioguard`` list. Requests
go through Django's test client and through a real HTTP server (wsgiref in a thread).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
import redis

django = pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from cioguard.broker.celeryconf import QUEUE, WEBHOOK_TASK  # noqa: E402
from cioguard.producer import api  # noqa: E402
from tests.contrib.webhook_events import EMAIL, SECRET, signed  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Django set up once for this module, with its tables made in a SQLite file."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.contrib.djangoproject.settings"
    os.environ["DJANGOPROJECT_DB"] = str(tmp_path_factory.mktemp("django") / "db.sqlite3")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    yield


@pytest.fixture
def configured(project: None, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``settings.CIOGUARD`` holding the test environment (no cioguard variable in os.environ)."""
    credentials = ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY")  # the worker's secret source
    values = {k: v for k, v in env.items() if k not in credentials}
    values["CUSTOMERIO_WEBHOOK_SECRET"] = SECRET
    with override_settings(CIOGUARD=values):
        yield values
    from cioguard.contrib import django as cio

    cio.reset()
    api._installed.clear()
    api._settings_source[:] = [api.get_settings]
    api.get_producer.cache_clear()


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def tasks_queued(broker: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in reversed(broker.lrange(QUEUE, 0, -1))]


def accounts() -> int:
    from tests.contrib.djangoproject.signups.models import Account

    return int(Account.objects.count())


# -- transactions ---------------------------------------------------------------------------


def test_a_committed_sign_up_publishes_once_and_a_rolled_back_one_nothing(
    configured: dict[str, str], broker: redis.Redis
) -> None:
    client = Client()
    before = accounts()
    failed = client.post("/sign-up", {"email": EMAIL, "fail": "1"})
    assert failed.status_code == 200
    assert accounts() == before  # the application's own write rolled back...
    assert tasks_queued(broker) == []  # ...and cioguard published nothing
    done = client.post("/sign-up", {"email": EMAIL})
    assert done.status_code == 200 and accounts() == before + 1
    assert tasks_queued(broker) == ["cioguard.deliver", "cioguard.deliver"]
    producer = api.get_producer()
    ids = {json.loads(raw)["headers"]["id"] for raw in broker.lrange(QUEUE, 0, -1)}
    assert done.json()["job"] in ids
    [identify] = [
        producer.envelope.open(json.loads(base64.b64decode(m["body"]))[0][0])
        for m in map(json.loads, broker.lrange(QUEUE, 0, -1))
        if m["headers"]["id"] == done.json()["job"]
    ]
    assert identify["person_id"] == str(done.json()["id"])  # the int primary key, as a string


def test_on_commit_false_publishes_at_once_even_if_rolled_back(
    configured: dict[str, str], broker: redis.Redis
) -> None:
    from cioguard.contrib import django as cio

    with transaction.atomic():
        cio.track(7, "kept", on_commit=False)
        cio.track(7, "deferred")
        assert tasks_queued(broker) == ["cioguard.deliver"]
        transaction.set_rollback(True)
    assert len(tasks_queued(broker)) == 1


def test_nested_savepoint_rollback_drops_only_its_calls(
    configured: dict[str, str], broker: redis.Redis
) -> None:
    from cioguard.contrib import django as cio

    with transaction.atomic():
        cio.track(8, "outer")
        try:
            with transaction.atomic():
                cio.track(8, "inner")
                raise RuntimeError("inner step failed")
        except RuntimeError:
            pass
        assert tasks_queued(broker) == []
    assert len(tasks_queued(broker)) == 1


def test_a_bad_call_raises_at_the_call_site_not_at_commit(
    configured: dict[str, str], broker: redis.Redis
) -> None:
    from cioguard.contrib import django as cio

    with transaction.atomic():
        with pytest.raises(TypeError, match=r"^person_id must be a str or an int, not NoneType$"):
            cio.identify(None, {})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"not JSON-serializable \(object\) at x$"):
            cio.track(1, "e", {"x": object()})
    assert tasks_queued(broker) == []


def test_delete_person_is_recorded_at_once_by_default(
    configured: dict[str, str], broker: redis.Redis
) -> None:
    from cioguard.contrib import django as cio

    with transaction.atomic():
        request_id = cio.delete_person(9)
        assert cio.delete_person(10, on_commit=True) is None
        transaction.set_rollback(True)
    assert request_id is not None
    assert api.get_producer().deletion_status(request_id).state == "received"
    assert tasks_queued(broker) == ["cioguard.erase"]


# -- settings -------------------------------------------------------------------------------


def test_the_environment_wins_over_settings_cioguard(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cioguard.contrib import django as cio

    with override_settings(CIOGUARD={**configured, "CIOGUARD_RATE_LIMIT": "3"}):
        assert cio.settings().rate_limit_per_s == 3
        monkeypatch.setenv("CIOGUARD_RATE_LIMIT", "7")
        cio.reset()
        assert cio.settings().rate_limit_per_s == 7
        assert api.current_settings().rate_limit_per_s == 7


@pytest.mark.parametrize(
    ("value", "message"),
    [({"CIOGUARD_NO_SUCH": "x"}, "CIOGUARD_NO_SUCH is not a cioguard setting"),
     ({"CIOGUARD_RATE_LIMIT": "-1-secret"}, "CIOGUARD_RATE_LIMIT is invalid"),
     (["CIOGUARD_RATE_LIMIT"], "settings.CIOGUARD must be a dict")],
)  # fmt: skip
def test_bad_settings_stop_with_a_message_naming_the_setting(
    configured: dict[str, str], value: Any, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as caught, override_settings(CIOGUARD=value):
        pass
    assert message in str(caught.value)
    assert "secret" not in str(caught.value).replace("settings", "")


# -- the webhook view -----------------------------------------------------------------------


def test_webhook_view_with_the_test_client(configured: dict[str, str], broker: redis.Redis) -> None:
    client = Client()
    body, headers = signed("01HDJANGO0001")
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    first = client.post("/webhooks/customerio", body, content_type="application/json", **extra)
    again = client.post("/webhooks/customerio", body, content_type="application/json", **extra)
    assert (first.status_code, first.json()) == (200, {"status": "accepted"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    _, wrong = signed("01HDJANGO0002", secret="not-the-secret")
    bad = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in wrong.items()}
    refused = client.post("/webhooks/customerio", body, content_type="application/json", **bad)
    assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
    assert client.get("/webhooks/customerio").status_code == 405
    assert tasks_queued(broker) == [WEBHOOK_TASK]
    assert EMAIL.encode() not in b"".join(broker.lrange(QUEUE, 0, -1))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_url(configured: dict[str, str]) -> Iterator[str]:
    from django.core.wsgi import get_wsgi_application

    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_webhook_view_and_sign_up_over_real_http(http_url: str, broker: redis.Redis) -> None:
    body, headers = signed("01HDJANGO0003")
    with httpx.Client(base_url=http_url, timeout=5.0) as http:
        answer = http.post("/webhooks/customerio", content=body, headers=headers)
        assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
        too_big = http.post("/webhooks/customerio", content=b"x" * (300 * 1024), headers=headers)
        assert too_big.status_code == 413
        assert http.post("/sign-up", data={"email": EMAIL, "fail": "1"}).status_code == 200
        assert tasks_queued(broker) == [WEBHOOK_TASK]
        assert http.post("/sign-up", data={"email": EMAIL}).status_code == 200
    assert sorted(tasks_queued(broker)) == sorted(
        [WEBHOOK_TASK, "cioguard.deliver", "cioguard.deliver"]
    )


def test_no_settings_file_path_needs_the_app_keys_until_first_use(project: None) -> None:
    """``migrate`` and other commands run without cioguard keys: nothing is built at start."""
    from cioguard.contrib import django as cio

    with override_settings(CIOGUARD={"CIOGUARD_BROKER_URL": "redis://127.0.0.1:1/0"}):
        assert cio.settings().hash_key is None
    cio.reset()
    api._settings_source[:] = [api.get_settings]
    api.get_producer.cache_clear()


def test_the_project_uses_a_sqlite_file(project: None) -> None:
    from django.conf import settings

    assert Path(settings.DATABASES["default"]["NAME"]).exists()  # shared with the HTTP thread
