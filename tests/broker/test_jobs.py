"""The job value: what travels sealed, and the redacted forms that travel in the clear."""

from __future__ import annotations

import json

import pytest
from ulid import ULID

from cioguard.broker.jobs import PAYLOAD_VERSION, SEALED_REPR, Job, new_job_id


def _job(**fields: object) -> Job:
    defaults: dict[str, object] = {
        "job_id": new_job_id(), "kind": "identify", "person_id": "person-42",
        "person_hash": "ab" * 32, "attributes": {"email": "p42@example.test"},
    }  # fmt: skip
    return Job(**{**defaults, **fields})  # type: ignore[arg-type]


def test_payload_round_trip_through_json() -> None:
    job = _job(kind="track", name="checkout", data={"total": 3}, timestamp=1_700_000_000)
    payload = json.loads(json.dumps(job.to_payload()))
    assert payload["v"] == PAYLOAD_VERSION
    assert Job.from_payload(payload) == job


def test_unknown_payload_version_is_refused() -> None:
    payload = {**_job().to_payload(), "v": PAYLOAD_VERSION + 1}
    with pytest.raises(ValueError, match="version"):
        Job.from_payload(payload)
    with pytest.raises(ValueError, match="version"):
        Job.from_payload({k: v for k, v in _job().to_payload().items() if k != "v"})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(TypeError):
        Job.from_payload({**_job().to_payload(), "extra": 1})


def test_job_ids_are_ulids_and_the_event_id() -> None:
    job_id = new_job_id()
    assert str(ULID.from_str(job_id)) == job_id and new_job_id() != job_id
    job = _job(job_id=job_id)
    assert job.event_id == job_id


def test_what_shows_in_the_clear_names_no_one() -> None:
    job = _job()
    for shown in (job.redacted(), SEALED_REPR):
        assert shown and "person-42" not in shown and "example.test" not in shown
    assert job.redacted() == f"<identify job {job.job_id}>"
    assert SEALED_REPR == "('<sealed>',)"  # non-empty: an empty argsrepr shows the real args


def test_jobs_are_frozen() -> None:
    job = _job()
    with pytest.raises(AttributeError):
        job.person_id = "someone else"  # type: ignore[misc]


def test_fields_left_at_none_are_not_sealed_and_come_back() -> None:
    job = _job()
    payload = job.to_payload()
    assert None not in payload.values()
    assert {"name", "data", "request_id", "erasure"}.isdisjoint(payload)
    assert Job.from_payload(json.loads(json.dumps(payload))) == job


def test_a_payload_with_every_field_spelt_out_still_opens() -> None:
    job = _job()
    spelt_out = {"v": PAYLOAD_VERSION, **{k: getattr(job, k) for k in job.__dataclass_fields__}}
    assert spelt_out["name"] is None  # the form sealed before None fields were left out
    assert Job.from_payload(spelt_out) == job
