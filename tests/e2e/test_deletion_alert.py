"""A failed deletion raises an alert-worthy Sentry event, without the person's id.

Real worker processes with ``SENTRY_DSN`` pointing at a local HTTP collector that plays Sentry's
envelope endpoint; the TLS sandbox refuses the erasure (400) or keeps failing it (503) until the
retries run out.
"""

from __future__ import annotations

import gzip
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import WorkerProcess
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e
PERSON = "poison-erasure-7"


class Collector(BaseHTTPRequestHandler):
    """Sentry's ``/api/<project>/envelope/``: keeps every body, decompressed, as text."""

    received: list[str]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        self.received.append(body.decode("utf-8", "replace"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sentry() -> Iterator[tuple[str, list[str]]]:
    received: list[str] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://publickey@127.0.0.1:{server.server_address[1]}/1", received
    server.shutdown()
    server.server_close()


def dead_letter_events(received: list[str]) -> list[str]:
    return [body for body in received if "delete job dead-lettered" in body]


@pytest.mark.parametrize(
    ("faults", "overrides", "error_class"),
    [
        ({"reject_id_prefix": "poison-"}, {}, "PermanentError|OperationRejectedError"),
        ({"fail_5xx_ratio": 1.0}, {"CIOGUARD_MAX_ATTEMPTS": "1"}, "RetryableError"),
    ],
    ids=["refused", "retries-exhausted"],
)
def test_a_failed_deletion_raises_a_sentry_event_without_the_person_id(
    producer: Producer,
    start_worker: Callable[..., WorkerProcess],
    cio: SandboxServer,
    sentry: tuple[str, list[str]],
    faults: dict[str, object],
    overrides: dict[str, str],
    error_class: str,
) -> None:
    dsn, received = sentry
    cio.control.configure(**faults)
    start_worker(concurrency=1, SENTRY_DSN=dsn, CIOGUARD_ENVIRONMENT="e2e", **overrides)

    producer.delete_person(PERSON)
    wait_until(
        lambda: bool(dead_letter_events(received)), timeout_s=90, what="the dead-letter alert"
    )

    [event] = dead_letter_events(received)
    assert re.search(rf"delete job dead-lettered \(({error_class})\)", event)  # v1 | v2 batch
    assert '"level":"error"' in event.replace(" ", "")
    assert '"cioguard.kind":"delete"' in event.replace(" ", "")
    assert '"environment":"e2e"' in event.replace(" ", "")
    assert all(PERSON not in body for body in received)
