"""The sandbox's HTTP surface: the Track API routes (Basic auth, v1 person endpoints, region,
``/api/v2/batch`` and ``/api/v2/entity``), each request checked against Customer.io's published
spec first, and the ``/_sandbox/`` control routes, as one Starlette app over
:class:`~cioguard.sandbox.state.SandboxState`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cioguard.sandbox import conformance
from cioguard.sandbox.state import SandboxState
from cioguard.sandbox.wire import Checked, Op, loads_strict, poisoned, v1_op, v2_op

DEFAULT_SITE_ID = "sandbox-site"


DEFAULT_API_KEY = "sandbox-key"


REGIONS = ("eu", "us")


Answer = tuple[int, Any, dict[str, str]]


def match_route(method: str, raw_path: bytes) -> Checked:
    """Which Track endpoint a request is for (``unknown`` if none), its id percent-decoded.

    Routes on the raw path so an id holding an encoded ``/`` stays one segment.
    """
    checked = conformance.check(method, raw_path, b"", {"authorization": "Basic Og=="}, b"")
    return Checked(checked.endpoint, checked.person_id)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(site_id, api_key)`` from an ``Authorization: Basic`` header, or ``None``."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    site_id, sep, api_key = decoded.partition(":")
    return (site_id, api_key) if sep else None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {"meta": {"error": message}}, headers or {}


def _refused(checked: Checked) -> Answer:
    """A request the spec refuses, answered as Customer.io documents: v1 ``{"meta": {"errors":
    [...]}}``, v2 ``{"errors": [{reason, field, message}]}``, 401 and 404 as for any request."""
    if checked.status in (401, 404):
        return _error(checked.status, checked.violations[0].message)
    if checked.endpoint in {"batch", "entity"}:
        return checked.status, {"errors": [dataclasses.asdict(v) for v in checked.violations]}, {}
    return checked.status, {"meta": {"errors": [v.message for v in checked.violations]}}, {}


class TrackApi:
    """The Customer.io-shaped endpoints.

    Every request is first checked against the published spec
    (:func:`cioguard.sandbox.conformance.check`) and its violations counted, whatever the answer.
    Then, in this order: route (404), strict rate bucket (429), latency, auth (401), injected
    429/5xx, spec violations (400 or 207), slow delay, then the op is applied. The region check is
    exempt from injected faults and slowness so a worker's start-up credential check still works.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.state.note_arrival()
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        checked = conformance.check(request.method, raw_path, query, request.headers, body)
        self.state.note_violations(checked.codes())
        status, payload, headers = await self._answer(request, checked)
        self.state.record(
            request.method, request.url.path, checked.endpoint, status, body, checked.codes()
        )
        return JSONResponse(payload, status, headers)

    async def _answer(self, request: Request, checked: Checked) -> Answer:
        state = self.state
        if checked.endpoint == "unknown":
            return _refused(checked)
        if not state.take_token():
            state.counters["over_limit"] += 1
            return _error(429, "Too many requests", {"Retry-After": "1"})
        if state.faults.latency_ms:
            await asyncio.sleep(state.faults.latency_ms / 1000)
        credentials = basic_credentials(request.headers.get("authorization", ""))
        if credentials is None or not state.is_authorized(*credentials):
            state.counters["unauthorized"] += 1
            return _error(401, "Unauthorized request")
        if checked.endpoint == "region":
            return 200, self._region(request), {}
        failure = state.pick_failure()
        if failure is not None:
            return self._injected(failure)
        if checked.violations:
            return _refused(checked)
        if checked.endpoint == "batch":
            return await self._batch(checked)
        op = v2_op(checked.body) if checked.endpoint == "entity" else None
        return await self._single(checked, op)

    def _region(self, request: Request) -> dict[str, Any]:
        """Points back at the sandbox itself, so a client that follows ``url`` stays local."""
        own_url = f"{request.url.scheme}://{request.url.netloc}"
        return {"url": own_url, "region": self.state.region, "environment_id": 1}

    def _injected(self, status: int) -> Answer:
        if status == 429:
            self.state.counters["injected_429"] += 1
            retry_after = {"Retry-After": str(self.state.faults.retry_after_s)}
            return _error(429, "Too many requests", retry_after)
        self.state.counters["injected_5xx"] += 1
        return _error(status, "Injected server error")

    async def _slow_down(self) -> None:
        """The "slow but succeeds" fault: the op is applied after this delay, not dropped."""
        if self.state.is_slow():
            self.state.counters["slow"] += 1
            await asyncio.sleep(self.state.faults.slow_s)

    async def _single(self, checked: Checked, op: Op | None) -> Answer:
        """A v1 call or a v2 entity: one valid operation, unless the person is poisoned."""
        op = op or v1_op(checked.endpoint, checked.person_id, checked.body)
        poison = poisoned(op, self.state.faults.reject_id_prefix)
        if poison is not None:
            if checked.endpoint == "entity":
                return 400, {"errors": [dataclasses.asdict(poison)]}, {}
            return 400, {"meta": {"errors": [poison.message]}}, {}
        await self._slow_down()
        self.state.apply(op)
        return 200, {}, {}

    async def _batch(self, checked: Checked) -> Answer:
        ops: list[Op] = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(checked.body["batch"]):
            found = checked.op_violations.get(index)
            op = None if found else v2_op(raw)
            poison = poisoned(op, self.state.faults.reject_id_prefix) if op else None
            refused = found or ([poison] if poison is not None else [])
            for violation in refused:
                errors.append({"batch_index": index, **dataclasses.asdict(violation)})
            if op is not None and not refused:
                ops.append(op)
        await self._slow_down()
        for op in ops:
            self.state.apply(op)
        self.state.counters["batch_ops_applied"] += len(ops)
        self.state.counters["batch_ops_rejected"] += len({e["batch_index"] for e in errors})
        return (207, {"errors": errors}, {}) if errors else (200, {}, {})


