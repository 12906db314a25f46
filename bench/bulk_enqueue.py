"""Bulk enqueue: people/s of ``identify_many`` against a loop of ``identify()``, same run.

Both on the same producer and private Redis, 10 attributes per person, taking turns for three
rounds (the best round of each is kept: load from other work only slows). ``identify_many``
validates, sanitizes, hashes and seals each person as ``identify()`` does and publishes 500 per
Redis round trip (:mod:`cioguard.producer.many`). Target: >= 2x the loop.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Stack, attributes, recorded, say, sized
from cioguard.producer import many

NAME = "enqueue_bulk"
TARGET = 2.0


def bulk_rates(producer: Any, people: int, rounds: int = 3) -> dict[str, Any]:
    """People/s of a loop of ``identify()`` and of ``identify_many`` (batches of 500), taking
    turns for ``rounds`` rounds; the best round of each is kept (load only slows)."""
    items = [(f"bulk-{i}", attributes(i)) for i in range(people)]
    loop: list[float] = []
    bulk: list[float] = []
    for _ in range(rounds):
        began = time.perf_counter()
        for pid, attrs in items:
            producer.identify(pid, attrs)
        loop.append(people / (time.perf_counter() - began))
        began = time.perf_counter()
        many.publish_all(producer, items, many._identify_item)
        bulk.append(people / (time.perf_counter() - began))
    return {
        "people": people, "batch": many.DEFAULT_BATCH, "rounds": rounds,
        "identify_loop_people_per_s": round(max(loop)),
        "identify_many_people_per_s": round(max(bulk)),
        "ratio": round(max(bulk) / max(loop), 2), "target": TARGET,
        "met": max(bulk) / max(loop) >= TARGET,
    }  # fmt: skip


def main() -> dict[str, Any]:
    with Stack() as stack, recorded(NAME) as result:
        stack.phase()
        producer = stack.producer(stack.env())
        try:
            result.update(bulk_rates(producer, sized(10_000, 1_000)))
        finally:
            producer.audit.dispose()
            producer.celery.close()
        say(f"{NAME}: {result}")
    return result


if __name__ == "__main__":
    main()
