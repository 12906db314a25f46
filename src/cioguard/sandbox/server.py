"""A local stand-in for the Customer.io Track API, over TLS, with fault injection and stats.

Tests, the demo, benchmarks and local development point the real worker (or the official
``customerio`` package) at it. From the client's side it answers like Customer.io: Basic auth,
the v1 person endpoints, ``GET /api/v1/accounts/region`` and ``POST /api/v2/batch``, with the
documented limits (see ``sandbox_state``). Under ``/_sandbox/`` (no auth: a local tool) it offers
``stats``, ``config``, ``credentials``, ``reset``, ``people/{id}``, ``events?person=``,
``event-ids`` and ``requests`` so tests can inject faults and check what reached "Customer.io".

Run it with :class:`SandboxServer` (a subprocess, for tests), :func:`serve` (foreground) or
``python -m cioguard.sandbox.server --help``.

Warning: request bodies carry canary PII in tests. Uvicorn runs at ``warning`` level with no
access log and the sandbox never logs a body; only ``/_sandbox/requests`` returns them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import quote, unquote

import httpx
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cioguard.sandbox.state import (
    BATCH_MAX_BYTES,
    FaultConfig,
    Op,
    RequestRecord,
    SandboxState,
    Violation,
    check_op,
    loads_strict,
    parse_batch_op,
    parse_v1,
)

DEFAULT_SITE_ID = "sandbox-site"
DEFAULT_API_KEY = "sandbox-key"
REGIONS = ("eu", "us")
_READY_LINE = re.compile(r"sandbox listening on https://(?P<host>\S+):(?P<port>\d+) ca=(?P<ca>.+)")
_V1_PERSON_ROUTES = {
    ("PUT", None): "identify",
    ("DELETE", None): "delete",
    ("POST", "events"): "event",
    ("POST", "suppress"): "suppress",
    ("POST", "unsuppress"): "unsuppress",
}
_FAULT_FLAGS: dict[str, tuple[str, type]] = {
    "fail_5xx_ratio": ("--fail-5xx", float),
    "fail_429_ratio": ("--fail-429", float),
    "retry_after_s": ("--retry-after", int),
    "latency_ms": ("--latency-ms", float),
    "slow_ratio": ("--slow-ratio", float),
    "slow_s": ("--slow-s", float),
    "reject_id_prefix": ("--reject-id-prefix", str),
    "strict_rate_per_s": ("--strict-rate", float),
    "strict_burst": ("--strict-burst", int),
    "seed": ("--seed", int),
}

Answer = tuple[int, Any, dict[str, str]]


class SandboxStartError(RuntimeError):
    """The sandbox subprocess died or did not answer in time; the message has its stderr tail."""


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
        Route("/{path:path}", track.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes)


def _cert_names(host: str) -> list[str]:
    """Names the server certificate is valid for: loopback always, plus a specific bind host."""
    names = ["127.0.0.1", "localhost"]
    if host not in {*names, "0.0.0.0", "::", ""}:
        names.append(host)
    return names


def _ssl_factory(
    cert: trustme.LeafCert,
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """Build the server context in memory, so the private key never sits in a file we keep."""

    def factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        context.set_alpn_protocols(["http/1.1"])
        return context

    return factory


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose ``proto`` is ``IPPROTO_TCP``.

    Why not ``socket.create_server``: it leaves ``proto`` at 0, and asyncio then skips
    ``TCP_NODELAY`` on accepted connections; with TLS each response goes out as two records and
    Nagle plus delayed ACK adds ~40 ms to every keep-alive request.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Uvicorn re-raises SIGTERM after its graceful shutdown; exit cleanly so ``with`` blocks
    (the temporary CA directory) still run instead of the default handler killing the process.
    """
    raise SystemExit(0)


