"""The seed's loops, as its users run them: one process, one person at a time, 100 ms apart.

``identify``: for each person, ``CustomerIO.identify`` then ``time.sleep(0.1)``.
``erase``: for each person, ``suppress`` then ``delete``, a console line, then the sleep.
The official client with its defaults (its own urllib3 retries, no rate limiter, no audit).

Run as a subprocess (``python -m bench.seed_loop MODE COUNT``) with ``BENCH_*`` set as for
:mod:`bench.bare_app` and ``REQUESTS_CA_BUNDLE`` pointing at the sandbox CA. Prints one JSON
line: ``{"people": n, "failed": n, "elapsed_s": s}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from urllib.parse import urlsplit

from customerio import CustomerIO, CustomerIOException

SLEEP_S = 0.1


def client() -> CustomerIO:
    url = urlsplit(os.environ["BENCH_TRACK_URL"])
    return CustomerIO(
        os.environ["BENCH_SITE_ID"], os.environ["BENCH_API_KEY"], host=url.hostname, port=url.port
    )


def run(mode: str, count: int, prefix: str) -> dict[str, float]:
    cio = client()
    failed = 0
    started = time.perf_counter()
    for i in range(count):
        person = f"{prefix}-{i}"
        try:
            if mode == "identify":
                cio.identify(id=person, email=f"{person}@example.com", plan="pro")
            else:
                cio.suppress(person)
                cio.delete(person)
                print("deleted a person", file=sys.stderr)
        except CustomerIOException:
            failed += 1
        time.sleep(SLEEP_S)
    return {"people": count, "failed": failed, "elapsed_s": time.perf_counter() - started}


if __name__ == "__main__":
    mode, count = sys.argv[1], int(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else "seed"
    print(json.dumps(run(mode, count, prefix)), flush=True)