class ControlApi:
    """The ``/_sandbox/`` endpoints: read stats and data, change faults and credentials."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats())

    async def get_config(self, request: Request) -> Response:
        return JSONResponse(self.state.faults.as_dict())

    async def set_config(self, request: Request) -> Response:
        changes = await _json_object(request)
        try:
            faults = self.state.configure(changes or {})
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(faults.as_dict())

    async def set_credentials(self, request: Request) -> Response:
        pairs = _credential_pairs((await _json_object(request) or {}).get("pairs"))
        if pairs is None:
            return JSONResponse({"error": "pairs must be a list of [site_id, api_key]"}, 400)
        self.state.credentials = pairs
        return JSONResponse({"pairs": len(pairs)})

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({})

    async def person(self, request: Request) -> Response:
        # ?id= as well as the path: ids such as "." or ".." cannot travel in a path
        person_id = request.query_params.get("id") or request.path_params.get("person_id", "")
        attributes = self.state.people.get(person_id)
        if attributes is None:
            return JSONResponse({"error": "no such person"}, 404)
        return JSONResponse(attributes)

    async def events(self, request: Request) -> Response:
        person = request.query_params.get("person")
        if person is None:
            return JSONResponse(self.state.all_events())
        return JSONResponse(self.state.events.get(person, []))

    async def event_ids(self, request: Request) -> Response:
        return JSONResponse(sorted(self.state.event_ids))

    async def requests(self, request: Request) -> Response:
        since = request.query_params.get("since", "0")
        start = int(since) if since.isdigit() else 0
        return JSONResponse(self.state.log[start:])


def _credential_pairs(raw: Any) -> set[tuple[str, str]] | None:
    """``{(site_id, api_key), ...}`` from ``[[site, key], ...]``, or ``None`` if malformed."""
    if not isinstance(raw, list):
        return None
    pairs = set()
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2:
            return None
        site_id, api_key = pair
        if not isinstance(site_id, str) or not isinstance(api_key, str):
            return None
        pairs.add((site_id, api_key))
    return pairs


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        parsed = loads_strict(await request.body())
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def build_app(state: SandboxState) -> Starlette:
    """The ASGI app: control routes first, then every other path goes to the Track API."""
    control, track = ControlApi(state), TrackApi(state)
    routes = [
        Route("/_sandbox/stats", control.stats, methods=["GET"]),
        Route("/_sandbox/config", control.get_config, methods=["GET"]),
        Route("/_sandbox/config", control.set_config, methods=["POST"]),
        Route("/_sandbox/credentials", control.set_credentials, methods=["POST"]),
        Route("/_sandbox/reset", control.reset, methods=["POST"]),
        Route("/_sandbox/people/{person_id:path}", control.person, methods=["GET"]),
        Route("/_sandbox/person", control.person, methods=["GET"]),
        Route("/_sandbox/events", control.events, methods=["GET"]),
        Route("/_sandbox/requests", control.requests, methods=["GET"]),
        Route("/_sandbox/event-ids", control.event_ids, methods=["GET"]),
        Route("/{path:path}", track.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes)
