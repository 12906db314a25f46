"""cioguard.testing: the application's test mode records calls without a broker.

No Redis runs for these tests: the recorder's broker URL is an unresolvable placeholder, so a call
that tried to publish would fail. The pytest plugin is checked through its entry point, in a
separate pytest process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cioguard
from cioguard.testing import Recorder, recording

EMAIL = "ada.testing@example.com"


def test_recording_keeps_what_would_have_been_queued_sanitized() -> None:
    with recording() as cio:
        job = cioguard.identify(42, {"email": EMAIL, "password": "hunter2", "plan": "pro"})
        cioguard.track("42", "signed_up", {"plan": "pro"}, timestamp=1_700_000_000)
    identify, track = cio.calls
    assert (identify.kind, identify.job_id) == ("identify", job)
    assert identify.person_hash == cio.person_hash(42) == cio.person_hash("42")
    assert identify.attributes is not None and "password" not in identify.attributes
    assert identify.attributes["email"] == EMAIL
    assert (track.kind, track.name, track.data, track.timestamp) == (
        "track", "signed_up", {"plan": "pro"}, 1_700_000_000,
    )  # fmt: skip
    assert cio.calls_for(42, "track") == [track]


def test_the_raw_person_id_is_not_recorded_only_its_keyed_hash() -> None:
    with recording() as cio:
        cioguard.identify("canary-person-7f3a", {"plan": "pro"})
    assert "canary-person-7f3a" not in repr(cio.calls)
    assert cio.calls_for("canary-person-7f3a") == cio.calls


def test_bad_calls_raise_as_in_production_and_record_nothing() -> None:
    with recording() as cio:
        with pytest.raises(TypeError, match=r"^person_id must be a str or an int"):
            cioguard.identify(None, {})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^event name is empty$"):
            cioguard.track(1, " ")
    assert cio.calls == []


def test_deletions_are_recorded_and_their_status_answers() -> None:
    with recording() as cio:
        request_id = cioguard.delete_person(7)
        status = cioguard.deletion_status(request_id)
    [call] = cio.calls
    assert (call.kind, call.request_id, call.person_hash) == (
        "delete",
        request_id,
        cio.person_hash(7),
    )
    assert status.state == "received"
    assert cio.erased == {cio.person_hash(7)}


def test_async_calls_are_recorded() -> None:
    async def calls() -> None:
        await cioguard.aidentify(5, {"plan": "pro"})
        await cioguard.atrack(5, "upgraded")

    with recording() as cio:
        asyncio.run(calls())
    assert [c.kind for c in cio.calls] == ["identify", "track"]


def test_the_previous_producer_is_back_after_the_block() -> None:
    from cioguard.producer import api

    before = list(api._installed)
    with recording() as outer:
        with recording() as inner:
            cioguard.track(1, "inner")
        cioguard.track(1, "outer")
    assert api._installed == before
    assert [c.name for c in inner.calls] == ["inner"]
    assert [c.name for c in outer.calls] == ["outer"]


def test_the_fixture_records(cioguard_recorder: Recorder) -> None:
    cioguard.track(3, "fixture_used")
    assert [c.name for c in cioguard_recorder.calls] == ["fixture_used"]


def test_the_pytest_plugin_is_registered_by_its_entry_point(tmp_path: Path) -> None:
    test_file = tmp_path / "test_app.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import cioguard

            def test_sign_up(cioguard_recorder):
                cioguard.identify(1, {"plan": "pro"})
                assert [c.kind for c in cioguard_recorder.calls] == ["identify"]
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
