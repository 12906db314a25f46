"""Print the longest event-loop gap while the async API runs (the README's figures).

``.venv/bin/python -m tests.producer.loop_gap``: a private Redis, then a broker that is down; each
scenario runs four ``atrack`` and one ``aidentify`` beside the 1-ms ticker of ``test_async``
once for a new producer (the first call imports and builds the broker client in the pool
threads), then three times more; and, for comparison, one sync ``track`` on the loop with the
broker down. Reports, asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile

import cioguard
from cioguard.broker.envelope import new_key
from cioguard.config import Settings
from cioguard.producer import api
from cioguard.producer.api import Producer
from cioguard.sandbox.devstack import RedisServer, free_port
from tests.producer.test_async import with_ticker


async def _calls() -> list[object]:
    return await asyncio.gather(
        *(cioguard.atrack(i, "loop_gap") for i in range(4)),
        cioguard.aidentify(9, {"plan": "pro"}),
        return_exceptions=True,
    )


async def _sync_call() -> None:
    with contextlib.suppress(cioguard.BrokerUnavailableError):
        cioguard.track(1, "loop_gap")


def _scenario(label: str, broker_url: str, keys: dict[str, str]) -> None:
    api.use_producer(Producer(Settings(CIOGUARD_BROKER_URL=broker_url, **keys)))  # type: ignore[arg-type]
    _, first = with_ticker(_calls)
    gaps = [with_ticker(_calls)[1] for _ in range(3)]
    shown = ", ".join(f"{g * 1000:.1f}" for g in gaps)
    print(f"{label}: first call {first * 1000:.1f} ms; then {shown} ms")


def main() -> None:
    keys = {
        "CIOGUARD_HASH_KEY": secrets.token_urlsafe(48),
        "CIOGUARD_PAYLOAD_KEY": new_key(),
        "CIOGUARD_AUDIT_URL": f"sqlite:///{tempfile.mkdtemp()}/audit.db",
    }
    with RedisServer() as redis_server:
        _scenario("broker up, async", redis_server.url, keys)
    down = f"redis://127.0.0.1:{free_port()}/0"
    _scenario("broker down, async", down, keys)
    print(f"broker down, sync track on the loop: {with_ticker(_sync_call)[1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