@contextlib.contextmanager
def _ca_file(ca_path: str | Path | None) -> Iterator[Path]:
    """``ca_path``, or a file in a temporary directory removed when the sandbox stops."""
    if ca_path:
        yield Path(ca_path)
        return
    with tempfile.TemporaryDirectory(prefix="cioguard-sandbox-") as tmp:
        yield Path(tmp) / "sandbox-ca.pem"


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    site_id: str = DEFAULT_SITE_ID,
    api_key: str = DEFAULT_API_KEY,
    ca_path: str | Path | None = None,
    region: str = "us",
    **faults: Any,
) -> None:
    """Run the sandbox in the foreground until SIGINT/SIGTERM.

    ``port=0`` picks a free port. The CA PEM goes to ``ca_path`` (default: a temporary dir that
    is removed on exit). Prints ``sandbox listening on https://HOST:PORT ca=PATH`` once the
    socket listens. ``faults`` are :class:`FaultConfig` fields; a bad one raises ``ValueError``.

    Note: in the main thread it installs a SIGTERM handler that exits via ``SystemExit`` so the
    temporary CA directory is removed; call it from a dedicated process, not a host application.
    """
    if region not in REGIONS:
        raise ValueError("region must be 'us' or 'eu'")
    state = SandboxState([(site_id, api_key)], FaultConfig().updated(faults), region)
    ca = trustme.CA()
    cert = ca.issue_cert(*_cert_names(host))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with _ca_file(ca_path) as ca_file:
        ca.cert_pem.write_to_path(str(ca_file))
        sock = _listen(host, port)
        config = uvicorn.Config(
            build_app(state),
            host=host,
            port=sock.getsockname()[1],
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
            ssl_context_factory=_ssl_factory(cert),
        )
        print(f"sandbox listening on https://{host}:{config.port} ca={ca_file}", flush=True)
        uvicorn.Server(config).run(sockets=[sock])


