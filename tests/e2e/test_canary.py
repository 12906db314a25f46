"""The canary suite: unique values of every kind go in; every surface is searched for them.

Real parts only: the private Redis, a real worker process (prefork, 2 children) with Sentry
posting to a local ingest endpoint over HTTP, Flower with basic auth against the same broker,
the TLS Customer.io stand-in injecting 5xx and 429 (so some jobs wait in countdown retries) and
rejecting one person (a dead letter), and one job a buggy producer sealed with a malformed body
(an exception captured by Sentry, with the job's canaries in the frame's locals).

It runs twice per API (the ``api`` fixture: Track, then Pipelines): one message per job, and
``CIOGUARD_BATCH=1`` (celery-batches, the default in production), whose retries, events and
inspect answers differ.

The canaries sit under keys taken from real systems and languages (HubSpot's ``secondaryPhone``,
a German shop's ``kreditkartenNummer``...), checked not to be keys of the default policy's own
rules (issue 16): the policy must generalize to them, not recognise its own list.

Dropped values (card, SSN, password, phone, nested card, SSN in free text) must appear nowhere,
not even in what reached Customer.io. Delivered values (the e-mail, a kept attribute, the person
id) must appear only in what reached Customer.io. Then a second phase plants canaries on purpose
in each surface type and checks the search finds them, so this test can fail.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cioguard.broker.celeryconf import DELIVER_TASK, build_celery
from cioguard.broker.jobs import Job, new_job_id
from cioguard.privacy.hashing import person_hash
from cioguard.privacy.policy import default_policy, key_forms
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import final_count, final_rows, wait_until
from tests.leaks import (
    Canary,
    FlowerProcess,
    SentryCapture,
    Surfaces,
    dump_flower,
    dump_inspect,
    dump_logs,
    dump_redis,
    dump_sandbox_requests,
    dump_sql,
    enable_events,
    find_hits,
    inspect_has_scheduled,
    make_canaries,
    plain_canary,
)

pytestmark = pytest.mark.e2e

REJECT_PREFIX = "canary-reject-"
DROPPED = ("card", "nested_card", "ssn", "note_ssn", "password", "phone")
DELIVERED = ("email", "plan", "person")
SETS = 6
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ETA = re.compile(r'"eta": "\d{4}-')


# Key -> canary. None of these keys is a key of a default-policy rule, even glued.
INDEPENDENT_KEYS = {
    "email": "email",  # delivered: Customer.io identifies people by it
    "plan": "plan",
    "password": "accountPassphrase",  # caught by the "passphrase" stem inside a longer key
    "card": "kreditkartenNummer",  # German shop field; caught by the "kreditkarte" stem
    "ssn": "employeeSSN",  # HR systems; caught by the "ssn" token
    "phone": "secondaryPhone",  # HubSpot/Salesforce style; caught by the "phone" token
}


def canary_attributes(c: dict[str, Canary]) -> dict[str, object]:
    """Identify attributes carrying each canary under a key the policy does not list."""
    attributes: dict[str, object] = {key: c[name].value for name, key in INDEPENDENT_KEYS.items()}
    attributes["zahlungsdaten"] = {
        "hinterlegteKreditkarte": c["nested_card"].value,
        "stufe": "gold",
    }
    attributes["kommentar"] = f"bitte morgen anrufen wegen {c['note_ssn'].value}"
    return attributes


def test_canary_keys_are_not_the_policy_s_own_keys() -> None:
    rule_keys = {k for rule in default_policy().rules for k in rule.keys}
    glued = {key_forms(k).glued for k in rule_keys}
    for key in [*INDEPENDENT_KEYS.values(), "hinterlegteKreditkarte"]:
        if key in ("email", "plan"):
            continue
        forms = key_forms(key)
        assert forms.normalized not in rule_keys and forms.glued not in glued, key
        found = default_policy().match(key)
        assert found is not None and found.rule.action in ("drop", "hash"), key


@pytest.fixture
def sentry() -> Iterator[SentryCapture]:
    with SentryCapture() as capture:
        yield capture


@pytest.fixture
def faulty_cio(cio: SandboxServer) -> Iterator[SandboxServer]:
    """The stand-in with failures on; faults survive ``reset()``, so they are undone here."""
    cio.control.configure(fail_5xx_ratio=0.75, fail_429_ratio=0.1, retry_after_s=1,
                          reject_id_prefix=REJECT_PREFIX)  # fmt: skip
    yield cio
    cio.control.configure(fail_5xx_ratio=0.0, fail_429_ratio=0.0, reject_id_prefix=None)


def _enqueue(producer: Producer, sets: list[dict[str, Canary]]) -> int:
    for c in sets[:-2]:
        attributes = canary_attributes(c)
        producer.identify(c["person"].value, attributes)
        producer.track(c["person"].value, "checkout", attributes)
    rejected = sets[-2]
    producer.identify(rejected["person"].value, canary_attributes(rejected))
    _enqueue_malformed(producer, sets[-1])
    return 2 * (len(sets) - 2) + 2


def _enqueue_malformed(producer: Producer, c: dict[str, Canary]) -> None:
    """A job as a buggy producer would seal it: attributes a list, not a mapping."""
    person = c["person"].value
    job = Job(
        job_id=new_job_id(), kind="identify", person_id=person,
        person_hash=person_hash(producer.hash_key, person), policy_version="buggy",
        attributes=list(canary_attributes(c).values()),  # type: ignore[arg-type]
    )  # fmt: skip
    producer.send_sealed(producer.envelope.seal(job.to_payload()), job.job_id, DELIVER_TASK)


def _run_and_observe(
    producer: Producer, cio: SandboxServer, worker: WorkerProcess, flower: FlowerProcess,
    expected: int, *, batched: bool,
) -> Surfaces:  # fmt: skip
    """Wait for every job, snapshotting inspect/Redis/Flower while retries are scheduled."""
    control = build_celery(producer.settings, "canary-control")
    client = redis.Redis.from_url(producer.settings.broker_url)
    inflight: Surfaces = {}

    def step() -> bool:
        if not inflight:
            snapshot = dump_inspect(control, [worker.name])
            held = dump_redis(client)
            if _countdown_held(held) if batched else inspect_has_scheduled(snapshot):
                inflight.update({f"inflight-{k}": v for k, v in snapshot.items()})
                inflight.update({f"inflight-{k}": v for k, v in held.items()})
                with flower.client() as http:
                    params = {"refresh": 1, "workername": worker.name}
                    answer = http.get("/api/workers", params=params)
                    inflight["inflight-flower:/api/workers?refresh=1&workername"] = answer.text
                cio.control.configure(fail_5xx_ratio=0.0, fail_429_ratio=0.0)
        return final_count(producer.audit) >= expected

    try:
        wait_until(step, timeout_s=180, what=f"{expected} final rows")
    finally:
        client.close()
        control.close()
    assert inflight, "no countdown retry was ever scheduled: the run proved nothing"
    assert _countdown_held({k.removeprefix("inflight-"): v for k, v in inflight.items()})
    if not batched:  # celery-batches holds countdown messages itself: inspect does not see them
        assert "gAAAAA" in inflight["inflight-inspect:scheduled"]  # real args: ciphertext
    return inflight


def _countdown_held(redis_surfaces: Surfaces) -> bool:
    """A retried message with a countdown is held (unacknowledged) by the worker."""
    return bool(_ETA.search(redis_surfaces.get("redis:hash:unacked", "")))


def _all_surfaces(
    producer: Producer, worker: WorkerProcess, flower: FlowerProcess, sentry: SentryCapture,
    logs: list[Path],
) -> Surfaces:  # fmt: skip
    control = build_celery(producer.settings, "canary-dump")
    client = redis.Redis.from_url(producer.settings.broker_url)
    try:
        surfaces = dump_redis(client)
        surfaces.update(dump_inspect(control, [worker.name]))
    finally:
        client.close()
        control.close()
    surfaces.update(dump_flower(flower, [worker.name]))
    surfaces.update(sentry.dump())
    surfaces.update(dump_logs(logs))
    surfaces.update(dump_sql(producer.settings.audit_url))
    return surfaces


def _wait_for_sentry(sentry: SentryCapture, *, batched: bool) -> list[dict[str, object]]:
    """Two dead-letter alerts; unbatched, also the exception event of the malformed job.

    Batched, a job that cannot be built is dead-lettered on its own without an exception log
    (delivery_batch.py), so no exception event is expected there.
    """

    def ready() -> bool:
        events = sentry.events()
        dead = [e for e in events if "dead-lettered" in json.dumps(e)]
        errors = [e for e in events if e.get("exception")]
        return len(dead) >= 2 and (batched or len(errors) >= 1)

    wait_until(ready, timeout_s=60, what="Sentry events from the worker")
    return sentry.events()


@pytest.mark.parametrize("batch", ["0", "1"], ids=["unbatched", "batched"])
def test_no_canary_reaches_any_surface(
    batch: str,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    faulty_cio: SandboxServer,
    sentry: SentryCapture,
    env: dict[str, str],
    tmp_path: Path,
    api: str,
) -> None:
    batched = batch == "1"
    worker = start_worker(concurrency=2, SENTRY_DSN=sentry.dsn, CIOGUARD_ENVIRONMENT="canary",
                          CIOGUARD_BATCH=batch)  # fmt: skip
    flower_log = tmp_path / "flower.log"
    flower = FlowerProcess(env["CIOGUARD_BROKER_URL"], user="ops",
                           password=secrets.token_urlsafe(16), log_path=flower_log)  # fmt: skip
    with flower:
        enable_events(producer.settings, worker.name)
        if batched:  # a few batch requests only: make sure one of them is retried
            faulty_cio.control.configure(fail_5xx_ratio=1.0)
        sets = [make_canaries(f"-{i}") for i in range(SETS)]
        sets[-2] = make_canaries("-rejected", person_prefix=REJECT_PREFIX)
        expected = _enqueue(producer, sets)
        inflight = _run_and_observe(producer, faulty_cio, worker, flower, expected, batched=batched)
        events = _wait_for_sentry(sentry, batched=batched)
        logs = [*sorted(tmp_path.glob("worker-*.log")), flower_log]
        surfaces = {**inflight, **_all_surfaces(producer, worker, flower, sentry, logs)}
        requests = dump_sandbox_requests(faulty_cio.control.requests())

        _assert_ran_for_real(producer, surfaces, requests, events, batched=batched)
        canaries = [c for s in sets for c in s.values()]
        assert find_hits(surfaces, canaries) == []
        dropped = [s[name] for s in sets for name in DROPPED]
        assert find_hits(requests, dropped) == []
        for c in sets[:-2]:  # what must be delivered did reach Customer.io, and only there
            assert {h.canary for h in find_hits(requests, [c[n] for n in DELIVERED])} == set(
                DELIVERED
            )
        _assert_phone_hashed(faulty_cio, sets[0])

        _self_check(producer, worker, flower, sentry, logs, batched=batched)


def _assert_ran_for_real(
    producer: Producer, surfaces: Surfaces, requests: Surfaces, events: list[dict[str, object]],
    *, batched: bool,
) -> None:  # fmt: skip
    """The run had retries, dead letters, Flower tasks (unbatched), no result backend.

    Batched, Flower lists no tasks at all: celery-batches sends no per-message task events.
    """
    log_text = "\n".join(v for k, v in surfaces.items() if k.startswith("log:worker"))
    assert '"msg": "job retrying"' in log_text
    assert "results:     disabled://" in log_text
    assert not any("celery-task-meta" in k for k in surfaces)
    assert producer.celery.conf.result_backend is None
    outcomes = {r["outcome"] for r in final_rows(producer.audit)}
    assert outcomes == {"delivered", "dead_lettered"}
    statuses = {int(k.rsplit(" ", 1)[1]) for k in requests}
    assert statuses & {400, 207} and statuses & {500, 502, 503}  # a rejection, server errors
    tasks = json.loads(surfaces["flower:/api/tasks"].split("\n", 1)[0])
    assert {t["state"] for t in tasks.values()} >= ({"SUCCESS"} if not batched else set())
    assert all(t["args"] in ("('<sealed>',)", None) for t in tasks.values())
    assert {e.get("environment") for e in events} == {"canary"}
    assert all(str(e.get("release", "")).startswith("cioguard@") for e in events)


def _assert_phone_hashed(cio: SandboxServer, c: dict[str, Canary]) -> None:
    person = cio.control.person(c["person"].value)
    assert person is not None
    assert person["email"] == c["email"].value and person["plan"] == c["plan"].value
    assert _HEX64.match(str(person[INDEPENDENT_KEYS["phone"]]))
    assert "[REDACTED:ssn]" in str(person["kommentar"])
    dropped = {INDEPENDENT_KEYS[n] for n in ("password", "card", "ssn")}
    assert dropped.isdisjoint(person)
    assert person["zahlungsdaten"] == {"stufe": "gold"}


def _self_check(
    producer: Producer, worker: WorkerProcess, flower: FlowerProcess, sentry: SentryCapture,
    logs: list[Path], *, batched: bool,
) -> None:  # fmt: skip
    """Plant canaries on purpose; each surface type must report them, or the search is blind."""
    plant = plain_canary("plant")
    client = redis.Redis.from_url(producer.settings.broker_url)
    app = build_celery(producer.settings, "canary-plant")
    try:
        client.set(f"leakcheck:string:{plant.value}", "x")
        client.rpush("leakcheck:list", plant.value)
        client.hset("leakcheck:hash", "field", plant.value)
        client.sadd("leakcheck:set", plant.value)
        client.zadd("leakcheck:zset", {plant.value: 1})
        # Kombu base64-encodes bodies: only a decoding dump finds args in a queued message.
        app.send_task(DELIVER_TASK, args=[plant.value], queue="leakcheck-unconsumed")
        # Readable args, no argsrepr: Flower, the dead-letter row, Sentry and the log must show it.
        app.send_task(DELIVER_TASK, args=[plant.value], task_id=plant.value)
        # A countdown task sits in the worker: `inspect scheduled` shows its real args.
        app.send_task(DELIVER_TASK, args=[plant.value], countdown=600)
        wait_until(lambda: bool(find_hits(sentry.dump(), [plant])), timeout_s=60,
                   what="the planted job's Sentry event")  # fmt: skip
        surfaces = _all_surfaces(producer, worker, flower, sentry, logs)
    finally:
        client.close()
        app.close()
    found = {hit.surface for hit in find_hits(surfaces, [plant])}
    expected = {
        *(f"redis:{kind}:leakcheck:{kind}" for kind in ("list", "hash", "set", "zset")),
        f"redis:string:leakcheck:string:{plant.value}", "redis:list:leakcheck-unconsumed",
        "redis:hash:unacked", "sql:dead_letters", "log:worker-0.log",
    }  # fmt: skip
    if not batched:  # celery-batches: no task events, and it holds countdown messages itself
        expected |= {
            "inspect:scheduled", "flower:/api/tasks", f"flower:/worker/{worker.name}",
            f"flower:/api/workers?refresh=1&workername={worker.name}",
            f"flower:/api/task/info/{plant.value}",
        }  # fmt: skip
    assert expected <= found, f"the search is blind to: {sorted(expected - found)}"
    assert any(s.startswith("sentry:") for s in found), "the search is blind to Sentry"
