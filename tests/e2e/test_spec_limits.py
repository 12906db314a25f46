"""Inputs that are valid for cioguard's API reach Customer.io as its published spec defines them.

Unicode-heavy values near the 1,000-byte limit, 300 attributes, attributes named like the spec's
reserved fields (``id`` included), ids near the 150-byte limit, events near 100,000 bytes of
data and an event without a timestamp, through a real worker in both delivery modes. The
validating sandbox (``cio`` fixture) fails the test on any spec violation it counted, on the
bytes it received.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import final_rows, wait_for_finals

pytestmark = pytest.mark.e2e

CJK = "漢字かな交じり文"  # 3 bytes per character in UTF-8, 6 as a \u escape
EMOJI = "😀"  # 4 bytes in UTF-8, 12 as two \u escapes
RESERVED = {"id": "A-7", "email": "a@example.com", "created_at": 1_700_000_000, "cio_id": "c9"}


def _profiles() -> dict[str, dict[str, object]]:
    return {
        "cjk-values": {f"k{i}": CJK * 40 for i in range(30)},  # 960 bytes each
        "emoji-values": {f"e{i}": EMOJI * 250 for i in range(10)},  # 1,000 bytes each
        "reserved-names": dict(RESERVED),
        "many-attrs": {f"a{i}": "v" * 100 for i in range(300)},  # over 32 KB: v1 in batches
        "created-dt": {"created_at": datetime(2024, 1, 1, tzinfo=UTC)},
    }


@pytest.mark.parametrize("batch", ["0", "1"])
def test_limit_sized_and_unicode_heavy_inputs_arrive_within_the_published_spec(
    batch: str,
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
) -> None:
    people: dict[str, str] = {}
    jobs: list[str] = []
    for n, (label, attributes) in enumerate(_profiles().items()):
        person = f"p{n}-" + "i" * (146 - len(f"p{n}-"))  # ids near the 150-byte limit
        people[label] = person
        jobs.append(producer.identify(person, attributes))
    jobs.append(producer.track("ev-cjk", "big", {"t": CJK * 4000}))  # 96,000 bytes of data
    jobs.append(producer.track("ev-plain", "big", {"t": "x" * 99_000}))
    jobs.append(producer.track("ev-no-ts", "plain", {"n": 1}))
    jobs.append(producer.identify("é" * 75, {"a": 1}))  # 150 bytes
    start_worker(CIOGUARD_BATCH=batch)
    wait_for_finals(producer.audit, len(jobs), timeout_s=120)

    assert {r["outcome"] for r in final_rows(producer.audit)} == {"delivered"}
    assert cio.control.person(people["reserved-names"]) == RESERVED
    assert len(cio.control.person(people["many-attrs"]) or {}) == 300
    assert (cio.control.person(people["created-dt"]) or {})["created_at"] == 1_704_067_200
    [plain] = cio.control.events("ev-no-ts")
    assert isinstance(plain.get("timestamp"), int)
    assert cio.control.stats()["spec_violations"] == 0
