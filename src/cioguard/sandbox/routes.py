"""The sandbox's HTTP surface: the Track API routes (Basic auth, v1 person endpoints, region,
``/api/v2/batch``) and the ``/_sandbox/`` control routes, as one Starlette app over
:class:`~cioguard.sandbox.state.SandboxState`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cioguard.sandbox.pipelines import pipelines_routes
from cioguard.sandbox.state import SandboxState
from cioguard.sandbox.wire import (
    BATCH_MAX_BYTES,
    Op,
    Violation,
    check_op,
    loads_strict,
    parse_batch_op,
    parse_v1,
)

DEFAULT_SITE_ID = "sandbox-site"


DEFAULT_API_KEY = "sandbox-key"


REGIONS = ("eu", "us")


_V1_PERSON_ROUTES = {
    ("PUT", None): "identify",
    ("DELETE", None): "delete",
    ("POST", "events"): "event",
    ("POST", "suppress"): "suppress",
    ("POST", "unsuppress"): "unsuppress",
}


Answer = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class TrackRoute:
    """Which Track endpoint a request is for, with its percent-decoded person id."""

    endpoint: str
    person_id: str = ""


def match_route(method: str, raw_path: bytes) -> TrackRoute:
    """Route on the raw path so an id holding an encoded ``/`` stays one segment."""
    parts = raw_path.decode("latin-1").split("/")[1:]
    if method == "POST" and parts == ["api", "v2", "batch"]:
        return TrackRoute("batch")
    if method == "GET" and parts == ["api", "v1", "accounts", "region"]:
        return TrackRoute("region")
    if len(parts) in (4, 5) and parts[:3] == ["api", "v1", "customers"] and parts[3]:
        suffix = parts[4] if len(parts) == 5 else None
        endpoint = _V1_PERSON_ROUTES.get((method, suffix))
        if endpoint is not None:
            return TrackRoute(endpoint, unquote(parts[3]))
    return TrackRoute("unknown")


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


class TrackApi:
    """The Customer.io-shaped endpoints.

    Checks run in this order: route (404), strict rate bucket (429), latency, auth (401),
    injected 429/5xx, limits (400 or 207), slow delay, then the op is applied. The region check is
    exempt from injected faults and slowness so a worker's start-up credential check still works.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.state.note_arrival()
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        route = match_route(request.method, raw_path)
        status, payload, headers = await self._answer(request, route, body)
        self.state.record(request.method, request.url.path, route.endpoint, status, body)
        return JSONResponse(payload, status, headers)

    async def _answer(self, request: Request, route: TrackRoute, body: bytes) -> Answer:
        state = self.state
        if route.endpoint == "unknown":
            return _error(404, "Not found")
        if not state.take_token():
            state.counters["over_limit"] += 1
            return _error(429, "Too many requests", {"Retry-After": "1"})
        if state.faults.latency_ms:
            await asyncio.sleep(state.faults.latency_ms / 1000)
        credentials = basic_credentials(request.headers.get("authorization", ""))
        if credentials is None or not state.is_authorized(*credentials):
            state.counters["unauthorized"] += 1
            return _error(401, "Unauthorized request")
        if route.endpoint == "region":
            return 200, self._region(request), {}
        failure = state.pick_failure()
        if failure is not None:
            return self._injected(failure)
        if route.endpoint == "batch":
            return await self._batch(body)
        return await self._v1(route, body)

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

    def _checked(self, parsed: Op | Violation) -> Op | Violation:
        """The parsed op, or why it is refused (parse error, limit, poisoned id)."""
        if isinstance(parsed, Violation):
            return parsed
        return check_op(parsed, self.state.faults.reject_id_prefix) or parsed

    async def _v1(self, route: TrackRoute, body: bytes) -> Answer:
        op = self._checked(parse_v1(route.endpoint, route.person_id, body))
        if isinstance(op, Violation):
            return _error(400, op.message)
        await self._slow_down()
        self.state.apply(op)
        return 200, {}, {}

    async def _batch(self, body: bytes) -> Answer:
        if len(body) > BATCH_MAX_BYTES:
            return _error(400, f"the batch is larger than {BATCH_MAX_BYTES} bytes")
        entries = _batch_entries(body)
        if entries is None:
            return _error(400, "the body must be an object with a non-empty batch array")
        ops: list[Op] = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(entries):
            op = self._checked(parse_batch_op(raw))
            if isinstance(op, Violation):
                errors.append({"batch_index": index, **dataclasses.asdict(op)})
            else:
                ops.append(op)
        await self._slow_down()
        for op in ops:
            self.state.apply(op)
        self.state.counters["batch_ops_applied"] += len(ops)
        self.state.counters["batch_ops_rejected"] += len(errors)
        return (207, {"errors": errors}, {}) if errors else (200, {}, {})


def _batch_entries(body: bytes) -> list[Any] | None:
    """The ``batch`` array of a v2 body, or ``None`` when the whole request must be refused."""
    try:
        parsed = loads_strict(body)
    except ValueError:
        return None
    entries = parsed.get("batch") if isinstance(parsed, dict) else None
    return entries if isinstance(entries, list) and entries else None


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
        attributes = self.state.people.get(request.path_params["person_id"])
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
        Route("/_sandbox/events", control.events, methods=["GET"]),
        Route("/_sandbox/requests", control.requests, methods=["GET"]),
        Route("/_sandbox/event-ids", control.event_ids, methods=["GET"]),
        *pipelines_routes(state),  # the Pipelines API (/v1/...) on the same state
        Route("/{path:path}", track.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes)