class SandboxControl:
    """A small typed client for the ``/_sandbox/`` endpoints of a running sandbox."""

    def __init__(self, base_url: str, verify: ssl.SSLContext, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, verify=verify, timeout=timeout_s)

    def _get(self, path: str, **params: str) -> Any:
        response = self._http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, payload: Any) -> Any:
        response = self._http.post(path, json=payload)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """Counters, see ``SandboxState.stats``."""
        result: dict[str, Any] = self._get("/_sandbox/stats")
        return result

    def configure(self, **faults: Any) -> dict[str, Any]:
        """Change some fault settings; returns all of them. Unknown/bad values raise HTTP 400."""
        result: dict[str, Any] = self._post("/_sandbox/config", faults)
        return result

    def set_credentials(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Replace the accepted ``(site_id, api_key)`` pairs (key-rotation tests)."""
        self._post("/_sandbox/credentials", {"pairs": [list(pair) for pair in pairs]})

    def reset(self) -> None:
        """Forget people, events, requests and stats; faults and credentials stay."""
        self._post("/_sandbox/reset", {})

    def requests(self, since: int = 0) -> list[RequestRecord]:
        """Track requests received so far (from index ``since``), bodies as text."""
        result: list[RequestRecord] = self._get("/_sandbox/requests", since=str(since))
        return result

    def person(self, person_id: str) -> dict[str, Any] | None:
        """The person's attributes, or ``None`` if there is no such person."""
        response = self._http.get(f"/_sandbox/people/{quote(person_id, safe='')}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def events(self, person: str | None = None) -> list[dict[str, Any]]:
        """Stored events of ``person``, or of everyone (each with ``person``) when ``None``."""
        params = {} if person is None else {"person": person}
        result: list[dict[str, Any]] = self._get("/_sandbox/events", **params)
        return result

    def event_ids(self) -> set[str]:
        """Ids of every event accepted so far, also of people deleted since (their events are
        gone from :meth:`events`, but Customer.io did receive them)."""
        result: list[str] = self._get("/_sandbox/event-ids")
        return set(result)

    def close(self) -> None:
        self._http.close()


class SandboxServer:
    """Runs the sandbox in a subprocess for the duration of a ``with`` block.

    ``port=None`` lets the subprocess pick a free port (read back from its ready line, so no
    race). ``faults`` are :class:`FaultConfig` fields. Note: the API key is passed on the
    subprocess command line; use sandbox-only keys.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        site_id: str = DEFAULT_SITE_ID,
        api_key: str = DEFAULT_API_KEY,
        ca_path: str | Path | None = None,
        region: str = "us",
        startup_timeout_s: float = 15.0,
        **faults: Any,
    ) -> None:
        FaultConfig().updated(faults)
        self.host, self.site_id, self.api_key, self.region = host, site_id, api_key, region
        self._requested_port = port or 0
        self._given_ca_path = Path(ca_path) if ca_path else None
        self._ca_path: Path | None = None
        self._faults = faults
        self._startup_timeout_s = startup_timeout_s
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._control: SandboxControl | None = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        if self._ca_path is None:
            raise RuntimeError("the sandbox is not running")
        return self._ca_path

    @property
    def control(self) -> SandboxControl:
        if self._control is None:
            raise RuntimeError("the sandbox is not running")
        return self._control

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the sandbox CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def client(self, auth: tuple[str, str] | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for the Track API, with the sandbox's own credentials by default."""
        auth = auth or (self.site_id, self.api_key)
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), auth=auth, **kwargs)

    def start(self) -> None:
        """Start the subprocess and wait until it answers over TLS; stops it on failure."""
        self._tmp = Path(tempfile.mkdtemp(prefix="cioguard-sandbox-"))
        self._ca_path = self._given_ca_path or self._tmp / "sandbox-ca.pem"
        with (self._tmp / "stdout").open("wb") as out, (self._tmp / "stderr").open("wb") as err:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_child_env()
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _command(self) -> list[str]:
        args = [sys.executable, "-m", "cioguard.sandbox.server", "--host", self.host]
        args += ["--port", str(self._requested_port), "--site-id", self.site_id]
        args += ["--api-key", self.api_key, "--ca-file", str(self._ca_path)]
        args += ["--region", self.region]
        for name, value in self._faults.items():
            if value is not None:
                args.append(f"{_FAULT_FLAGS[name][0]}={value}")
        return args

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise SandboxStartError(f"sandbox exited with {code}: {self._stderr_tail()}")
            self._port = self._port or self._ready_port()
            if self._port is not None and self._answers():
                self._control = SandboxControl(self.url, self.ssl_context())
                return
            time.sleep(0.05)
        raise SandboxStartError(
            f"sandbox did not answer within {self._startup_timeout_s}s: {self._stderr_tail()}"
        )

    def _ready_port(self) -> int | None:
        assert self._tmp is not None
        match = _READY_LINE.search((self._tmp / "stdout").read_text(errors="replace"))
        return int(match["port"]) if match else None

    def _answers(self) -> bool:
        try:
            response = httpx.get(
                f"{self.url}/_sandbox/stats", verify=self.ssl_context(), timeout=1.0
            )
        except (httpx.HTTPError, OSError, ssl.SSLError):
            return False
        return response.status_code == 200

    def _stderr_tail(self, max_chars: int = 2000) -> str:
        assert self._tmp is not None
        text = (self._tmp / "stderr").read_text(errors="replace")
        return text[-max_chars:].strip() or "(no stderr)"

    def stop(self) -> None:
        """Terminate the subprocess (kill after 5 s) and remove its temporary files."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._port = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _child_env() -> dict[str, str]:
    """The environment, with this package's root first on the path so the child runs this copy."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def build_parser() -> argparse.ArgumentParser:
    """The CLI flags of ``python -m cioguard.sandbox.server`` (also usable by ``cioguard
    sandbox``)."""
    parser = argparse.ArgumentParser(
        prog="python -m cioguard.sandbox.server",
        description="Local TLS stand-in for Customer.io Track.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--site-id", default=DEFAULT_SITE_ID)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--ca-file", default=None, help="where to write the CA PEM")
    parser.add_argument("--region", choices=REGIONS, default="us")
    for name, (flag, kind) in _FAULT_FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags and :func:`serve`; unset fault flags keep their defaults."""
    args = vars(build_parser().parse_args(argv))
    given = {name: args.pop(name) for name in _FAULT_FLAGS}
    faults = {name: value for name, value in given.items() if value is not None}
    try:
        serve(
            args["host"],
            args["port"],
            site_id=args["site_id"],
            api_key=args["api_key"],
            ca_path=args["ca_file"],
            region=args["region"],
            **faults,
        )
    except ValueError as exc:
        sys.exit(f"sandbox: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
