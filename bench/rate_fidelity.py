"""Rate fidelity: does the fleet send at the configured rate R, and never past it?

Ways to send people to a Track API that enforces R = 50 requests/s (the sandbox's strict token
bucket, one second of burst, answers 429 past it, counted as ``over_limit``):

* cioguard: 2 worker nodes x 2 processes, unbatched, ``CIOGUARD_RATE_LIMIT=R`` (one token bucket
  in Redis shared by every process);
* Celery's built-in limit: the bare task of :mod:`bench.bare_app` with ``rate_limit="R/s"``, as
  a user writes the limit they were given, on the same 2 nodes x 2 processes; once under
  Celery's defaults (prefetch 4, early acks) and once under cioguard's no-loss settings
  (prefetch 1, late acks). Celery keeps that bucket in each node's memory, so the nodes together
  start at about 2R. Then each rate-limited message holds a prefetch slot while it waits, and
  with the Redis transport the consumer falls to about one fetch a second per node (the shape
  reported in celery#6845 and celery#3166). A full run would take many minutes, so these two
  are observed for ``OBSERVE_S`` seconds and the people not sent by then are counted;
* the seed's serial loop: one process, the official client, ``identify`` then a 100 ms sleep.

Figures from the sandbox's own counters: achieved rate (2xx answers per second between the
first and the last request) / R, sent rate / R, requests past the limit, people refused or not
sent, the busiest 1-second window; and requests/s over time (sampled every 0.2 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.bare_app import BareWorker, bare_env, send_people
from bench.common import (
    Stack,
    StatsSampler,
    attributes,
    figure_path,
    final_count,
    ok_requests,
    quick,
    recorded,
    run_seed,
    say,
    sized,
    wait_for,
)
from bench.plots import new_figure, save
from cioguard.broker.celeryconf import build_celery
from cioguard.config import Settings

NAME = "rate_fidelity"
RATE_PER_S = 50
NODES, PROCESSES = 2, 2
OBSERVE_S = 10.0 if quick() else 25.0


def _observe(count: Callable[[], int], target: int, *, window_s: float) -> None:
    """Wait until ``count()`` reaches ``target`` or ``window_s`` has passed (Celery's limiter
    can fall to about 1 task/s per node, celery#6845: a full run would take many minutes)."""
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline and count() < target:
        time.sleep(0.2)


def _figures(stack: Stack, people: int) -> dict[str, Any]:
    """Rates and counts of the phase that just ran, from the sandbox's own counters."""
    stats = stack.sandbox.control.stats()
    identify = stats["by_endpoint"].get("identify", {})
    accepted = sum(n for status, n in identify.items() if status.startswith("2"))
    sent = sum(identify.values())
    interval_s = (stats["last_request_monotonic"] or 0) - (stats["first_request_monotonic"] or 0)
    interval_s = max(interval_s, 1e-9)
    gaps = (sent - 1) / sent if sent else 0.0  # n requests span n - 1 gaps
    return {
        "people": people,
        "requests_sent": sent,
        "requests_accepted": accepted,
        "over_limit": stats["over_limit"],
        "people_refused": sent - accepted,
        "people_not_sent": max(0, people - sent),
        "interval_s": round(interval_s, 2),
        "sent_per_s": round(sent * gaps / interval_s, 2),
        "achieved_per_s": round(accepted * gaps / interval_s, 2),
        "achieved_over_r": round(accepted * gaps / interval_s / RATE_PER_S, 3),
        "sent_over_r": round(sent * gaps / interval_s / RATE_PER_S, 3),
        "max_requests_in_any_1s_window": stats["max_requests_in_any_1s_window"],
    }


def _identify_requests(stack: Stack) -> int:
    return sum(stack.sandbox.control.stats()["by_endpoint"].get("identify", {}).values())


def run_cioguard(stack: Stack, people: int) -> tuple[dict[str, Any], StatsSampler]:
    stack.phase(strict_rate_per_s=RATE_PER_S)
    env = stack.env(CIOGUARD_RATE_LIMIT=RATE_PER_S, CIOGUARD_BATCH=0)
    producer = stack.producer(env)
    stack.start_workers(env, nodes=NODES, concurrency=PROCESSES)
    try:
        with StatsSampler(stack.sandbox) as sampler:
            for i in range(people):
                producer.identify(f"rate-{i}", attributes(i))
            wait_for(lambda: final_count(producer.audit), people, timeout_s=people / 10 + 120)
            time.sleep(0.5)
        return _figures(stack, people), sampler
    finally:
        stack.stop_workers()
        producer.audit.dispose()
        producer.celery.close()


def run_celery_rate_limit(
    stack: Stack, people: int, celery_config: str
) -> tuple[dict[str, Any], StatsSampler]:
    """The bare task with ``rate_limit="R/s"``, under Celery's defaults or cioguard's settings."""
    stack.phase(strict_rate_per_s=RATE_PER_S)
    sandbox = stack.sandbox
    env = bare_env(
        stack.redis.url, sandbox.url, str(sandbox.ca_path), sandbox.site_id, sandbox.api_key,
        rate_limit=f"{RATE_PER_S}/s", celery_config=celery_config,
    )  # fmt: skip
    stack.start_workers(env, nodes=NODES, concurrency=PROCESSES, factory=BareWorker)
    celery = build_celery(Settings(CIOGUARD_BROKER_URL=stack.redis.url), "bench-bare-producer")
    try:
        with StatsSampler(sandbox) as sampler:
            send_people(celery, people, attributes, prefix="rate")
            _observe(lambda: _identify_requests(stack), people, window_s=OBSERVE_S)
            time.sleep(0.5)
        result = _figures(stack, people)
        result["accepted_checked"] = ok_requests(sandbox.control)
        return result, sampler
    finally:
        stack.stop_workers()
        celery.close()


def run_seed_loop(stack: Stack, people: int) -> tuple[dict[str, Any], StatsSampler]:
    stack.phase(strict_rate_per_s=RATE_PER_S)
    with StatsSampler(stack.sandbox) as sampler:
        seed = run_seed(stack, "identify", people, prefix="rate")
        time.sleep(0.5)
    result = _figures(stack, people)
    result["seed_process_elapsed_s"] = round(seed["elapsed_s"], 2)
    return result, sampler


def plot(series: dict[str, dict[str, list[tuple[float, float]]]]) -> None:
    fig, ax = new_figure(
        f"Requests/s at the Track API, limit R = {RATE_PER_S}/s "
        f"({NODES} nodes x {PROCESSES} processes)"
    )
    for i, (label, lines) in enumerate(series.items()):
        sent, ok = lines["sent"], lines["ok"]
        ax.plot([t for t, _ in sent], [r for _, r in sent], color=f"C{i}", label=f"{label}: sent")
        if any(abs(a[1] - b[1]) > 0.5 for a, b in zip(sent, ok, strict=False)):
            ax.plot([t for t, _ in ok], [r for _, r in ok], color=f"C{i}", linestyle=":",
                    label=f"{label}: accepted (2xx)")  # fmt: skip
    ax.axhline(RATE_PER_S, color="black", linestyle="--", linewidth=1, label=f"R = {RATE_PER_S}/s")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper right")
    save(fig, figure_path(NAME))


def main() -> dict[str, Any]:
    people = sized(1500, 200)
    seed_people = sized(150, 30)
    with Stack() as stack, recorded(NAME) as result:
        result["setup"] = {
            "rate_per_s": RATE_PER_S, "nodes": NODES, "processes_per_node": PROCESSES,
            "people": people, "seed_people": seed_people, "celery_observe_s": OBSERVE_S,
            "sandbox": "strict_rate_per_s=R",
        }  # fmt: skip
        series: dict[str, dict[str, list[tuple[float, float]]]] = {}
        runs: list[tuple[str, Callable[[], tuple[dict[str, Any], StatsSampler]]]] = [
            ("cioguard", lambda: run_cioguard(stack, people)),
            ("celery rate_limit", lambda: run_celery_rate_limit(stack, people, "defaults")),
            (
                "celery rate_limit, prefetch 1 + late acks",
                lambda: run_celery_rate_limit(stack, people, "cioguard"),
            ),
            ("seed loop", lambda: run_seed_loop(stack, seed_people)),
        ]
        for label, run in runs:
            say(f"{NAME}: {label}")
            figures, sampler = run()
            result[label] = figures
            series[label] = {"sent": sampler.per_second("sent"), "ok": sampler.per_second("ok")}
            say(f"{NAME}: {label}: {figures}")
        result["series"] = series
        plot(series)
    return result


if __name__ == "__main__":
    main()
