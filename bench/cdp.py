"""Customer.io's own Python client (``customerio-cdp-analytics``) as a reference point.

The client queues calls in memory and a thread POSTs them (``/v1/batch``, up to 100 per request)
to the CDP API; here, to a local HTTP receiver on 127.0.0.1 that counts the events and answers
200. Timed end to end in one process: from the first ``identify`` to ``join()`` returning (every
call sent), with that process's CPU time per 1,000 people. It is faster than any queue-backed
worker because nothing leaves its memory before the POST: no broker, no encryption, no audit; a
crash or restart loses whatever it holds, and a refused batch is dropped after its retries.

Why a separate virtual environment (made on first use, under the temporary directory): the
package installs an empty ``customerio/__init__.py`` over the ``customerio`` package cioguard
depends on (``from customerio import CustomerIO`` then fails), so it must never be installed
beside cioguard. ``BENCH_CDP_PYTHON`` points at an interpreter that already has it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PACKAGE = "customerio-cdp-analytics"
SCRIPT = """
import json, resource, sys, time
from customerio.analytics import Client
people, host = int(sys.argv[1]), sys.argv[2]
client = Client(write_key="bench", host=host, max_queue_size=people + 1, upload_size=100)
attrs = json.loads(sys.argv[3])
cpu0, t0 = time.process_time(), time.perf_counter()
for i in range(people):
    client.identify(user_id=f"person-{i}", traits={**attrs, "n": i})
client.flush()
client.join()
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}))
"""


def _python() -> Path | None:
    given = os.environ.get("BENCH_CDP_PYTHON")
    if given:
        return Path(given)
    venv = Path(tempfile.gettempdir()) / "cioguard-bench-cdp-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
        if made.returncode != 0:
            return None
    check = subprocess.run([str(python), "-c", "import customerio.analytics"], capture_output=True)
    if check.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "-q", PACKAGE]
        if subprocess.run(pip, capture_output=True, timeout=600).returncode != 0:
            return None
    return python


class _Receiver(BaseHTTPRequestHandler):
    events = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        count = len(json.loads(body).get("batch", []))
        with _Receiver.lock:
            _Receiver.events += count
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: Any) -> None:
        return


def measure(people: int) -> dict[str, Any]:
    """People/s and CPU per 1,000 people of the client, end to end; or why it was skipped."""
    python = _python()
    if python is None:
        return {"skipped": f"{PACKAGE} could not be installed in its own environment"}
    from bench.common import attributes

    _Receiver.events = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        ran = subprocess.run(
            [str(python), "-c", SCRIPT, str(people), host, json.dumps(attributes(0))],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    if ran.returncode != 0:
        return {"skipped": f"the client failed (exit {ran.returncode})"}
    timing = json.loads(ran.stdout.strip().splitlines()[-1])
    return {
        "people": people, "received": _Receiver.events,
        "people_per_s": round(people / timing["seconds"], 1),
        "cpu_ms_per_1000": round(timing["cpu_s"] * 1000 * 1000 / people),
        "durability": "none: an in-memory queue, lost on a crash",
    }  # fmt: skip
