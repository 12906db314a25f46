"""Erasure requests as records: open, reuse, transitions, extensions, overdue, listing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from cioguard.audit.chain import verify
from cioguard.audit.schema import audit_log, deletion_requests, tombstones
from cioguard.audit.store import AuditStore
from cioguard.broker.jobs import Job
from cioguard.delivery import pipeline as delivery
from cioguard.delivery.customerio import TrackClient
from cioguard.delivery.track_api import TrackApi
from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from cioguard.errors import AuditUnavailableError, InvalidInputError

ALICE, BOB = "a" * 64, "b" * 64


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    return s


def _open(
    store: AuditStore, person_hash: str = ALICE, reason: str = "erasure"
) -> opening.OpenedRequest:
    return opening.open_request(store, person_hash, reason=reason, manner="api", mode="suppress")


def _status(store: AuditStore, request_id: str) -> deletions.DeletionStatus:
    status = deletions.get_status(store, request_id)
    assert status is not None
    return status


def _rows(store: AuditStore, request_id: str) -> list[dict[str, Any]]:
    return [r for r in store.rows() if r["request_id"] == request_id]


def test_opening_records_the_request_the_tombstone_and_a_chained_row(store: AuditStore) -> None:
    opened = _open(store)
    assert opened.created and opened.state == "received"
    st = _status(store, opened.request_id)
    assert (st.state, st.regime, st.manner, st.mode, st.attempts) == (
        "received", "gdpr", "api", "suppress", 0,
    )  # fmt: skip
    assert st.received_at.month % 12 + 1 == st.due_at.month  # one month later
    with store.reading() as conn:
        assert conn.execute(select(tombstones.c.request_id)).scalar() == opened.request_id
    (row,) = _rows(store, opened.request_id)
    assert (row["kind"], row["outcome"], row["person_hash"]) == ("deletion_request", "received",
                                                                ALICE)  # fmt: skip
    assert verify(store).ok


def test_a_ccpa_reason_gets_45_days(store: AuditStore) -> None:
    st = _status(store, _open(store, reason="ccpa_delete").request_id)
    assert st.regime == "ccpa" and st.due_at - st.received_at == timedelta(days=45)


def test_an_open_or_completed_request_is_reused(store: AuditStore) -> None:
    first = _open(store)
    again = _open(store)
    assert (again.request_id, again.job_id, again.created) == (first.request_id, first.job_id,
                                                               False)  # fmt: skip
    deletions.transition(store, first.request_id, "completed", job_id=first.job_id, final=True)
    after = _open(store)
    assert after.request_id == first.request_id and after.state == "completed"


def test_a_failed_request_is_not_reused(store: AuditStore) -> None:
    first = _open(store)
    deletions.transition(store, first.request_id, "failed", job_id=first.job_id,
                    error_class="PermanentError")  # fmt: skip
    second = _open(store)
    assert second.created and second.request_id != first.request_id
    with store.reading() as conn:  # the tombstone stays the first one
        assert conn.execute(select(tombstones.c.request_id)).scalar() == first.request_id


def test_open_requests_in_bulk_keeps_order_and_folds_repeats(store: AuditStore) -> None:
    earlier = _open(store, BOB)
    opened = opening.open_requests(
        store, [ALICE, BOB, ALICE, "c" * 64], reason="erasure", manner="bulk", mode="delete"
    )
    assert [o.created for o in opened] == [True, False, False, True]
    assert opened[0].request_id == opened[2].request_id
    assert opened[1].request_id == earlier.request_id
    assert len({o.request_id for o in opened}) == 3
    assert verify(store).ok and store.head()["seq"] == 3


def test_transitions_are_logged_and_only_one_is_final(store: AuditStore) -> None:
    opened = _open(store)
    rid, job = opened.request_id, opened.job_id
    assert deletions.transition(store, rid, "in_progress", job_id=job, attempts=1)
    assert deletions.transition(store, rid, "completed", job_id=job, attempts=1, http_status=200,
                           final=True)  # fmt: skip
    assert not deletions.transition(store, rid, "completed", job_id=job, attempts=2, final=True)
    st = _status(store, rid)
    assert st.state == "completed" and st.completed_at is not None and st.attempts == 1
    assert [r["outcome"] for r in _rows(store, rid)] == ["received", "in_progress", "completed"]


def test_unknown_request_has_no_status(store: AuditStore) -> None:
    assert deletions.get_status(store, "nope") is None


def test_reads_raise_audit_unavailable_when_the_store_is_gone(tmp_path: Path) -> None:
    gone = AuditStore.from_url(f"sqlite:///{tmp_path / 'no-such-dir' / 'audit.db'}")
    with pytest.raises(AuditUnavailableError):
        deletions.get_status(gone, "x")
    with pytest.raises(AuditUnavailableError):
        deletions.tombstoned(gone, [ALICE])


# -- extensions ------------------------------------------------------------------------------


def test_a_gdpr_request_can_be_extended_up_to_two_more_months(store: AuditStore) -> None:
    rid = _open(store).request_id
    due = _status(store, rid).due_at
    st = deletions.extend(store, rid, days=30, reason="complex request")
    assert st.extended_to == due + timedelta(days=30) and st.effective_due_at == st.extended_to
    st = deletions.extend(store, rid, days=25, reason="still waiting on a vendor")
    assert st.extended_to == due + timedelta(days=55)
    with pytest.raises(InvalidInputError, match="at most"):
        deletions.extend(store, rid, days=10, reason="more")
    extended = [r for r in _rows(store, rid) if r["outcome"] == "extended"]
    assert len(extended) == 2 and "complex request" in extended[0]["detail"]
    assert verify(store).ok


def test_a_ccpa_request_can_be_extended_once_by_45_days_at_most(store: AuditStore) -> None:
    rid = _open(store, reason="ccpa").request_id
    with pytest.raises(InvalidInputError, match="CCPA"):
        deletions.extend(store, rid, days=46, reason="too long")
    deletions.extend(store, rid, days=10, reason="notice sent")
    with pytest.raises(InvalidInputError, match="only once"):
        deletions.extend(store, rid, days=10, reason="again")


@pytest.mark.parametrize(
    ("days", "reason", "match"),
    [(0, "why", "days"), (3, "  ", "reason"), (3, "x" * 200, "longer")],
)
def test_bad_extension_arguments_are_refused(
    store: AuditStore, days: int, reason: str, match: str
) -> None:
    rid = _open(store).request_id
    with pytest.raises(InvalidInputError, match=match):
        deletions.extend(store, rid, days=days, reason=reason)


def test_completed_and_unknown_requests_cannot_be_extended(store: AuditStore) -> None:
    opened = _open(store)
    deletions.transition(store, opened.request_id, "completed", job_id=opened.job_id, final=True)
    with pytest.raises(InvalidInputError, match="completed"):
        deletions.extend(store, opened.request_id, days=3, reason="late")
    with pytest.raises(LookupError):
        deletions.extend(store, "missing", days=3, reason="late")


# -- overdue and listing ---------------------------------------------------------------------


def _age(store: AuditStore, request_id: str, days: int) -> None:
    """Pretend the request was received ``days`` ago (due dates move with it)."""
    st = _status(store, request_id)
    shift = timedelta(days=days)
    with store.transaction() as conn:
        conn.execute(
            update(deletion_requests)
            .where(deletion_requests.c.request_id == request_id)
            .values(received_at=st.received_at - shift, due_at=st.due_at - shift)
        )


def test_overdue_lists_late_and_nearly_due_open_requests(store: AuditStore) -> None:
    late, soon, fresh, done = (_open(store, h).request_id for h in "1234")
    _age(store, late, 40)
    _age(store, soon, 29)
    _age(store, done, 40)
    deletions.transition(store, done, "completed", final=True, job_id="j")
    assert [s.request_id for s in deletions.overdue(store)] == [late, soon]
    assert [s.request_id for s in deletions.overdue(store, within=timedelta(0))] == [late]
    assert fresh not in {s.request_id for s in deletions.overdue(store)}


def test_an_extension_takes_a_request_off_the_overdue_list(store: AuditStore) -> None:
    rid = _open(store).request_id
    _age(store, rid, 29)
    assert deletions.overdue(store)
    deletions.extend(store, rid, days=30, reason="complex")
    assert deletions.overdue(store) == []


def test_list_requests_filters_by_state_and_states_polls_many(store: AuditStore) -> None:
    a, b = _open(store, ALICE), _open(store, BOB)
    deletions.transition(store, a.request_id, "completed", job_id=a.job_id, final=True)
    assert [s.request_id for s in deletions.list_requests(store)] == [
        b.request_id,
        a.request_id,
    ]
    assert [s.request_id for s in deletions.list_requests(store, state="completed")] == [
        a.request_id
    ]
    assert len(deletions.list_requests(store, limit=1)) == 1
    with pytest.raises(InvalidInputError):
        deletions.list_requests(store, state="done")
    assert deletions.states(store, [a.request_id, b.request_id, "x"]) == {
        a.request_id: "completed", b.request_id: "received",
    }  # fmt: skip


# -- the worker's erase step against a 404 ---------------------------------------------------


class _Answer(requests.adapters.BaseAdapter):
    """Answers every request with one status, and counts them."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status, self.calls = status, 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        response = requests.Response()
        response.status_code, response.request, response.url = self.status, request, request.url
        response._content = b"{}"
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["suppress", "delete", "suppress_and_delete"])
def test_a_404_from_customerio_counts_as_done(store: AuditStore, mode: str) -> None:
    client = TrackClient(site_id="s", api_key="k", base_url="https://cio.invalid:8443")
    answer = _Answer(404)
    client._cio.http.mount("https://", answer)
    added: list[str] = []
    rt = SimpleNamespace(
        audit=store, client=client, destination=TrackApi(client), policy_version="p1",
        tombstones=SimpleNamespace(
            add=added.append,
            gates=lambda ids, hashes: ({i for i in ids if store.has_final(i)}, set()),
        ),
        limiter=SimpleNamespace(acquire=lambda: 0.0, pause_fleet=lambda s: None),
    )  # fmt: skip
    opened = opening.open_request(store, ALICE, reason="erasure", manner="api", mode=mode)
    job = Job(job_id=opened.job_id, kind="delete", person_id="gone-person", person_hash=ALICE,
              request_id=opened.request_id)  # fmt: skip
    assert delivery.erase(rt, job, "sealed", attempt=1) == "completed"  # type: ignore[arg-type]
    assert delivery.erase(rt, job, "sealed", attempt=2) == "duplicate"  # type: ignore[arg-type]
    st = _status(store, opened.request_id)
    assert st.state == "completed" and added == [ALICE]
    assert answer.calls == (2 if mode == "suppress_and_delete" else 1)
    final = store.final_row(opened.job_id)
    assert final is not None and final["http_status"] == 404
    with store.reading() as conn:
        assert (
            conn.execute(select(audit_log.c.seq).where(audit_log.c.outcome == "failed")).all() == []
        )


def test_state_only_moves_forward_a_completed_request_never_reads_in_progress_again(
    store: AuditStore,
) -> None:
    """Copy B of an erase job read ``received``, copy A completed it, then B writes its step."""
    opened = _open(store)
    rid, job = opened.request_id, opened.job_id
    assert deletions.transition(store, rid, "in_progress", job_id=job, attempts=1)
    assert deletions.transition(store, rid, "completed", job_id=job, attempts=1, final=True)
    assert not deletions.transition(store, rid, "in_progress", job_id=job, attempts=2)
    assert not deletions.transition(store, rid, "failed", job_id=job, attempts=2)
    assert _status(store, rid).state == "completed"
    outcomes = [r["outcome"] for r in _rows(store, rid)]
    assert outcomes == ["received", "in_progress", "completed"]


def test_a_failed_request_may_be_received_again_but_received_cannot_skip_back(
    store: AuditStore,
) -> None:
    opened = _open(store)
    rid, job = opened.request_id, opened.job_id
    assert not deletions.transition(store, rid, "received", job_id=job)  # already received
    assert deletions.transition(store, rid, "failed", job_id=job, attempts=1)
    assert deletions.transition(store, rid, "received", job_id="replayed-job")
    assert _status(store, rid).state == "received"
