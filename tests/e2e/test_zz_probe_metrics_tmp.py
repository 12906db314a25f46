from collections.abc import Callable
import httpx
from cioguard.api import Producer
from cioguard.devstack import WorkerProcess, free_port
from cioguard.sandbox import SandboxServer
from tests.helpers import wait_for_finals
import time

def test_probe(producer: Producer, start_worker: Callable[..., WorkerProcess], cio: SandboxServer) -> None:
    cio.control.configure(reject_id_prefix="poison-")
    port = free_port()
    start_worker(concurrency=2, CIOGUARD_METRICS_PORT=port, CIOGUARD_BATCH="1")
    jobs = [producer.identify(f"m-{i}", {"plan": "pro"}) for i in range(6)]
    jobs.append(producer.identify("poison-1", {"plan": "pro"}))
    wait_for_finals(producer.audit, len(jobs))
    time.sleep(1)
    print([l for l in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines() if l.startswith("cioguard_") and "bucket" not in l])
