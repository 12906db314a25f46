"""The sandbox's Data Pipelines API: ``POST /v1/identify``, ``/v1/track``, ``/v1/batch``.

It shares :class:`~cioguard.sandbox.state.SandboxState` with the Track API routes: the same
fault switches (strict rate bucket, latency, injected 429/5xx, slow answers, poisoned ids),
the same request log and stats, and the same people and events, so ``/_sandbox/people/{id}``
and ``/_sandbox/events`` show what either API delivered. What is proper to this API:

* Basic auth with a source key and an empty password (keys set by
  ``POST /_sandbox/pipelines/credentials {"keys": [...]}``);
* every request validated against Customer.io's document on the bytes received
  (:mod:`cioguard.sandbox.pipelines_spec`); each violation is counted;
* as documented, a request over a size limit is answered **200 and dropped**; with
  ``X-Strict-Mode: 1`` an invalid one is answered 400, without it 200 and dropped;
* a batch is applied whole or not at all (the API has no per-call results);
* semantic events: ``User Deleted`` deletes the person, ``User Suppressed`` deletes and blocks
  the id, ``User Unsuppressed`` lifts that; a repeated ``messageId`` of an event is a duplicate.

``GET /_sandbox/pipelines/stats`` gives the counters and ``GET /_sandbox/pipelines/received``
the size of each request and of each call in it, as received.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cioguard.sandbox import pipelines_spec
from cioguard.sandbox.state import SandboxState
from cioguard.sandbox.wire import Op, loads_strict

DEFAULT_PIPELINES_API_KEY = "sandbox-pipelines-key"
RECEIVED_MAX = 100_000
SEMANTIC_ACTIONS = {"User Deleted": "delete", "User Suppressed": "suppress",
                    "User Unsuppressed": "unsuppress"}  # fmt: skip
STAT_NAMES = ("spec_violations", "dropped", "strict_requests", "lenient_requests", "rejected",
              "calls_applied", "calls_not_modelled")  # fmt: skip
Answer = tuple[int, dict[str, Any], dict[str, str]]


class PipelinesApi:
    """The Pipelines endpoints over a shared sandbox state.

    Checks run in the Track routes' order: strict rate bucket (429), latency, auth (401),
    injected 429/5xx, size limits (200, dropped), spec (400 strict / 200 dropped), poisoned id
    (400), slow delay, then the calls are applied.
    """

    def __init__(self, state: SandboxState, keys: set[str] | None = None) -> None:
        self.state = state
        self.keys = keys or {DEFAULT_PIPELINES_API_KEY}
        self.counters: Counter[str] = Counter()
        self.by_rule: Counter[str] = Counter()
        self.received: list[dict[str, Any]] = []

    async def handle(self, request: Request) -> Response:
        endpoint = request.path_params["endpoint"]
        body = await request.body()
        self.state.note_arrival()
        rules: list[str] = []
        if endpoint not in pipelines_spec.ENDPOINT_SCHEMAS:
            status, payload, headers = _error(404, "Not found")
        else:
            status, payload, headers = await self._answer(request, endpoint, body, rules)
        codes = [f"pipelines:{rule}" for rule in rules]
        self.state.note_violations(codes)  # also in /_sandbox/stats, beside the Track API's
        self.state.record("POST", request.url.path, f"pipelines {endpoint}", status, body, codes)
        return JSONResponse(payload, status, headers)

    async def _answer(
        self, request: Request, endpoint: str, body: bytes, rules: list[str]
    ) -> Answer:
        state = self.state
        if not state.take_token():
            state.counters["over_limit"] += 1
            return _error(429, "Too many requests", {"Retry-After": "1"})
        if state.faults.latency_ms:
            await asyncio.sleep(state.faults.latency_ms / 1000)
        if not self._authorized(request.headers.get("authorization", "")):
            state.counters["unauthorized"] += 1
            return _error(401, "Unauthorized request")
        failure = state.pick_failure()
        if failure is not None:
            return self._injected(failure)
        strict = request.headers.get("x-strict-mode") == "1"
        self.counters["strict_requests" if strict else "lenient_requests"] += 1
        parsed, problems = pipelines_spec.check(endpoint, body)
        self._note_received(endpoint, body, parsed)
        if problems:
            self.counters["spec_violations"] += 1
            self.by_rule.update(p.rule for p in problems)
            rules.extend(sorted({p.rule for p in problems}))
            over_limit = any(p.rule == "limit" for p in problems)
            if over_limit or not strict:  # documented: 200, and the request does not go through
                self.counters["dropped"] += 1
                return 200, {}, {}
            return _error(400, "; ".join(f"{p.where}: {p.message}" for p in problems[:5]))
        calls = parsed["batch"] if endpoint == "batch" else [{**parsed, "type": endpoint}]
        prefix = state.faults.reject_id_prefix
        if prefix and any(str(c.get("userId", "")).startswith(prefix) for c in calls):
            self.counters["rejected"] += 1
            return _error(400, "userId: this person cannot be processed")
        await self._slow_down()
        for call in calls:
            self._apply(call)
        return 200, {}, {}

    def _authorized(self, header: str) -> bool:
        """``Authorization: Basic base64(key + ":")``: a known key and an empty password."""
        scheme, _, encoded = header.partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        key, sep, password = decoded.partition(":")
        return scheme.lower() == "basic" and sep == ":" and password == "" and key in self.keys

    def _injected(self, status: int) -> Answer:
        if status == 429:
            self.state.counters["injected_429"] += 1
            return _error(
                429, "Too many requests", {"Retry-After": str(self.state.faults.retry_after_s)}
            )
        self.state.counters["injected_5xx"] += 1
        return _error(status, "Injected server error")

    async def _slow_down(self) -> None:
        if self.state.is_slow():
            self.state.counters["slow"] += 1
            await asyncio.sleep(self.state.faults.slow_s)

    def _note_received(self, endpoint: str, body: bytes, parsed: Any) -> None:
        if len(self.received) >= RECEIVED_MAX:
            return
        sizes = None
        if endpoint == "batch" and isinstance(parsed, dict):
            sizes = pipelines_spec.batch_call_sizes(body.decode("utf-8"))
        self.received.append({"endpoint": endpoint, "bytes": len(body), "call_bytes": sizes})

    def _apply(self, call: dict[str, Any]) -> None:
        """Change the shared data as Customer.io would for one valid call."""
        self.counters["calls_applied"] += 1
        person = str(call.get("userId") or call.get("anonymousId") or "")
        kind = call.get("type")
        if kind == "identify":
            self.state.apply(Op("identify", person, dict(call.get("traits") or {})))
        elif kind == "track" and call.get("event") in SEMANTIC_ACTIONS:
            self.state.apply(Op(SEMANTIC_ACTIONS[call["event"]], person))
        elif kind == "track":
            when = call.get("timestamp")
            stamp = int(datetime.fromisoformat(when).timestamp()) if when else None
            data = dict(call.get("properties") or {})
            self.state.apply(Op("event", person, data, call["event"], call.get("messageId"), stamp))
        else:  # page, screen, group, alias: valid, not modelled by the sandbox
            self.counters["calls_not_modelled"] += 1

    async def stats(self, request: Request) -> Response:
        counts = {name: self.counters[name] for name in STAT_NAMES}
        return JSONResponse({**counts, "violations_by_rule": dict(self.by_rule)})

    async def received_sizes(self, request: Request) -> Response:
        return JSONResponse(self.received)

    async def set_credentials(self, request: Request) -> Response:
        try:
            keys = loads_strict(await request.body()).get("keys")
        except (ValueError, AttributeError):
            keys = None
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            return JSONResponse({"error": "keys must be a list of non-empty strings"}, 400)
        self.keys = set(keys)
        return JSONResponse({"keys": len(self.keys)})

    async def reset(self, request: Request) -> Response:
        self.counters.clear()
        self.by_rule.clear()
        self.received.clear()
        self.state.reset()
        return JSONResponse({})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {"meta": {"errors": [message]}}, headers or {}


def pipelines_routes(state: SandboxState) -> list[Route]:
    """The routes to register before the Track API's catch-all (see ``routes.build_app``)."""
    api = PipelinesApi(state)
    return [
        Route("/_sandbox/pipelines/stats", api.stats, methods=["GET"]),
        Route("/_sandbox/pipelines/received", api.received_sizes, methods=["GET"]),
        Route("/_sandbox/pipelines/credentials", api.set_credentials, methods=["POST"]),
        Route("/_sandbox/pipelines/reset", api.reset, methods=["POST"]),
        Route("/v1/{endpoint}", api.handle, methods=["POST"]),
    ]


class PipelinesControl:
    """A small client for the ``/_sandbox/pipelines/`` routes of a running sandbox."""

    def __init__(self, base_url: str, verify: ssl.SSLContext, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, verify=verify, timeout=timeout_s)

    def stats(self) -> dict[str, Any]:
        """Counters: spec_violations, dropped, strict/lenient requests, calls_applied, ..."""
        response = self._http.get("/_sandbox/pipelines/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def received(self) -> list[dict[str, Any]]:
        """Each request as received: endpoint, bytes and (batches) the bytes of each call."""
        response = self._http.get("/_sandbox/pipelines/received")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def set_keys(self, keys: list[str]) -> None:
        """Replace the accepted source keys (rotation tests)."""
        self._http.post("/_sandbox/pipelines/credentials", json={"keys": keys}).raise_for_status()

    def reset(self) -> None:
        """Forget the Pipelines counters and, like ``/_sandbox/reset``, all data and stats."""
        self._http.post("/_sandbox/pipelines/reset", json={}).raise_for_status()

    def close(self) -> None:
        self._http.close()
