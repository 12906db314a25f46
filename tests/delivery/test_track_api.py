"""The Track API destination's operations: one serialization per operation, the v1 form built
only when it is sent, and the route each size and id takes (no network: nothing is sent)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cioguard.broker.jobs import Job
from cioguard.delivery.customerio import TrackClient, dumps
from cioguard.delivery.destination import BATCH, OperationTooLargeError
from cioguard.delivery.track_api import V1, V1_EVENT_DATA_MAX_BYTES, TrackApi


@pytest.fixture
def api() -> TrackApi:
    return TrackApi(TrackClient(site_id="s", api_key="k", base_url="https://127.0.0.1:9"))


def _job(kind: str, person_id: str = "user-1", **fields: Any) -> Job:
    return Job(job_id="01JOB", kind=kind, person_id=person_id, person_hash="h",  # type: ignore[arg-type]
               created_at=1_780_000_000.5, **fields)  # fmt: skip


def _clean(job: Job) -> dict[str, Any]:
    return dict((job.attributes if job.kind == "identify" else job.data) or {})


def test_an_identify_is_batched_and_its_v1_body_is_the_exact_attributes(api: TrackApi) -> None:
    attributes = {"plan": "pro", "name": "Zoë"}
    [op] = api.operations(_job("identify", attributes=attributes), _clean, "")
    assert json.loads(op.body) == {
        "type": "person", "identifiers": {"id": "user-1"}, "action": "identify",
        "attributes": attributes,
    }  # fmt: skip
    assert api.route(op, batching=True) == BATCH
    assert api.route(op, batching=False) == V1
    assert op.single.method == "PUT" and op.single.body == dumps(attributes)


@pytest.mark.parametrize("data_bytes", [60_000, V1_EVENT_DATA_MAX_BYTES])
def test_an_event_over_the_v2_limit_goes_by_v1_while_its_data_fits(
    api: TrackApi, data_bytes: int
) -> None:
    data = {"b": "x" * (data_bytes - len(b'{"b":""}'))}
    assert len(dumps(data)) == data_bytes
    [op] = api.operations(_job("track", name="big", data=data), _clean, "")
    assert len(op.body) > max(32_000, data_bytes)  # at the limit the operation is over it
    assert api.route(op, batching=True) == V1
    assert json.loads(op.single.body) == {
        "name": "big", "data": data, "id": "01JOB", "timestamp": 1_780_000_000,
    }  # fmt: skip


def test_event_data_over_the_v1_limit_fits_nothing(api: TrackApi) -> None:
    data = {"b": "x" * (V1_EVENT_DATA_MAX_BYTES - len(b'{"b":""}') + 1)}
    [op] = api.operations(_job("track", name="big", data=data), _clean, "")
    assert op.single is None
    with pytest.raises(OperationTooLargeError):
        api.route(op, batching=True)


def test_an_id_a_v1_path_cannot_carry_travels_as_a_batch_of_one(api: TrackApi) -> None:
    [op] = api.operations(_job("identify", "ann@example.com", attributes={"a": 1}), _clean, "")
    assert op.single is None
    assert api.route(op, batching=False) == BATCH
