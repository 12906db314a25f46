"""The application API against the private Redis: refusals enqueue nothing, queued jobs are sealed.

No worker runs here: these tests look at what :class:`cioguard.producer.api.Producer` leaves in
Redis
(the ``cioguard`` list that Celery's Redis transport uses as the queue) and in the audit store.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import func, select

import cioguard
from cioguard.audit.schema import audit_log, deletion_requests, tombstones
from cioguard.broker.celeryconf import DELIVER_TASK, ERASE_TASK, QUEUE
from cioguard.broker.jobs import SEALED_REPR
from cioguard.config import get_settings
from cioguard.errors import BrokerUnavailableError, CioguardError
from cioguard.privacy.hashing import person_hash, value_hash
from cioguard.privacy.policy import check_policy_file, default_policy
from cioguard.producer import api
from cioguard.producer.api import Producer, get_producer
from cioguard.sandbox.devstack import free_port
from tests.conftest import settings_from

REPO = Path(__file__).resolve().parents[2]
CANARY_ID = "canary-person-7f3a"
CANARY_EMAIL = "canary-mail-7f3a@example.com"
CANARY_PHONE = "+1 415 555 0100"
CANARY_PASSWORD = "canary-pw-7f3a"
CANARY_EVENT = "canary_event_7f3a"
CANARIES = [CANARY_ID, CANARY_EMAIL, CANARY_PHONE, CANARY_PASSWORD, CANARY_EVENT, "canary"]
ATTRIBUTES = {"email": CANARY_EMAIL, "phone": CANARY_PHONE, "password": CANARY_PASSWORD,
              "plan": "canary-plan"}  # fmt: skip


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def assert_nothing_enqueued(broker: redis.Redis) -> None:
    assert broker.llen(QUEUE) == 0
    assert broker.keys("*") == []


def table_count(producer: Producer, table: Any) -> int:
    with producer.audit.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def assert_nothing_recorded(producer: Producer) -> None:
    assert table_count(producer, deletion_requests) == 0
    assert table_count(producer, tombstones) == 0
    assert table_count(producer, audit_log) == 0


def all_bytes(broker: redis.Redis) -> bytes:
    """Every key name and value in the broker's Redis, whatever the type."""
    chunks: list[Any] = []
    for key in broker.keys("*"):
        chunks.append(key)
        kind = broker.type(key)
        if kind == b"list":
            chunks += broker.lrange(key, 0, -1)
        elif kind == b"set":
            chunks += broker.smembers(key)
        elif kind == b"string":
            chunks.append(broker.get(key) or b"")
        elif kind == b"hash":
            for field, value in broker.hgetall(key).items():
                chunks += [field, value]
        elif kind == b"zset":
            chunks += broker.zrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected key type {kind!r}")
    return b"\n".join(c if isinstance(c, bytes) else str(c).encode() for c in chunks)


def readable(broker: redis.Redis) -> bytes:
    """:func:`all_bytes` plus each queued message's body, decoded from kombu's base64."""
    bodies = [json.dumps(body_of(message)).encode() for message in queued(broker)]
    return b"\n".join([all_bytes(broker), *bodies])


def queued(broker: redis.Redis) -> list[dict[str, Any]]:
    """The kombu messages in the queue, oldest first (kombu LPUSHes and BRPOPs)."""
    return [json.loads(raw) for raw in reversed(broker.lrange(QUEUE, 0, -1))]


def body_of(message: dict[str, Any]) -> Any:
    assert message["properties"]["body_encoding"] == "base64"
    return json.loads(base64.b64decode(message["body"]))


def assert_no_canary(data: bytes | str) -> None:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    for canary in CANARIES:
        assert canary not in text, canary


def assert_sealed(message: dict[str, Any], env: dict[str, str], job_id: str, task: str) -> str:
    """Check the message shows nothing but ids and one Fernet token; return the token."""
    headers = message["headers"]
    assert headers["task"] == task
    assert headers["id"] == job_id
    assert headers["argsrepr"] == SEALED_REPR == "('<sealed>',)"
    assert headers["kwargsrepr"] == "{}"
    args, kwargs, _embed = body_of(message)
    assert kwargs == {}
    assert len(args) == 1 and isinstance(args[0], str)
    token = args[0]
    Fernet(env["CIOGUARD_PAYLOAD_KEY"].encode()).decrypt(token.encode())  # a valid Fernet token
    assert_no_canary(json.dumps(message))
    assert_no_canary(json.dumps(body_of(message)))
    return token


# -- bad input enqueues nothing --------------------------------------------------------------------

