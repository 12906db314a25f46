"""Enqueue cost in the application process: microseconds per ``identify()``.

``Producer.identify`` validates, applies the sanitization policy, hashes the person id, seals the
job with Fernet and publishes it. The baseline is a bare ``celery.send_task`` of a plain JSON
payload of the same size on the same private Redis (same Celery publish settings), so the
difference is what cioguard adds in the application. A 10-attribute dict per call; a warm-up
first; each call timed with ``perf_counter_ns``. Also measured apart, to say where the time
goes: validate + sanitize, building the job (keyed hash), sealing. (Bulk enqueue:
:mod:`bench.bulk_enqueue`.)
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.common import Stack, attributes, figure_path, percentile, recorded, say, sized
from bench.plots import new_figure, save
from cioguard.broker.celeryconf import build_celery
from cioguard.broker.jobs import Job, new_job_id
from cioguard.config import Settings
from cioguard.privacy.hashing import person_hash
from cioguard.producer import validate

NAME = "enqueue"
WARMUP = 200
BLOCK = 250


def timed(calls: dict[str, Callable[[int], object]], count: int) -> dict[str, list[float]]:
    """Microseconds of each of ``count`` calls of every callable, after a warm-up.

    The callables take turns in blocks of ``BLOCK`` calls, so a change in the machine's load
    hits them alike.
    """
    for call in calls.values():
        for i in range(WARMUP):
            call(i)
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for start in range(0, count, BLOCK):
        for label, call in calls.items():
            for i in range(start, min(count, start + BLOCK)):
                began = time.perf_counter_ns()
                call(i)
                samples[label].append((time.perf_counter_ns() - began) / 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "calls": len(samples),
        "p50_us": round(percentile(samples, 50), 1),
        "p99_us": round(percentile(samples, 99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
    }


def plot(curves: dict[str, list[float]]) -> None:
    fig, ax = new_figure("Application-side cost per call (cumulative distribution)")
    for i, (label, samples) in enumerate(curves.items()):
        ordered = sorted(samples)
        ys = [(k + 1) / len(ordered) for k in range(len(ordered))]
        ax.plot(ordered, ys, color=f"C{i}", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per call (log scale)")
    ax.set_ylabel("fraction of calls")
    ax.legend(fontsize=9)
    save(fig, figure_path(NAME))


def main() -> dict[str, Any]:
    calls = sized(5000, 500)
    with Stack() as stack, recorded(NAME) as result:
        stack.phase()
        env = stack.env()
        producer = stack.producer(env)
        bare = build_celery(Settings(CIOGUARD_BROKER_URL=stack.redis.url), "bench-bare-producer")
        sealed_size = len(producer.envelope.seal(
            Job(job_id=new_job_id(), kind="identify", person_id="person-1",
                person_hash="0" * 64, attributes=attributes(1)).to_payload()
        ))  # fmt: skip
        plain_size = len(json.dumps({"person_id": "person-1", **attributes(1)}))
        pad = "x" * max(0, sealed_size - plain_size - len(', "pad": ""'))

        def plain(i: int) -> None:
            payload = {"person_id": f"person-{i}", **attributes(i), "pad": pad}
            bare.send_task("bench.bare.identify", args=[payload], queue="bench-enqueue")

        key = producer.hash_key

        def prepare(i: int) -> None:
            producer.sanitizer.apply(validate.attributes(attributes(i)))

        def build(i: int) -> None:
            pid = f"person-{i}"
            Job(job_id=new_job_id(), kind="identify", person_id=pid,
                person_hash=person_hash(key, pid), attributes=attributes(i))  # fmt: skip

        job = Job(job_id=new_job_id(), kind="identify", person_id="p", person_hash="0" * 64,
                  attributes=producer.sanitizer.apply(attributes(1)))  # fmt: skip

        say(f"{NAME}: {calls} calls each")
        curves = timed(
            {
                "cioguard identify()": lambda i: producer.identify(f"person-{i}", attributes(i)),
                "bare send_task (same size)": plain,
            },
            calls,
        )
        parts = timed(
            {
                "validate + sanitize": prepare,
                "job + keyed hash": build,
                "Fernet seal": lambda i: producer.envelope.seal(job.to_payload()),
                "building the attribute dict (in every call above)": attributes,
            },
            calls,
        )
        plain_bytes = plain_size + len(pad) + len(', "pad": ""')
        result["setup"] = {"calls": calls, "attributes": 10, "sealed_message_bytes": sealed_size,
                           "plain_message_bytes": plain_bytes}  # fmt: skip
        result["cioguard"] = summary(curves["cioguard identify()"])
        result["bare_send_task"] = summary(curves["bare send_task (same size)"])
        result["parts"] = {label: summary(samples) for label, samples in parts.items()}
        result["ratio_p50"] = round(
            result["cioguard"]["p50_us"] / result["bare_send_task"]["p50_us"], 2
        )
        result["ratio_p99"] = round(
            result["cioguard"]["p99_us"] / result["bare_send_task"]["p99_us"], 2
        )
        say(f"{NAME}: cioguard {result['cioguard']} bare {result['bare_send_task']}")
        plot(curves)
        producer.celery.close()
        bare.close()
    return result


if __name__ == "__main__":
    main()
