"""What the Track API sandbox knows: fault settings, Customer.io limits, people, events and stats.

Pure and synchronous on purpose: no HTTP, no asyncio. :mod:`cioguard.sandbox.routes` wraps it in a
Starlette app;
keeping the rules here lets them be read (and unit-tested) apart from the transport, and keeps
request handlers cheap. All mutation happens between ``await`` points of one event loop, so no
locks are needed.

Note: Customer.io states its size limits in "KB" without saying 1000 or 1024. The sandbox takes
the stricter decimal reading (500,000 and 32,000 bytes) so a client that passes here also passes
there.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cioguard.sandbox.wire import (
    Op,
    RequestRecord,
)

REQUEST_LOG_MAX = 200_000


INJECTED_5XX = (500, 502, 503)


_FLOAT_FIELDS = frozenset(
    {"fail_5xx_ratio", "fail_429_ratio", "latency_ms", "slow_ratio", "slow_s"}
)


_RATIO_FIELDS = frozenset({"fail_5xx_ratio", "fail_429_ratio", "slow_ratio"})


@dataclass(frozen=True)
class FaultConfig:
    """Faults the sandbox injects into track requests. Every default means "behave normally".

    ``strict_rate_per_s`` turns on a server-side token bucket (``strict_burst`` tokens, default
    one second's worth); ``reject_id_prefix`` makes every id with that prefix a poisoned person.
    """

    fail_5xx_ratio: float = 0.0
    fail_429_ratio: float = 0.0
    retry_after_s: int = 1
    latency_ms: float = 0.0
    slow_ratio: float = 0.0
    slow_s: float = 0.0
    reject_id_prefix: str | None = None
    strict_rate_per_s: float | None = None
    strict_burst: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            _check_field(spec.name, getattr(self, spec.name))

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Return a copy with ``changes`` applied; ``ValueError`` names an unknown or bad field."""
        known = {spec.name for spec in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise ValueError(f"unknown fault setting: {name}")
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-ready values."""
        return dataclasses.asdict(self)

    def burst(self) -> int:
        """Bucket capacity: ``strict_burst``, or one second's worth of tokens (at least 1)."""
        if self.strict_burst is not None:
            return self.strict_burst
        return max(1, math.ceil(self.strict_rate_per_s or 1))


def _coerce(name: str, value: Any) -> Any:
    """Turn a JSON number into the field's type (ints are fine where floats are expected)."""
    if name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name == "strict_rate_per_s" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_field(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is not allowed for that setting."""
    if name == "reject_id_prefix":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or null")
        return
    if value is None and name in {"strict_rate_per_s", "strict_burst", "seed"}:
        return
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number")
    if name in {"retry_after_s", "strict_burst", "seed"} and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if name in _RATIO_FIELDS and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    if name in {"strict_rate_per_s", "strict_burst"} and value <= 0:
        raise ValueError(f"{name} must be positive")
    if value < 0:
        raise ValueError(f"{name} must not be negative")


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate_per_s``; one token per request."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated_at = clock()

    def try_acquire(self) -> bool:
        """Take one token if there is one; ``False`` means the request is over the limit."""
        now = self._clock()
        elapsed_s = max(0.0, now - self._updated_at)
        self._tokens = min(self._burst, self._tokens + elapsed_s * self._rate_per_s)
        self._updated_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _new_bucket(faults: FaultConfig) -> TokenBucket | None:
    if faults.strict_rate_per_s is None:
        return None
    return TokenBucket(faults.strict_rate_per_s, faults.burst())


class SandboxState:
    """People, events, suppressions, credentials, faults and stats of one sandbox process.

    Note: events are kept per person id whether or not that person was identified; delete and
    suppress drop the person's profile and events, but event ids stay remembered for dedupe.
    """

    def __init__(
        self, credentials: Iterable[tuple[str, str]], faults: FaultConfig, region: str = "us"
    ) -> None:
        self.credentials = set(credentials)
        self.faults = faults
        self.region = region
        self.rng = random.Random(faults.seed)
        self.bucket = _new_bucket(faults)
        self.reset()

    def reset(self) -> None:
        """Forget all data and stats; keep credentials and faults, refill the bucket."""
        self.people: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.event_ids: set[str] = set()
        self.suppressed: set[str] = set()
        self.ops_by_action: Counter[str] = Counter()  # applied operations, v1 and v2 alike
        self.counters: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()  # spec violations by code, no payloads
        self.by_endpoint: dict[str, Counter[str]] = {}
        self.by_status: Counter[str] = Counter()
        self.log: list[RequestRecord] = []
        self.window: deque[float] = deque()
        self.max_in_window = 0
        self.first_at: tuple[float, float] | None = None
        self.last_at: tuple[float, float] | None = None
        self.rng.seed(self.faults.seed)
        self.bucket = _new_bucket(self.faults)

    def configure(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Apply a partial fault update; reseeds the RNG or rebuilds the bucket when touched."""
        self.faults = self.faults.updated(changes)
        if "seed" in changes:
            self.rng.seed(self.faults.seed)
        if {"strict_rate_per_s", "strict_burst"} & changes.keys():
            self.bucket = _new_bucket(self.faults)
        return self.faults

    def is_authorized(self, site_id: str, api_key: str) -> bool:
        return (site_id, api_key) in self.credentials

    def take_token(self) -> bool:
        """``False`` when the strict rate limit is on and the bucket is empty."""
        return self.bucket is None or self.bucket.try_acquire()

    def pick_failure(self) -> int | None:
        """The status of an injected 429 or 5xx for this request, or ``None`` to serve it."""
        if self.faults.fail_429_ratio and self.rng.random() < self.faults.fail_429_ratio:
            return 429
        if self.faults.fail_5xx_ratio and self.rng.random() < self.faults.fail_5xx_ratio:
            return self.rng.choice(INJECTED_5XX)
        return None

    def is_slow(self) -> bool:
        return bool(self.faults.slow_ratio) and self.rng.random() < self.faults.slow_ratio

    def note_arrival(self) -> None:
        """Count a track request and track the busiest one-second window."""
        mono, wall = time.monotonic(), time.time()
        self.counters["requests_total"] += 1
        self.first_at = self.first_at or (mono, wall)
        self.last_at = (mono, wall)
        self.window.append(mono)
        while self.window[0] <= mono - 1.0:
            self.window.popleft()
        self.max_in_window = max(self.max_in_window, len(self.window))

    def note_violations(self, codes: Iterable[str]) -> None:
        """Count a request's spec violations by code (the codes of ``conformance.CODES``)."""
        self.violations.update(codes)

    def record(
        self,
        method: str,
        path: str,
        endpoint: str,
        status: int,
        body: bytes,
        violations: Iterable[str] = (),
    ) -> None:
        """Count the answer by endpoint and status and keep the request (up to the cap)."""
        self.by_endpoint.setdefault(endpoint, Counter())[str(status)] += 1
        self.by_status[str(status)] += 1
        if len(self.log) >= REQUEST_LOG_MAX:
            self.counters["requests_log_dropped"] += 1
            return
        text = body.decode("utf-8", errors="replace")
        record: RequestRecord = {"method": method, "path": path, "status": status, "body": text}
        record["violations"] = sorted(set(violations))
        self.log.append(record)

    def apply(self, op: Op) -> None:
        """Change the data as Customer.io would for a valid operation."""
        self.ops_by_action[op.action] += 1
        if op.action in {"identify", "event"} and op.person_id in self.suppressed:
            self.counters["ignored_suppressed"] += 1
        elif op.action == "identify":
            self._identify(op)
        elif op.action == "event":
            self._event(op)
        elif op.action == "unsuppress":
            self.suppressed.discard(op.person_id)
        else:
            self.people.pop(op.person_id, None)
            self.events.pop(op.person_id, None)
            if op.action == "delete":
                self.counters["deleted"] += 1
            else:
                self.suppressed.add(op.person_id)

    def _identify(self, op: Op) -> None:
        """Merge attributes; an empty string removes an attribute, as in Customer.io."""
        person = self.people.setdefault(op.person_id, {})
        for name, value in op.attributes.items():
            if value == "":
                person.pop(name, None)
            else:
                person[name] = value

    def _event(self, op: Op) -> None:
        if op.event_id is not None:
            if op.event_id in self.event_ids:
                self.counters["duplicate_events"] += 1
                return
            self.event_ids.add(op.event_id)
        event = {
            "name": op.name,
            "data": op.attributes,
            "id": op.event_id,
            "timestamp": op.timestamp,
            "received_at": time.time(),
        }
        self.events.setdefault(op.person_id, []).append(event)
        self.counters["events_unique"] += 1

    def all_events(self) -> list[dict[str, Any]]:
        """Every stored event, each with its ``person`` id."""
        return [{"person": pid, **ev} for pid, evs in self.events.items() for ev in evs]

    def stats(self) -> dict[str, Any]:
        """The numbers tests and benchmarks assert on (see the module docs of ``sandbox``)."""
        counts = {
            name: self.counters[name]
            for name in (
                *("requests_total", "over_limit", "unauthorized", "events_unique"),
                *("duplicate_events", "deleted", "ignored_suppressed", "injected_429"),
                *("injected_5xx", "slow", "batch_ops_applied", "batch_ops_rejected"),
                "requests_log_dropped",
            )
        }
        first, last = self.first_at or (None, None), self.last_at or (None, None)
        return {
            **counts,
            "spec_violations": sum(self.violations.values()),
            "spec_violations_by_code": dict(self.violations),
            "by_endpoint": {ep: dict(c) for ep, c in self.by_endpoint.items()},
            "by_status": dict(self.by_status),
            "ops_by_action": dict(self.ops_by_action),
            "people": len(self.people),
            "suppressed": len(self.suppressed),
            "max_requests_in_any_1s_window": self.max_in_window,
            "requests_logged": len(self.log),
            "first_request_monotonic": first[0],
            "first_request_at": first[1],
            "last_request_monotonic": last[0],
            "last_request_at": last[1],
        }