LONG_ID = "x" * 151
DEEP: dict[str, Any] = {"leaf": 1}
for _ in range(40):
    DEEP = {"d": DEEP}

BAD_IDENTIFY: list[tuple[str, tuple[Any, ...], type[Exception], str]] = [
    ("id-none", (None, {}), TypeError, r"^person_id must be a str or an int, not NoneType$"),
    ("id-float", (4.2, {}), TypeError, r"^person_id must be a str or an int, not float$"),
    ("id-empty", ("", {}), ValueError, r"^person_id is empty$"),
    ("id-blank", ("  ", {}), ValueError, r"^person_id is empty$"),
    ("id-whitespace", (f" {CANARY_ID}", {}), ValueError, r"leading or trailing whitespace"),
    ("id-long", (LONG_ID, {}), ValueError, r"^person_id is longer than 150 bytes$"),
    ("attrs-none", (CANARY_ID, None), TypeError, r"^attributes must be a mapping, not NoneType$"),
    ("attrs-list", (CANARY_ID, [("plan", "pro")]), TypeError, r"must be a mapping, not list"),
    ("key-int", (CANARY_ID, {1: CANARY_EMAIL}), TypeError, r"keys must be str, found a int key"),
    ("nested-key-int", (CANARY_ID, {"profile": {1: CANARY_EMAIL}}), TypeError,
     r"^a key at profile is a int, not a str$"),
    ("value-set", (CANARY_ID, {"tags": {CANARY_EMAIL}}), TypeError,
     r"not JSON-serializable \(set\)"),
    ("nested-object", (CANARY_ID, {"a": [{"b": object()}]}), TypeError,
     r"not JSON-serializable \(object\) at a\[0\]\.b$"),
    ("value-nan", (CANARY_ID, {"score": math.nan}), ValueError, r"NaN or Infinity"),
    ("value-over-1000-bytes", (CANARY_ID, {"bio": CANARY_EMAIL * 100}), ValueError,
     r"^attribute 'bio' is \d+ bytes after sanitizing; Customer.io accepts at most 1000"),
    ("name-over-150-bytes", (CANARY_ID, {"n" * 151: 1}), ValueError,
     r"is 151 bytes; .* at most 150"),
    ("301-attributes", (CANARY_ID, {f"a{i}": i for i in range(301)}), ValueError,
     r"^301 attributes after sanitizing; Customer.io accepts at most 300$"),
    ("nested-too-deep", (CANARY_ID, DEEP), ValueError, r"nested deeper than 32"),
    ("created-at-ms", (CANARY_ID, {"created_at": 1_700_000_000_000}), ValueError,
     r"^created_at looks like milliseconds .* whole Unix seconds"),
    ("created-at-float", (CANARY_ID, {"created_at": 1.7e9}), TypeError,
     r"^created_at must be an int or a datetime, not float$"),
    ("created-at-str", (CANARY_ID, {"created_at": "1700000000"}), TypeError,
     r"^created_at must be an int or a datetime, not str$"),
    ("_timestamp-ms", (CANARY_ID, {"_timestamp": 1_700_000_000_000}), ValueError,
     r"^_timestamp looks like milliseconds"),
]  # fmt: skip

BAD_TRACK: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("id-none", (None, "signed_up"), {}, TypeError, r"^person_id must be a str"),
    ("id-long", (LONG_ID, "signed_up"), {}, ValueError, r"longer than 150 bytes"),
    ("name-none", (CANARY_ID, None), {}, TypeError, r"^event name must be a str, not NoneType$"),
    ("name-empty", (CANARY_ID, " "), {}, ValueError, r"^event name is empty$"),
    ("name-long", (CANARY_ID, CANARY_EVENT * 10), {}, ValueError,
     r"^event name is longer than 100 bytes$"),
    ("data-list", (CANARY_ID, "e", [CANARY_EMAIL]), {}, TypeError,
     r"^event data must be a mapping, not list$"),
    ("data-key-int", (CANARY_ID, "e", {1: 2}), {}, TypeError, r"^event data keys must be str"),
    ("data-nested-object", (CANARY_ID, "e", {"a": {"b": [object()]}}), {}, TypeError,
     r"^event data contains a value that is not JSON-serializable \(object\) at a\.b\[0\]$"),
    ("data-inf", (CANARY_ID, "e", {"x": [math.inf]}), {}, ValueError, r"NaN or Infinity"),
    ("data-over-100000-bytes", (CANARY_ID, "e", {"body": CANARY_EMAIL * 4000}), {}, ValueError,
     r"^event data is larger than 100000 bytes as JSON$"),
    ("ts-bool", (CANARY_ID, "e"), {"timestamp": True}, TypeError, r"not bool$"),
    ("ts-float", (CANARY_ID, "e"), {"timestamp": 1.7e9}, TypeError, r"not float$"),
    ("ts-str", (CANARY_ID, "e"), {"timestamp": "1700000000"}, TypeError, r"not str$"),
    ("ts-negative", (CANARY_ID, "e"), {"timestamp": -1}, ValueError, r"^timestamp is negative$"),
    ("ts-negative-datetime", (CANARY_ID, "e"), {"timestamp": datetime(1969, 1, 1, tzinfo=UTC)},
     ValueError, r"^timestamp is negative$"),
    ("ts-milliseconds", (CANARY_ID, "e"), {"timestamp": 1_700_000_000_000}, ValueError,
     r"^timestamp looks like milliseconds \(or a finer unit\): Customer.io takes whole Unix"),
]  # fmt: skip

