"""Batching: people per second delivered at a fixed request rate, batched / unbatched.

The Track API enforces R = 50 requests/s (the sandbox's strict bucket) and cioguard's limiter is
set to R. Unbatched, one person is one request, so at most R people/s. Batched
(``CIOGUARD_BATCH=1``, ``CIOGUARD_BATCH_MAX_OPS`` operations per ``/api/v2/batch`` request), one
request carries up to that many people, so the rate stops being the ceiling and the worker's
own cost per person becomes it. One worker node, 2 processes, a queue filled beforehand (a
backlog: the case where the rate matters); timed from the workers' resume to the last final
audit row. Target: batched >= 50x unbatched.

With ``py-spy`` installed, a last phase profiles the batched worker (:mod:`bench.pyspy`).
"""

from __future__ import annotations

from typing import Any

from bench import pyspy
from bench.common import Stack, figure_path, recorded, say, sized
from bench.plots import new_figure, save
from bench.runs import RunResult, cioguard_run

NAME = "batching"
RATE_PER_S = 50
TARGET = 50.0
CONCURRENCY = 2
MAX_OPS = 100


def run(stack: Stack, *, batch: bool, jobs: int) -> RunResult:
    return cioguard_run(
        stack, jobs=jobs, mode="drain", concurrency=CONCURRENCY, batch=batch,
        faults={"strict_rate_per_s": RATE_PER_S}, CIOGUARD_RATE_LIMIT=RATE_PER_S,
        CIOGUARD_BATCH_MAX_OPS=MAX_OPS,
    )  # fmt: skip


def plot(runs: dict[str, RunResult]) -> None:
    fig, ax = new_figure(
        f"People delivered at R = {RATE_PER_S} requests/s (1 node x {CONCURRENCY} processes)"
    )
    for i, (label, result) in enumerate(runs.items()):
        total, xs, ys = 0, [0], [0]
        for second, count in enumerate(result.per_second):
            total += count
            xs.append(second + 1)
            ys.append(total)
        ax.plot(xs, ys, color=f"C{i}", label=f"{label}: {result.jobs_per_s:.0f} people/s")
    ax.set_xlabel("seconds since the workers resumed")
    ax.set_ylabel("people delivered (final audit rows)")
    ax.legend(fontsize=9)
    save(fig, figure_path(NAME))


def main() -> dict[str, Any]:
    unbatched_jobs, batched_jobs = sized(1000, 150), sized(20000, 600)
    with Stack() as stack, recorded(NAME) as result:
        result["setup"] = {
            "rate_per_s": RATE_PER_S, "concurrency": CONCURRENCY, "batch_max_ops": MAX_OPS,
            "batch_linger_s": 0.2, "unbatched_people": unbatched_jobs,
            "batched_people": batched_jobs, "sandbox": "strict_rate_per_s=R",
        }  # fmt: skip
        runs: dict[str, RunResult] = {}
        for label, batch, jobs in (("unbatched", False, unbatched_jobs),
                                   ("batched", True, batched_jobs)):  # fmt: skip
            say(f"{NAME}: {label}")
            runs[label] = run(stack, batch=batch, jobs=jobs)
            say(f"{NAME}: {label}: {runs[label].jobs_per_s} people/s")
        result["runs"] = {k: v.as_dict() for k, v in runs.items()}
        over_limit = stack.sandbox.control.stats()["over_limit"]
        result["batched_over_limit"] = over_limit
        result["ratio"] = round(runs["batched"].jobs_per_s / runs["unbatched"].jobs_per_s, 2)
        result["target"] = TARGET
        result["met"] = result["ratio"] >= TARGET
        if pyspy.py_spy() is not None:
            say(f"{NAME}: profiling the batched worker with py-spy (unlimited rate)")
            result["profile"] = pyspy.profile_cioguard(
                stack, jobs=sized(6000, 800), seconds=sized(6, 2), concurrency=CONCURRENCY,
                batch=True,
            )  # fmt: skip
        plot(runs)
    return result


if __name__ == "__main__":
    main()
