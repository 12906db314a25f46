"""The one delivery pipeline, driven directly: real Redis, real audit store, the TLS sandbox.

Each item keeps its own fate (one outcome, never two), operations travel the way that fits,
and partial answers are recorded exactly. Where Customer.io's answer must be one the sandbox
cannot give (a 207 refusing only the delete of a suppress_and_delete), a destination stand-in
answers instead; everything else is the real runtime.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cioguard.broker.jobs import Job, new_job_id
from cioguard.delivery import deadletters, pipeline
from cioguard.delivery.destination import BatchResult, Operation, Route
from cioguard.delivery.runtime import Runtime, build_runtime
from cioguard.delivery.settle import Item
from cioguard.delivery.track_api import TrackApi
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from cioguard.sandbox.client import SandboxServer
from tests.conftest import settings_from


@pytest.fixture
def rt(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for name in ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY"):
        monkeypatch.setenv(name, env[name])
    runtime = build_runtime(settings_from(env))
    runtime.audit.migrate()
    yield runtime
    runtime.audit.dispose()


def _item(rt: Runtime, kind: str, person: str, **fields: Any) -> Item:
    job = Job(
        job_id=new_job_id(), kind=kind, person_id=person,  # type: ignore[arg-type]
        person_hash=rt.person_hash(person), **fields,
    )  # fmt: skip
    return Item(job, rt.envelope.seal(job.to_payload()), 1)


def _erase_item(rt: Runtime, person: str, mode: str) -> Item:
    opened = opening.open_request(
        rt.audit, rt.person_hash(person), reason="erasure", manner="api", mode=mode
    )
    return _item(rt, "delete", person, request_id=opened.request_id)


def test_a_buffer_mixing_good_items_with_every_kind_of_bad_one_settles_each_alone(
    rt: Runtime, cio: SandboxServer
) -> None:
    cio.control.configure(reject_id_prefix="refused-")
    items = {
        "good": _item(rt, "identify", "good-1", attributes={"plan": "pro"}),
        "named_id": _item(rt, "identify", "good-2", attributes={"id": "A-7", "email": "x"}),
        "event": _item(rt, "track", "good-3", name="paid", data={"total": 3}),
        # 60 KB of event data: over the v2 operation limit, within the v1 event limit
        "big_event": _item(rt, "track", "good-4", name="log", data={"text": "é" * 30_000}),
        "refused": _item(rt, "identify", "refused-1", attributes={"plan": "pro"}),
        "too_big": _item(rt, "track", "dot.", name="log", data={"text": "x" * 120_000}),
        "unknown_kind": _item(rt, "merge", "good-5"),
        "dotted": _item(rt, "identify", "..", attributes={"plan": "dots"}),
    }
    results = pipeline.run(rt, list(items.values()), batching=True)
    by_job = {r.item.job.job_id: r for r in results}
    assert len(results) == len(items) == len(by_job)  # one result per item, none twice
    outcome = {name: by_job[i.job.job_id].outcome for name, i in items.items()}
    assert outcome == {
        "good": "delivered", "named_id": "delivered", "event": "delivered",
        "big_event": "delivered", "refused": "dead_lettered", "too_big": "dead_lettered",
        "unknown_kind": "dead_lettered", "dotted": "delivered",
    }  # fmt: skip
    assert cio.control.person("good-2") == {"id": "A-7", "email": "x"}
    assert cio.control.person("..") == {"plan": "dots"}
    assert [e["name"] for e in cio.control.events("good-4")] == ["log"]
    assert cio.control.stats()["spec_violations"] == 0
    finals = [rt.audit.final_row(i.job.job_id) for i in items.values()]
    assert all(f is not None for f in finals)
    letters = {d.job_id for d in deadletters.list_all(rt.audit)}
    assert letters == {items[n].job.job_id for n in ("refused", "too_big", "unknown_kind")}


@pytest.mark.parametrize("batching", [False, True])
def test_every_request_body_is_the_bytes_that_were_sized_and_within_the_limits(
    rt: Runtime, cio: SandboxServer, batching: bool
) -> None:
    """Unicode-heavy profiles near the limits: compact UTF-8 on the wire, never ``\\u`` escapes."""
    people = [
        _item(rt, "identify", f"uni-{n}", attributes={f"k{a}": "漢字😀" * 60 for a in range(40)})
        for n in range(40)
    ]
    results = pipeline.run(rt, people, batching=batching)
    assert {r.outcome for r in results} == {"delivered"}
    requests = cio.control.requests()
    assert requests and cio.control.stats()["spec_violations"] == 0
    for request in requests:
        body = request["body"].encode()
        assert b"\\u" not in body
        assert len(body) <= (500_000 if batching else 100_000)
        if batching:
            assert all(len(json.dumps(op, ensure_ascii=False, separators=(",", ":")).encode())
                       <= 32_000 for op in json.loads(body)["batch"])  # fmt: skip


class _Refusing(TrackApi):
    """Answers a batch with 207 refusing the operations whose action is in ``refuse``."""

    def __init__(self, base: TrackApi, refuse: set[str]) -> None:
        super().__init__(base.client)
        self.refuse, self.sent = refuse, list[str]()

    def post_batch(self, body: bytes) -> BatchResult:
        ops = json.loads(body)["batch"]
        self.sent += [op["action"] for op in ops]
        failed = {i: "not_allowed" for i, op in enumerate(ops) if op["action"] in self.refuse}
        return BatchResult(status=207 if failed else 200, failed=failed)

    def post_single(self, job: Job, op: Operation, route: Route) -> int:
        raise AssertionError("everything fits a batch here")


def _with(rt: Runtime, destination: _Refusing) -> Runtime:
    return dataclasses.replace(rt, destination=destination)


def test_suppress_and_delete_with_only_the_delete_refused_completes_with_the_refusal_recorded(
    rt: Runtime, cio: SandboxServer
) -> None:
    refusing = _Refusing(rt.destination, {"delete"})  # type: ignore[arg-type]
    item = _erase_item(rt, "partly", "suppress_and_delete")
    [result] = pipeline.run(_with(rt, refusing), [item], batching=True)
    assert result.outcome == "completed" and refusing.sent == ["suppress", "delete"]
    status = deletions.get_status(rt.audit, item.job.request_id or "")
    assert status is not None and status.state == "completed"
    final = rt.audit.final_row(item.job.job_id)
    assert final is not None and final["detail"] == "suppressed; delete refused (not_allowed)"
    assert deadletters.list_all(rt.audit) == []


def test_a_refused_suppress_fails_the_request_and_keeps_the_job(
    rt: Runtime, cio: SandboxServer
) -> None:
    refusing = _Refusing(rt.destination, {"suppress"})  # type: ignore[arg-type]
    item = _erase_item(rt, "refused-erase", "suppress_and_delete")
    [result] = pipeline.run(_with(rt, refusing), [item], batching=True)
    assert result.outcome == "dead_lettered"
    status = deletions.get_status(rt.audit, item.job.request_id or "")
    assert status is not None and status.state == "failed"
    assert [d.job_id for d in deadletters.list_all(rt.audit)] == [item.job.job_id]


def test_a_job_sanitized_under_another_policy_is_sanitized_again_by_the_worker(
    rt: Runtime, cio: SandboxServer
) -> None:
    """An application still on an older policy: the worker's rules apply before sending."""
    stale = _item(
        rt, "identify", "old-policy", policy_version="older@000000000000",
        attributes={"plan": "pro", "password": "hunter2-canary"},
    )  # fmt: skip
    [result] = pipeline.run(rt, [stale], batching=True)
    assert result.outcome == "delivered"
    sent = cio.control.person("old-policy") or {}
    assert sent.get("plan") == "pro" and "hunter2-canary" not in json.dumps(sent)