BAD_DELETE: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("id-none", (None,), {}, TypeError, r"^person_id must be a str or an int, not NoneType$"),
    ("id-empty", ("",), {}, ValueError, r"^person_id is empty$"),
    ("id-whitespace", (f"{CANARY_ID}\n",), {}, ValueError, r"leading or trailing whitespace"),
    ("id-long", (LONG_ID,), {}, ValueError, r"^person_id is longer than 150 bytes$"),
    ("reason-int", (CANARY_ID,), {"reason": 1}, TypeError, r"^reason must be a str, not int$"),
    ("reason-empty", (CANARY_ID,), {"reason": " "}, ValueError,
     r"^reason must be 1-32 characters$"),
    ("reason-long", (CANARY_ID,), {"reason": "r" * 65}, ValueError, r"^reason must be 1-32"),
]  # fmt: skip


def check_refusal(
    call: Callable[[], object], error: type[Exception], pattern: str, broker: redis.Redis
) -> None:
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, CioguardError)
    message = str(caught.value)
    assert re.search(pattern, message), message
    assert_no_canary(message)
    assert_nothing_enqueued(broker)


@pytest.mark.parametrize(
    ("args", "error", "pattern"), [c[1:] for c in BAD_IDENTIFY], ids=[c[0] for c in BAD_IDENTIFY]
)
def test_bad_identify_raises_and_enqueues_nothing(
    producer: Producer, broker: redis.Redis, args: tuple[Any, ...], error: type[Exception],
    pattern: str,
) -> None:  # fmt: skip
    check_refusal(lambda: producer.identify(*args), error, pattern, broker)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "pattern"),
    [c[1:] for c in BAD_TRACK],
    ids=[c[0] for c in BAD_TRACK],
)
def test_bad_track_raises_and_enqueues_nothing(
    producer: Producer, broker: redis.Redis, args: tuple[Any, ...], kwargs: dict[str, Any],
    error: type[Exception], pattern: str,
) -> None:  # fmt: skip
    check_refusal(lambda: producer.track(*args, **kwargs), error, pattern, broker)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "pattern"),
    [c[1:] for c in BAD_DELETE],
    ids=[c[0] for c in BAD_DELETE],
)
def test_bad_delete_person_raises_enqueues_and_records_nothing(
    producer: Producer, broker: redis.Redis, args: tuple[Any, ...], kwargs: dict[str, Any],
    error: type[Exception], pattern: str,
) -> None:  # fmt: skip
    check_refusal(lambda: producer.delete_person(*args, **kwargs), error, pattern, broker)
    assert_nothing_recorded(producer)


@pytest.mark.parametrize("manner", [123, "", "m" * 33], ids=["int", "empty", "33-chars"])
def test_bad_manner_raises_and_records_nothing(
    producer: Producer, broker: redis.Redis, manner: Any
) -> None:
    with pytest.raises((TypeError, ValueError)):
        producer.delete_person(CANARY_ID, manner=manner)
    assert_nothing_enqueued(broker)
    assert_nothing_recorded(producer)


def test_reason_longer_than_the_column_is_refused_before_recording(
    producer: Producer, broker: redis.Redis
) -> None:
    with pytest.raises(ValueError):
        producer.delete_person(CANARY_ID, reason="r" * 40)
    assert_nothing_recorded(producer)


# -- what is enqueued is ciphertext ----------------------------------------------------------------


