"""Scaling: delivered people/s with 1, 2 and 4 worker processes at an unlimited rate.

One worker node with ``--concurrency`` 1, 2 and 4, unbatched and batched, the rate limit far
above reach; a queue filled beforehand and timed from the workers' resume to the last final
audit row (:mod:`bench.runs`, ``drain``). On a 2-core machine that also runs Redis, the sandbox
and this process, 4 processes cannot be expected to double 2; the figure shows where the curve
flattens.
"""

from __future__ import annotations

from typing import Any

from bench.common import Stack, figure_path, recorded, say, sized
from bench.plots import new_figure, save
from bench.runs import RunResult, cioguard_run

NAME = "scaling"
PROCESSES = (1, 2, 4)


def plot(runs: dict[str, dict[int, RunResult]]) -> None:
    fig, ax = new_figure("Delivered people/s by worker processes (unlimited rate, 2 cores)")
    for i, (label, by_processes) in enumerate(runs.items()):
        xs = list(by_processes)
        ys = [by_processes[n].jobs_per_s for n in xs]
        ax.plot(xs, ys, marker="o", color=f"C{i}", label=label)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=9)  # fmt: skip
    ax.set_xticks(list(PROCESSES))
    ax.set_xlabel("worker processes (one node)")
    ax.set_ylabel("people per second")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=9)
    save(fig, figure_path(NAME))


def main() -> dict[str, Any]:
    sizes = {"unbatched": sized(1000, 150), "batched": sized(12000, 400)}
    with Stack() as stack, recorded(NAME) as result:
        result["setup"] = {
            "people": sizes, "processes": list(PROCESSES),
            "rate_limit": "unlimited (1,000,000/s)", "batch_max_ops": 100,
        }  # fmt: skip
        runs: dict[str, dict[int, RunResult]] = {"unbatched": {}, "batched": {}}
        for label, by_processes in runs.items():
            for processes in PROCESSES:
                say(f"{NAME}: {label}, {processes} processes")
                by_processes[processes] = cioguard_run(
                    stack, jobs=sizes[label], mode="drain", concurrency=processes,
                    batch=label == "batched",
                )  # fmt: skip
                say(f"{NAME}: {by_processes[processes].jobs_per_s} people/s")
        result["runs"] = {
            label: {str(n): r.as_dict() for n, r in by.items()} for label, by in runs.items()
        }
        result["people_per_s"] = {
            label: {str(n): r.jobs_per_s for n, r in by.items()} for label, by in runs.items()
        }
        plot(runs)
    return result


if __name__ == "__main__":
    main()
