"""Bulk erasure: N deletion requests at a rate R, against the ideal time and the seed's loop.

``bulk.submit`` (what ``cioguard delete --file`` runs) opens the deletion requests (and their
tombstones) in the audit store, then enqueues the jobs; the worker suppresses each person (the
default ``CIOGUARD_DELETION_MODE=suppress``, one operation per person) and records the request's
transitions. The queue is filled first, then the
workers resume; the wall time runs from the resume to the N-th final row. The ideal is the
requests needed divided by R (``ceil(N / CIOGUARD_BATCH_MAX_OPS)`` batched, N unbatched).
Target: wall / ideal <= 1.1.

* batched at R = 50 requests/s: all 10,000, measured (``--quick``: 1,000, scaled linearly).
  On 2 cores this is CPU-bound, not rate-bound: 100 requests take 2 s to send, but the workers
  spend ~0.4 ms of CPU per person (decrypt, two audited state changes, the chained rows), about
  4 s of CPU for 10,000, so the wall time cannot reach the ideal;
* batched at R = 10 requests/s, the same 10,000: here the rate binds (10 s of sending against
  ~2 s of CPU), so the ratio shows what the limiter and batching add to the ideal;
* unbatched at R = 100 requests/s: a sample of 2,000 (``--quick``: 200), its ratio applied to
  10,000 to extrapolate (a full unbatched run would take at least 100 s of sending alone);
* the seed's loop (suppress, delete, a console line, 100 ms sleep, one person at a time): a
  timed sample of 100 (``--quick``: 20), extrapolated linearly to 10,000.

Both cioguard runs use 2 worker nodes x 2 processes (the fleet of the rate benchmark).
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.common import (
    CpuSnapshot,
    Stack,
    figure_path,
    final_count,
    recorded,
    run_seed,
    say,
    sized,
    wait_for,
)
from bench.plots import bars, new_figure, save
from cioguard.producer import bulk

NAME = "bulk_erasure"
TARGET = 1.1
TOTAL = 10_000
NODES, PROCESSES = 2, 2
MAX_OPS = 100
RATE_BOUND_R = 10


def run(stack: Stack, *, people: int, rate_per_s: int, batch: bool) -> dict[str, Any]:
    """Enqueue ``people`` deletions with the workers paused, resume, time the drain."""
    stack.phase(strict_rate_per_s=rate_per_s)
    env = stack.env(
        CIOGUARD_RATE_LIMIT=rate_per_s, CIOGUARD_BATCH=int(batch), CIOGUARD_BATCH_MAX_OPS=MAX_OPS
    )
    producer = stack.producer(env)
    stack.start_workers(env, nodes=NODES, concurrency=PROCESSES)
    try:
        stack.pause_consumers()
        time.sleep(0.5)
        began = time.perf_counter()
        ids = [f"erase-{i}" for i in range(people)]
        bulk.submit(producer, ids, reason="bulk erasure benchmark")
        enqueue_s = time.perf_counter() - began
        cpu0 = CpuSnapshot.take(stack)
        stack.resume_consumers()
        finished = wait_for(
            lambda: final_count(producer.audit), people, timeout_s=people / 5 + 180, poll_s=0.1
        )
        cpu1 = CpuSnapshot.take(stack)
        stats = stack.sandbox.control.stats()
    finally:
        stack.stop_workers()
        producer.audit.dispose()
        producer.celery.close()
    requests_needed = math.ceil(people / MAX_OPS) if batch else people
    ideal_s = requests_needed / rate_per_s
    wall_s = finished - cpu0.at
    first_request = stats["first_request_monotonic"]  # the sandbox's clock: the same monotonic one
    return {
        "people": people, "rate_per_s": rate_per_s, "batch": batch,
        "requests_needed": requests_needed, "requests_sent": stats["requests_total"],
        "over_limit": stats["over_limit"], "suppressed": stats["suppressed"],
        "ideal_s": round(ideal_s, 2), "wall_s": round(wall_s, 2),
        "ratio": round(wall_s / ideal_s, 2), "people_per_s": round(people / wall_s, 1),
        "start_s": round(first_request - cpu0.at, 2),
        "wall_from_first_request_s": round(finished - first_request, 2),
        "enqueue_s": round(enqueue_s, 2),
        "enqueue_us_per_call": round(enqueue_s * 1e6 / people, 1),
        "cpu_ms_per_person": cpu0.per_job_ms(cpu1, people),
    }  # fmt: skip


def plot(result: dict[str, Any]) -> None:
    fig, ax = new_figure(f"{TOTAL:,} deletions: wall time (s, extrapolated where marked *)")
    rate_bound = result["batched_rate_bound"]
    labels = [
        f"cioguard batched\nR={result['batched']['rate_per_s']}/s (ideal "
        f"{result['batched_10k_ideal_s']:.0f} s)",
        f"cioguard batched\nR={rate_bound['rate_per_s']}/s (ideal "
        f"{rate_bound['ideal_s'] * TOTAL / rate_bound['people']:.0f} s)",
        f"cioguard unbatched*\nR={result['unbatched']['rate_per_s']}/s",
        "seed loop*\n(100 ms sleep)",
    ]
    values = [
        result["batched_10k_wall_s"], rate_bound["wall_s"] * TOTAL / rate_bound["people"],
        result["unbatched_10k_wall_s"], result["seed_10k_wall_s"],
    ]  # fmt: skip
    bars(ax, labels, values, fmt="{:,.1f} s")
    ax.set_yscale("log")
    ax.set_ylabel("seconds for 10,000 deletions (log scale)")
    save(fig, figure_path(NAME))


def main() -> dict[str, Any]:
    batched_people = sized(TOTAL, 1000)
    unbatched_people = sized(2000, 200)
    seed_people = sized(100, 20)
    with Stack() as stack, recorded(NAME) as result:
        result["setup"] = {
            "total": TOTAL, "nodes": NODES, "processes_per_node": PROCESSES,
            "batch_max_ops": MAX_OPS, "deletion_mode": "suppress",
            "batched_sample": batched_people, "unbatched_sample": unbatched_people,
            "seed_sample": seed_people,
        }  # fmt: skip
        say(f"{NAME}: batched, {batched_people} deletions at 50/s")
        result["batched"] = run(stack, people=batched_people, rate_per_s=50, batch=True)
        say(f"{NAME}: {result['batched']}")
        say(f"{NAME}: batched, {batched_people} deletions at {RATE_BOUND_R}/s (rate-bound)")
        result["batched_rate_bound"] = run(
            stack, people=batched_people, rate_per_s=RATE_BOUND_R, batch=True
        )
        say(f"{NAME}: {result['batched_rate_bound']}")
        say(f"{NAME}: unbatched, {unbatched_people} deletions at 100/s")
        result["unbatched"] = run(stack, people=unbatched_people, rate_per_s=100, batch=False)
        say(f"{NAME}: {result['unbatched']}")
        stack.phase()
        say(f"{NAME}: seed loop, {seed_people} deletions")
        seed = run_seed(stack, "erase", seed_people, prefix="erase")
        per_person_s = seed["elapsed_s"] / seed_people
        result["seed"] = {**seed, "per_person_s": round(per_person_s, 4)}
        scale = TOTAL / batched_people
        result["batched_10k_wall_s"] = round(result["batched"]["wall_s"] * scale, 1)
        result["unbatched_10k_wall_s"] = round(
            result["unbatched"]["ratio"] * TOTAL / result["unbatched"]["rate_per_s"], 1
        )
        result["seed_10k_wall_s"] = round(per_person_s * TOTAL, 1)
        ideal_10k_s = math.ceil(TOTAL / MAX_OPS) / result["batched"]["rate_per_s"]
        result["batched_10k_ideal_s"] = ideal_10k_s
        result["ratio_batched"] = round(result["batched_10k_wall_s"] / ideal_10k_s, 2)
        result["ratio_unbatched"] = result["unbatched"]["ratio"]
        result["ratio_batched_rate_bound"] = result["batched_rate_bound"]["ratio"]
        result["target"] = TARGET
        result["met_batched"] = result["ratio_batched"] <= TARGET
        result["met_unbatched"] = result["ratio_unbatched"] <= TARGET
        result["met_batched_rate_bound"] = result["ratio_batched_rate_bound"] <= TARGET
        plot(result)
    return result


if __name__ == "__main__":
    main()