def test_identify_enqueues_one_sealed_message(
    producer: Producer, broker: redis.Redis, env: dict[str, str]
) -> None:
    job_id = producer.identify(CANARY_ID, ATTRIBUTES)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", job_id)  # a ULID
    messages = queued(broker)
    assert len(messages) == 1
    token = assert_sealed(messages[0], env, job_id, DELIVER_TASK)
    assert_no_canary(readable(broker))

    payload = producer.envelope.open(token)
    key = env["CIOGUARD_HASH_KEY"].encode()
    assert payload["kind"] == "identify"
    assert payload["job_id"] == job_id
    assert payload["person_id"] == CANARY_ID
    assert payload["person_hash"] == person_hash(key, CANARY_ID)
    assert payload["policy_version"] == default_policy().version
    assert payload["attributes"] == {  # sanitized before sealing: the password never left
        "email": CANARY_EMAIL,
        "phone": value_hash(key, CANARY_PHONE),
        "plan": "canary-plan",
    }


def test_track_enqueues_one_sealed_message(
    producer: Producer, broker: redis.Redis, env: dict[str, str]
) -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    data = {"note": "card 4111 1111 1111 1111", "password": CANARY_PASSWORD, "ref": "canary-ref"}
    job_id = producer.track(CANARY_ID, CANARY_EVENT, data, timestamp=when)
    messages = queued(broker)
    assert len(messages) == 1
    token = assert_sealed(messages[0], env, job_id, DELIVER_TASK)
    assert_no_canary(readable(broker))
    assert b"4111" not in readable(broker)

    payload = producer.envelope.open(token)
    assert payload["kind"] == "track"
    assert payload["name"] == CANARY_EVENT
    assert payload["timestamp"] == 1_704_067_200
    assert payload["data"] == {"note": "card [REDACTED:card]", "ref": "canary-ref"}


def test_track_without_timestamp_is_dated_at_the_call(
    producer: Producer, broker: redis.Redis
) -> None:
    """Never ``"timestamp": null``: Customer.io would date the event when it arrives."""
    before = math.floor(time.time())
    producer.track(CANARY_ID, CANARY_EVENT)
    after = math.floor(time.time())
    payload = producer.envelope.open(body_of(queued(broker)[0])[0][0])
    assert type(payload["timestamp"]) is int
    assert before <= payload["timestamp"] <= after


def test_identify_created_at_datetime_becomes_unix_seconds(
    producer: Producer, broker: redis.Redis
) -> None:
    created = datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    producer.identify(CANARY_ID, {"created_at": created, "plan": "pro"})
    payload = producer.envelope.open(body_of(queued(broker)[0])[0][0])
    assert payload["attributes"]["created_at"] == 1_704_067_200
    assert payload["attributes"]["plan"] == "pro"


def test_delete_person_records_then_enqueues_one_sealed_message(
    producer: Producer, broker: redis.Redis, env: dict[str, str]
) -> None:
    request_id = producer.delete_person(CANARY_ID, reason="gdpr")
    messages = queued(broker)
    assert len(messages) == 1
    status = producer.deletion_status(request_id)
    assert status.state == "received"
    with producer.audit.engine.connect() as conn:
        job_id = conn.scalar(
            select(deletion_requests.c.job_id).where(deletion_requests.c.request_id == request_id)
        )
    token = assert_sealed(messages[0], env, str(job_id), ERASE_TASK)
    assert_no_canary(readable(broker))
    payload = producer.envelope.open(token)
    assert payload["kind"] == "delete"
    assert payload["request_id"] == request_id
    assert payload["person_id"] == CANARY_ID


def test_several_jobs_each_get_their_own_sealed_message(
    producer: Producer, broker: redis.Redis, env: dict[str, str]
) -> None:
    jobs = [producer.identify(f"{CANARY_ID}-{i}", ATTRIBUTES) for i in range(3)]
    jobs.append(producer.track(CANARY_ID, CANARY_EVENT))
    messages = queued(broker)
    assert [m["headers"]["id"] for m in messages] == jobs
    tokens = {assert_sealed(m, env, j, DELIVER_TASK) for m, j in zip(messages, jobs, strict=True)}
    assert len(tokens) == 4
    assert_no_canary(readable(broker))


# -- a broker that is down -------------------------------------------------------------------------


