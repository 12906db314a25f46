"""The Pipelines API destination against the TLS sandbox: the mapping, the answers mapped to
outcomes, strict mode on every request, no person id in any error, and batches at each limit's
edge sized as the sandbox receives them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from cioguard.broker.jobs import Job
from cioguard.delivery.destination import BATCH, OperationTooLargeError
from cioguard.delivery.pipeline import Planned, _chunked
from cioguard.delivery.pipelines_api import (
    BATCH_MAX_BYTES,
    CALL_MAX_BYTES,
    SINGLE,
    PipelinesApi,
    iso8601,
)
from cioguard.delivery.pipelines_client import PipelinesClient
from cioguard.delivery.settle import Item
from cioguard.errors import CredentialsError, PermanentError, RetryableError
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.pipelines import DEFAULT_PIPELINES_API_KEY, PipelinesControl
from cioguard.sandbox.state import FaultConfig
from tests.delivery.test_customerio import CANARIES, EMAIL, PERSON, SECRET_DATA, assert_no_pii


@pytest.fixture
def pipelines(sandbox: SandboxServer) -> Iterator[PipelinesControl]:
    control = PipelinesControl(sandbox.url, sandbox.ssl_context())
    sandbox.control.configure(**FaultConfig().as_dict())
    control.set_keys([DEFAULT_PIPELINES_API_KEY])
    control.reset()
    yield control
    sandbox.control.configure(**FaultConfig().as_dict())
    control.set_keys([DEFAULT_PIPELINES_API_KEY])
    control.close()


@pytest.fixture
def api(sandbox: SandboxServer, pipelines: PipelinesControl) -> Iterator[PipelinesApi]:
    client = PipelinesClient(
        api_key=DEFAULT_PIPELINES_API_KEY, base_url=sandbox.url, ca_bundle=str(sandbox.ca_path),
        timeout_s=5.0,
    )  # fmt: skip
    yield PipelinesApi(client)
    client.close()


def job(kind: str, **fields: Any) -> Job:
    return Job(job_id=f"01JOB{kind.upper()}", kind=kind, person_id=PERSON, person_hash="h",  # type: ignore[arg-type]
               created_at=1_780_000_000.25, **fields)  # fmt: skip


def clean(j: Job) -> dict[str, Any]:
    return dict(j.attributes or j.data or {})


IDENTIFY = job("identify", attributes={"email": EMAIL, "note": SECRET_DATA})
TRACK = job("track", name="paid", data={"secret": SECRET_DATA}, timestamp=1_700_000_000)


def test_the_mapping_of_each_job_kind(api: PipelinesApi) -> None:
    [ident] = api.operations(IDENTIFY, clean, "")
    assert json.loads(ident.body) == {
        "type": "identify", "userId": PERSON, "traits": {"email": EMAIL, "note": SECRET_DATA},
        "messageId": IDENTIFY.job_id, "timestamp": "2026-05-28T20:26:40.250Z",
    }  # fmt: skip
    [event] = api.operations(TRACK, clean, "")
    assert json.loads(event.body) == {
        "type": "track", "userId": PERSON, "event": "paid", "properties": {"secret": SECRET_DATA},
        "messageId": TRACK.event_id, "timestamp": "2023-11-14T22:13:20.000Z",
    }  # fmt: skip
    erase = job("delete", request_id="r1")
    names = {mode: [json.loads(op.body)["event"] for op in api.operations(erase, clean, mode)]
             for mode in ("suppress", "delete", "suppress_and_delete")}  # fmt: skip
    assert names == {"suppress": ["User Suppressed"], "delete": ["User Deleted"],
                     "suppress_and_delete": ["User Suppressed", "User Deleted"]}  # fmt: skip
    ids = [
        json.loads(op.body)["messageId"]
        for op in api.operations(erase, clean, "suppress_and_delete")
    ]
    assert len(set(ids)) == 2  # the second call is not a duplicate of the first


def test_iso8601_is_utc_with_milliseconds() -> None:
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert datetime.fromisoformat(iso8601(1_780_000_000.25)).timestamp() == 1_780_000_000.25


def test_routes_and_the_call_limit(api: PipelinesApi) -> None:
    [op] = api.operations(IDENTIFY, clean, "")
    assert api.route(op, batching=True) == BATCH and api.route(op, batching=False) == SINGLE
    big = padded_identify(api, CALL_MAX_BYTES)
    assert len(big.body) == CALL_MAX_BYTES and api.route(big, batching=True) == BATCH
    with pytest.raises(OperationTooLargeError) as info:
        api.route(padded_identify(api, CALL_MAX_BYTES + 1), batching=True)
    assert_no_pii(info.value)


def test_every_call_reaches_the_sandbox_in_strict_mode(
    api: PipelinesApi, sandbox: SandboxServer, pipelines: PipelinesControl
) -> None:
    for j in (IDENTIFY, TRACK):
        [op] = api.operations(j, clean, "")
        assert api.post_single(j, op, SINGLE) == 200
    erase = job("delete", request_id="r1")
    ops = api.operations(erase, clean, "suppress_and_delete")
    assert api.post_batch(api.batch_body([op.body for op in ops])).status == 200
    assert api.client.check() == 200
    counters = pipelines.stats()
    assert counters["strict_requests"] == 4 and counters["lenient_requests"] == 0
    assert counters["spec_violations"] == 0
    assert sandbox.control.stats()["suppressed"] == 1
    assert sandbox.control.event_ids() == {TRACK.event_id}


def call(api: PipelinesApi, j: Job = IDENTIFY) -> Callable[[], int]:
    [op] = api.operations(j, clean, "")
    return lambda: api.post_single(j, op, SINGLE)


def test_400_is_permanent(api: PipelinesApi, sandbox: SandboxServer) -> None:
    sandbox.control.configure(reject_id_prefix="pii-canary")
    with pytest.raises(PermanentError) as info:
        call(api)()
    assert info.value.status == 400 and not isinstance(info.value, CredentialsError)
    assert_no_pii(info.value)


def test_401_is_a_credentials_error_and_a_rotated_key_works(
    api: PipelinesApi, pipelines: PipelinesControl
) -> None:
    pipelines.set_keys(["rotated-key"])
    for attempt in (call(api), api.client.check):
        with pytest.raises(CredentialsError) as info:
            attempt()
        assert info.value.status == 401
        assert_no_pii(info.value)
    api.client.use_credentials("", "rotated-key")
    assert call(api)() == 200


@pytest.mark.parametrize(("fault", "status"), [("fail_5xx_ratio", None), ("fail_429_ratio", 429)])
def test_5xx_and_429_are_retryable(
    api: PipelinesApi, sandbox: SandboxServer, fault: str, status: int | None
) -> None:
    sandbox.control.configure(**{fault: 1.0, "retry_after_s": 7})
    with pytest.raises(RetryableError) as info:
        call(api, TRACK)()
    assert (info.value.status or 0) >= 500 if status is None else info.value.status == 429
    if status == 429:
        assert info.value.retry_after_s == 7
    assert_no_pii(info.value)


def test_a_slow_answer_is_a_retryable_timeout(api: PipelinesApi, sandbox: SandboxServer) -> None:
    sandbox.control.configure(latency_ms=1500)
    api.client.timeout_s = 0.3
    with pytest.raises(RetryableError) as info:
        call(api)()
    assert "in time" in str(info.value)
    assert_no_pii(info.value)


# -- limits at their edges, as received ---------------------------------------------------------


def padded_identify(api: PipelinesApi, size: int, index: int = 0) -> Any:
    """An identify operation whose body is exactly ``size`` bytes (two-byte characters)."""

    def build(pad: str) -> Any:
        j = job("identify", attributes={"pad": pad})
        j = Job(**{**j.__dict__, "job_id": f"01PAD{index:06d}", "person_id": f"edge-{index:04d}"})
        [op] = api.operations(j, clean, "")
        return op

    fill = size - len(build("").body)
    op = build("é" * (fill // 2) + "x" * (fill % 2))
    assert len(op.body) == size
    return op


@pytest.mark.parametrize("extra", [0, 1], ids=["at-500000", "one-byte-over"])
def test_chunks_fill_a_batch_to_the_byte_and_never_over(
    api: PipelinesApi, pipelines: PipelinesControl, sandbox: SandboxServer, extra: int
) -> None:
    # 16 calls: envelope 12 + 15 commas + 16 bodies = 500,000 exactly (+1 byte: a second batch)
    sizes = [31_248] * 15 + [31_253 + extra]
    assert 12 + 15 + sum(sizes) == BATCH_MAX_BYTES + extra
    planned = [Planned(Item(IDENTIFY, "", 1), [padded_identify(api, s, i)], [BATCH])
               for i, s in enumerate(sizes)]  # fmt: skip
    chunks = list(_chunked(SimpleNamespace(destination=api), planned))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == ([16] if extra == 0 else [15, 1])
    for chunk in chunks:
        assert (
            api.post_batch(api.batch_body([op.body for p in chunk for op in p.ops])).status == 200
        )
    received = pipelines.received()
    assert received[0]["bytes"] == (BATCH_MAX_BYTES if extra == 0 else BATCH_MAX_BYTES - 31_254)
    assert [b for r in received for b in r["call_bytes"]] == sizes
    assert pipelines.stats()["spec_violations"] == 0
    assert sandbox.control.stats()["people"] == 16
    for text in (str(r) for r in received):
        assert not any(c in text for c in CANARIES)


def test_a_batch_of_one_call_at_32000_bytes_is_received_at_that_size(
    api: PipelinesApi, pipelines: PipelinesControl
) -> None:
    op = padded_identify(api, CALL_MAX_BYTES)
    assert api.post_batch(api.batch_body([op.body])).status == 200
    [received] = pipelines.received()
    assert received["call_bytes"] == [CALL_MAX_BYTES] and received["bytes"] == CALL_MAX_BYTES + 12
    assert pipelines.stats()["spec_violations"] == 0


def test_a_single_request_at_32000_bytes_is_accepted(
    api: PipelinesApi, pipelines: PipelinesControl, sandbox: SandboxServer
) -> None:
    op = padded_identify(api, CALL_MAX_BYTES)
    assert api.client.send("pipelines identify", "identify", op.body).status_code == 200
    assert pipelines.received()[0]["bytes"] == CALL_MAX_BYTES
    assert sandbox.control.person("edge-0000") is not None
