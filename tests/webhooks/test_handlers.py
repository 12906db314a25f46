"""The webhook task's steps, driven directly against the private Redis and a SQLite audit store.

The runtime here is a small stand-in holding real parts (AuditStore, Tombstones on the private
Redis, Envelope, Settings). The Celery task is registered on a real (non-current) cioguard app
whose broker is the private Redis; :func:`run_task` plays the worker: it runs the task under a
worker-like request, and when the task retries it takes the retry message Celery really published
to the Redis queue and runs it next. So retry and dead-letter decisions are exercised with
Celery's own retry path, without eager mode (the e2e test covers the real worker process).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sentry_sdk
from celery import Task
from celery.exceptions import Retry
from sentry_sdk.envelope import Envelope as SentryEnvelope
from sentry_sdk.transport import Transport

from cioguard.audit.store import AuditEntry, AuditStore
from cioguard.broker.celeryconf import QUEUE, WEBHOOK_TASK, build_celery
from cioguard.broker.envelope import Envelope, new_key
from cioguard.broker.jobs import SEALED_REPR
from cioguard.config import Settings
from cioguard.delivery import deadletters
from cioguard.erasure import opening
from cioguard.erasure.tombstones import Tombstones
from cioguard.errors import ConfigurationError
from cioguard.ops.logs import JsonFormatter
from cioguard.ops.sentry import init_sentry
from cioguard.privacy.hashing import person_hash
from cioguard.webhooks import handlers as webhook_tasks
from cioguard.webhooks import verify as webhooks
from cioguard.webhooks.handlers import (
    AUDITED_METRICS,
    ERASED_DETAIL,
    handle,
    load_handlers,
    outcome_of,
    person_ids,
)
from cioguard.webhooks.intake import seal_event, webhook_job_id
from tests.helpers import final_rows

MARKER = "jane.doe+marker@example.com"
FIXTURE_MODULE = "tests.webhook_handler_fixture"


@dataclass
class WebhookRuntimeStub:
    """Real parts, only those the webhook steps use (see ``webhook_tasks.WebhookRuntime``)."""

    settings: Settings
    envelope: Envelope
    audit: AuditStore
    tombstones: Tombstones

    def person_hash(self, person_id: str) -> str:
        return person_hash(self.settings.hash_key_bytes(), person_id)


def make_event(metric: str = "unsubscribed", **identifiers: Any) -> dict[str, Any]:
    ids = identifiers or {"id": "42", "email": MARKER, "cio_id": "a3000001"}
    return {
        "event_id": f"01H{uuid.uuid4().hex}",
        "object_type": "email",
        "metric": metric,
        "timestamp": int(time.time()),
        "data": {"identifiers": ids, "recipient": MARKER},
    }


@pytest.fixture
def rt(tmp_path: Path, redis_url: str) -> Iterator[WebhookRuntimeStub]:
    settings = Settings(
        CIOGUARD_HASH_KEY=secrets.token_urlsafe(48),
        CIOGUARD_PAYLOAD_KEY=new_key(),
        CIOGUARD_MAX_ATTEMPTS=3,
    )
    store = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    store.migrate()
    client = redis.Redis.from_url(redis_url)
    yield WebhookRuntimeStub(
        settings=settings,
        envelope=Envelope(settings.payload_keys()),
        audit=store,
        tombstones=Tombstones(client, store),
    )
    client.close()
    store.dispose()


@pytest.fixture(autouse=True)
def no_handlers() -> Iterator[None]:
    webhooks.clear_handlers()
    yield
    webhooks.clear_handlers()


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    """Events received by a handler registered for every metric."""
    received: list[dict[str, Any]] = []
    webhooks.on_webhook("*")(received.append)
    return received


def erase(rt: WebhookRuntimeStub, person_id: str) -> None:
    opening.open_request(
        rt.audit, rt.person_hash(person_id), reason="erasure", manner="api", mode="suppress"
    )


# --- the steps --------------------------------------------------------------------------------


def test_unsubscribe_runs_the_handlers_and_records_one_final_row(
    rt: WebhookRuntimeStub, seen: list[dict[str, Any]]
) -> None:
    event = make_event("unsubscribed")
    assert handle(rt, event, job_id="job-1", attempt=1) == "unsubscribed"
    assert seen == [event]
    [row] = final_rows(rt.audit)
    assert row["kind"] == "webhook"
    assert row["outcome"] == "unsubscribed"
    assert row["final_job_id"] == "job-1"
    assert row["person_hash"] == rt.person_hash("42")
    assert row["detail"] == "metric: unsubscribed"
    assert MARKER not in repr(row)


@pytest.mark.parametrize("metric", [*sorted(AUDITED_METRICS), "opened", "delivered"])
def test_outcome_is_the_metric_for_audited_metrics_and_handled_otherwise(
    rt: WebhookRuntimeStub, metric: str
) -> None:
    outcome = handle(rt, make_event(metric), job_id=f"job-{metric}", attempt=1)
    assert outcome == (metric if metric in AUDITED_METRICS else "handled")
    [row] = final_rows(rt.audit)
    assert row["outcome"] == outcome
    assert row["detail"] == f"metric: {metric}"


def test_an_untrusted_metric_is_not_copied_into_the_audit_row() -> None:
    assert outcome_of("x" * 500) == ("handled", "metric: other")
    assert outcome_of(MARKER) == ("handled", "metric: other")


def test_a_rerun_of_a_finished_job_is_a_duplicate_and_calls_no_handler(
    rt: WebhookRuntimeStub, seen: list[dict[str, Any]]
) -> None:
    event = make_event()
    handle(rt, event, job_id="job-1", attempt=1)
    assert handle(rt, event, job_id="job-1", attempt=2) == "duplicate"
    assert len(seen) == 1
    assert len(final_rows(rt.audit)) == 1


def test_a_concurrent_run_that_finishes_first_does_not_double_record(
    rt: WebhookRuntimeStub,
) -> None:
    event = make_event()

    def finishes_the_other_copy(_: dict[str, Any]) -> None:
        other = AuditEntry(kind="webhook", outcome="unsubscribed", job_id="job-1", final=True)
        assert rt.audit.record(other)

    webhooks.on_webhook("unsubscribed")(finishes_the_other_copy)
    assert handle(rt, event, job_id="job-1", attempt=1) == "duplicate"
    assert len(final_rows(rt.audit)) == 1


def test_events_for_an_erased_person_are_dropped_without_calling_handlers(
    rt: WebhookRuntimeStub, seen: list[dict[str, Any]]
) -> None:
    erase(rt, "42")
    assert handle(rt, make_event(), job_id="job-1", attempt=1) == "dropped"
    assert seen == []
    [row] = final_rows(rt.audit)
    assert (row["outcome"], row["detail"]) == ("dropped", ERASED_DETAIL)
    assert row["person_hash"] == rt.person_hash("42")


@pytest.mark.parametrize(
    ("erased_as", "identifiers"),
    [
        (MARKER, {"email": MARKER}),
        (MARKER, {"id": "other-id", "email": MARKER}),
        ("cio_a3000001", {"cio_id": "a3000001"}),
    ],
    ids=["email-only", "any-identifier", "cio-id"],
)
def test_an_event_is_dropped_when_any_identifier_is_erased(
    rt: WebhookRuntimeStub, seen: list[dict[str, Any]], erased_as: str, identifiers: dict[str, str]
) -> None:
    erase(rt, erased_as)
    assert handle(rt, make_event(**identifiers), job_id="job-1", attempt=1) == "dropped"
    assert seen == []


def test_an_event_without_identifiers_is_handled_without_a_person(
    rt: WebhookRuntimeStub, seen: list[dict[str, Any]]
) -> None:
    event = make_event("spammed")
    event["data"] = {}
    assert handle(rt, event, job_id="job-1", attempt=1) == "spammed"
    [row] = final_rows(rt.audit)
    assert row["person_hash"] is None
    assert seen == [event]


def test_a_failing_handler_raises_without_recording_or_quoting_the_event(
    rt: WebhookRuntimeStub,
) -> None:
    def refuses(event: dict[str, Any]) -> None:
        raise ValueError(f"no such user {event['data']['recipient']}")

    webhooks.on_webhook("unsubscribed")(refuses)
    with pytest.raises(webhooks.WebhookHandlerError) as caught:
        handle(rt, make_event(), job_id="job-1", attempt=1)
    assert MARKER not in str(caught.value)
    assert caught.value.__cause__ is None
    assert final_rows(rt.audit) == []


def test_person_ids_in_order_of_specificity() -> None:
    event = make_event(cio_id="a3", email="e@example.com", id=42)
    assert person_ids(event) == ["42", "e@example.com", "cio_a3"]
    assert person_ids(make_event(id=True, email="  ", cio_id="cio_b7")) == ["cio_b7"]
    assert person_ids({"metric": "sent", "data": "not a dict"}) == []
    assert person_ids({"metric": "sent"}) == []


# --- handler modules --------------------------------------------------------------------------


@pytest.fixture
def fresh_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_tasks, "_imported", set())
    monkeypatch.delitem(sys.modules, FIXTURE_MODULE, raising=False)


@pytest.mark.usefixtures("fresh_imports")
def test_load_handlers_imports_the_modules_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("CIOGUARD_TEST_WEBHOOK_LOG", str(calls))
    assert load_handlers(f" {FIXTURE_MODULE} ,") == (FIXTURE_MODULE,)
    event = make_event()
    assert webhooks.dispatch(event) == 1
    assert calls.read_text().splitlines() == [f"{event['event_id']} unsubscribed"]
    webhooks.clear_handlers()
    load_handlers(FIXTURE_MODULE)  # already imported: not imported (nor registered) again
    assert webhooks.dispatch(event) == 0


@pytest.mark.usefixtures("fresh_imports")
@pytest.mark.parametrize(
    ("spec", "reason"),
    [("no_such_module_cioguard_test", "ModuleNotFoundError"), ("../etc", "invalid")],
)
def test_load_handlers_names_the_variable_on_failure(spec: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_handlers(spec)
    assert "CIOGUARD_WEBHOOK_HANDLERS" in str(caught.value)
    assert reason in str(caught.value)


# --- the Celery task: retry and dead-letter decisions -------------------------------------------


@pytest.fixture
def task_rt(rt: WebhookRuntimeStub, monkeypatch: pytest.MonkeyPatch) -> WebhookRuntimeStub:
    monkeypatch.setattr(webhook_tasks, "get_runtime", lambda: rt)
    monkeypatch.setattr(webhook_tasks, "countdown", lambda *a, **k: 0.0)
    return rt


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Everything the cioguard loggers write, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cioguard")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture
def webhook_task(redis_url: str) -> Iterator[Task]:
    """``cioguard.webhook`` registered on a real cioguard app publishing to the private Redis."""
    app = build_celery(Settings(CIOGUARD_BROKER_URL=redis_url), "test-webhook-worker")
    yield webhook_tasks.register(app)
    app.close()


def run_sealed(task: Task, redis_url: str, sealed: str, job_id: str) -> Any:
    """Run the task as a worker would, following each retry it publishes to the broker."""
    client = redis.Redis.from_url(redis_url)
    args, retries = [sealed], 0
    try:
        for _ in range(20):
            task.push_request(
                id=job_id, retries=retries, called_directly=False, is_eager=False,
                delivery_info={"exchange": "", "routing_key": QUEUE}, args=args, kwargs={},
            )  # fmt: skip
            try:
                return task(*args)
            except Retry:
                raw = client.rpop(QUEUE)
                assert raw is not None, "the retry was not published to the broker"
                message = json.loads(raw)
                headers = message["headers"]
                assert (headers["id"], headers["task"]) == (job_id, WEBHOOK_TASK)
                assert headers["argsrepr"] == SEALED_REPR
                assert headers["retries"] == retries + 1
                args = json.loads(base64.b64decode(message["body"]))[0]
                retries = headers["retries"]
            finally:
                task.pop_request()
        raise AssertionError("the task kept retrying")
    finally:
        client.close()


@pytest.fixture
def run_task(
    webhook_task: Task, redis_url: str
) -> Callable[[WebhookRuntimeStub, dict[str, Any]], tuple[str, Any]]:
    def run(rt: WebhookRuntimeStub, event: dict[str, Any]) -> tuple[str, Any]:
        job_id = webhook_job_id(event["event_id"])
        return job_id, run_sealed(webhook_task, redis_url, seal_event(rt.envelope, event), job_id)

    return run


RunTask = Callable[[WebhookRuntimeStub, dict[str, Any]], tuple[str, Any]]


def test_register_attaches_the_task_to_the_given_app_only(redis_url: str) -> None:
    from celery import Celery

    host = Celery("host-app", broker="memory://", set_as_current=False)
    ours = build_celery(Settings(CIOGUARD_BROKER_URL=redis_url), "test-register")
    webhook_tasks.register(ours)
    assert WEBHOOK_TASK in ours.tasks
    assert WEBHOOK_TASK not in host.tasks
    ours.close()


def test_the_task_handles_a_sealed_event(
    task_rt: WebhookRuntimeStub, seen: list[dict[str, Any]], run_task: RunTask
) -> None:
    event = make_event("bounced")
    job_id, outcome = run_task(task_rt, event)
    assert outcome == "bounced"
    assert seen == [event]
    assert task_rt.audit.final_row(job_id) is not None


def test_a_handler_failing_once_is_retried(task_rt: WebhookRuntimeStub, run_task: RunTask) -> None:
    calls: list[str] = []

    def flaky(event: dict[str, Any]) -> None:
        calls.append(event["event_id"])
        if len(calls) == 1:
            raise ConnectionError("the application database blinked")

    webhooks.on_webhook("unsubscribed")(flaky)
    job_id, outcome = run_task(task_rt, make_event())
    assert outcome == "unsubscribed"
    assert len(calls) == 2
    row = task_rt.audit.final_row(job_id)
    assert row is not None and row["attempts"] == 2


def test_a_handler_that_keeps_failing_is_dead_lettered_without_leaking(
    task_rt: WebhookRuntimeStub, log_text: io.StringIO, run_task: RunTask
) -> None:
    calls: list[str] = []

    def refuses(event: dict[str, Any]) -> None:
        calls.append(event["event_id"])
        raise ValueError(f"no such user {event['data']['recipient']}")

    webhooks.on_webhook("unsubscribed")(refuses)
    job_id, outcome = run_task(task_rt, make_event())
    assert outcome == "dead_lettered"
    assert len(calls) == task_rt.settings.max_attempts
    [letter] = deadletters.list_all(task_rt.audit)
    assert (letter.job_id, letter.kind) == (job_id, "webhook")
    assert letter.error_class == "WebhookHandlerError"
    assert letter.person_hash == task_rt.person_hash("42")
    assert MARKER not in letter.sealed
    [row] = final_rows(task_rt.audit)
    assert (row["outcome"], row["kind"]) == ("dead_lettered", "webhook")
    assert "webhook job retrying" in log_text.getvalue()
    assert MARKER not in log_text.getvalue()


def test_an_unreadable_payload_is_dead_lettered(
    task_rt: WebhookRuntimeStub, webhook_task: Task, redis_url: str
) -> None:
    sealed = Envelope([new_key().encode()]).seal({"v": 1, "kind": "webhook"})
    assert run_sealed(webhook_task, redis_url, sealed, "webhook-unreadable") == "dead_lettered"
    [letter] = deadletters.list_all(task_rt.audit)
    assert (letter.kind, letter.person_hash, letter.error_class) == (
        "webhook",
        "unknown",
        "EnvelopeError",
    )


def test_handlers_that_cannot_be_imported_retry_then_dead_letter(
    task_rt: WebhookRuntimeStub, monkeypatch: pytest.MonkeyPatch, run_task: RunTask
) -> None:
    settings = task_rt.settings.model_copy(update={"webhook_handlers": "no_such_module_cioguard"})
    monkeypatch.setattr(task_rt, "settings", settings)
    _, outcome = run_task(task_rt, make_event())
    assert outcome == "dead_lettered"
    [letter] = deadletters.list_all(task_rt.audit)
    assert letter.error_class == "ConfigurationError"


class CapturingTransport(Transport):
    """Keeps Sentry envelopes instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[SentryEnvelope] = []

    def capture_envelope(self, envelope: SentryEnvelope) -> None:
        self.envelopes.append(envelope)

    def text(self) -> str:
        sentry_sdk.flush()
        return "\n".join(
            item.get_bytes().decode("utf-8", errors="replace")
            for envelope in self.envelopes
            for item in envelope.items
        )


def test_a_dead_letter_alert_reaches_sentry_without_the_event(
    task_rt: WebhookRuntimeStub, run_task: RunTask
) -> None:
    email = f"canary.{secrets.token_hex(6)}@example.test"  # not a literal: Sentry sends source
    capture = CapturingTransport()
    assert init_sentry(Settings(CIOGUARD_ENVIRONMENT="unit-test"), role="unit", transport=capture)
    try:

        def refuses(event: dict[str, Any]) -> None:
            raise ValueError(f"no such user {event['data']['recipient']}")

        webhooks.on_webhook("unsubscribed")(refuses)
        event = make_event()
        event["data"] = {"identifiers": {"email": email}, "recipient": email}
        assert run_task(task_rt, event)[1] == "dead_lettered"
        text = capture.text()
    finally:  # unbind the client: no breadcrumbs pile up for later tests' events
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().clear_breadcrumbs()
    assert "webhook job dead-lettered (WebhookHandlerError)" in text
    assert email not in text