@pytest.fixture
def down_producer(env: dict[str, str]) -> Iterator[Producer]:
    """A producer whose broker URL points at a port where nothing listens."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    producer = Producer(settings_from({**env, "CIOGUARD_BROKER_URL": closed}))
    yield producer
    producer.celery.close()
    if producer._audit is not None:
        producer._audit.dispose()


def assert_broker_error(caught: pytest.ExceptionInfo[BrokerUnavailableError]) -> None:
    assert isinstance(caught.value, CioguardError)
    message = str(caught.value)
    assert "CIOGUARD_BROKER_URL" in message and "not enqueued" in message
    assert_no_canary(message)


def test_identify_and_track_with_the_broker_down_raise_broker_unavailable(
    down_producer: Producer,
) -> None:
    with pytest.raises(BrokerUnavailableError) as caught:
        down_producer.identify(CANARY_ID, ATTRIBUTES)
    assert_broker_error(caught)
    with pytest.raises(BrokerUnavailableError) as caught:
        down_producer.track(CANARY_ID, CANARY_EVENT, {"x": 1})
    assert_broker_error(caught)


def test_delete_person_with_the_broker_down_keeps_the_request_and_a_retry_enqueues_it(
    down_producer: Producer, producer: Producer, broker: redis.Redis, env: dict[str, str]
) -> None:
    with pytest.raises(BrokerUnavailableError) as caught:
        down_producer.delete_person(CANARY_ID)
    assert_broker_error(caught)
    assert_nothing_enqueued(broker)
    assert table_count(producer, deletion_requests) == 1  # recorded first, on purpose
    assert table_count(producer, tombstones) == 1

    request_id = producer.delete_person(CANARY_ID)  # the same audit store, the broker back up
    assert producer.deletion_status(request_id).state == "received"
    assert table_count(producer, deletion_requests) == 1
    messages = queued(broker)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == ERASE_TASK
    assert producer.envelope.open(body_of(messages[0])[0][0])["request_id"] == request_id


# -- deletion_status -------------------------------------------------------------------------------


def test_deletion_status_of_an_unknown_id_raises_lookup_error(producer: Producer) -> None:
    with pytest.raises(LookupError, match=r"^no deletion request with id 01UNKNOWN$"):
        producer.deletion_status("01UNKNOWN")


@pytest.mark.parametrize("request_id", ["", None, 42])
def test_deletion_status_needs_a_non_empty_str(producer: Producer, request_id: Any) -> None:
    with pytest.raises(TypeError, match="request_id must be a non-empty str"):
        producer.deletion_status(request_id)


# -- sanitize() ----------------------------------------------------------------------------------


@pytest.fixture
def app_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The process environment of an application using the module-level API."""
    for name in list(os.environ):
        if name.startswith(("CIOGUARD_", "CUSTOMERIO_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_producer.cache_clear()
    yield env
    if get_producer.cache_info().currsize:
        get_producer().celery.close()
    get_settings.cache_clear()
    get_producer.cache_clear()


SAMPLE = {
    "email": CANARY_EMAIL,
    "firstName": "Jane",
    "phone": CANARY_PHONE,
    "userPassword": CANARY_PASSWORD,
    "city": "SF",
    "preferences": {"newsletter": True, "apiKey": "k"},
}


def test_sanitize_applies_the_default_policy(app_env: dict[str, str], broker: redis.Redis) -> None:
    key = app_env["CIOGUARD_HASH_KEY"].encode()
    assert api.sanitize(SAMPLE) == {
        "email": CANARY_EMAIL,
        "firstName": "Jane",
        "phone": value_hash(key, CANARY_PHONE),
        "city": "SF",
        "preferences": {"newsletter": True},
    }
    assert_nothing_enqueued(broker)


def test_sanitize_applies_the_configured_policy_file(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, broker: redis.Redis
) -> None:
    path = REPO / "examples" / "policy-allowlist.toml"
    monkeypatch.setenv("CIOGUARD_POLICY", str(path))
    assert api.sanitize(SAMPLE) == {
        "email": CANARY_EMAIL,
        "firstName": "Jane",
        "preferences": {"newsletter": True},
    }
    assert get_producer().policy_version == check_policy_file(path).version
    assert_nothing_enqueued(broker)


def test_package_level_sanitize_is_the_api_function(app_env: dict[str, str]) -> None:
    assert cioguard.sanitize is api.sanitize  # type: ignore[comparison-overlap]
    assert cioguard.sanitize({"plan": "pro"}) == {"plan": "pro"}  # type: ignore[operator]


def test_sanitize_validates_its_input(app_env: dict[str, str], broker: redis.Redis) -> None:
    with pytest.raises(TypeError, match=r"^attributes must be a mapping, not list$"):
        api.sanitize([CANARY_EMAIL])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"NaN or Infinity"):
        api.sanitize({"x": math.nan})
    with pytest.raises(ValueError, match=r"^attribute 'bio' is \d+ bytes after sanitizing"):
        api.sanitize({"bio": "x" * 1001})
    assert_nothing_enqueued(broker)
