"""A local stand-in for the Customer.io Track API, over TLS, with fault injection and stats.

Tests, the demo, benchmarks and local development point the real worker (or the official
``customerio`` package) at it. From the client's side it answers like Customer.io: Basic auth,
the v1 person endpoints, ``GET /api/v1/accounts/region``, ``POST /api/v2/batch`` and
``POST /api/v2/entity``. Every request is checked against Customer.io's published OpenAPI spec
and its limits on the bytes received (:mod:`cioguard.sandbox.conformance`, docs/sandbox.md);
violations are answered as Customer.io documents and counted in ``stats``. Under
``/_sandbox/`` (no auth: a local tool) it offers ``stats``, ``config``, ``credentials``,
``reset``, ``people/{id}``, ``events?person=``, ``event-ids`` and ``requests`` so tests can inject
faults and check what reached "Customer.io".

Run it with :class:`SandboxServer` (a subprocess, for tests), :func:`serve` (foreground) or
``python -m cioguard.sandbox.server --help``.

Warning: request bodies carry canary PII in tests. Uvicorn runs at ``warning`` level with no
access log and the sandbox never logs a body; only ``/_sandbox/requests`` returns them.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import trustme
import uvicorn

from cioguard.sandbox.client import (
    FAULT_FLAGS,
)
from cioguard.sandbox.routes import (
    DEFAULT_API_KEY,
    DEFAULT_SITE_ID,
    REGIONS,
    build_app,
)
from cioguard.sandbox.state import FaultConfig, SandboxState


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
    for name, (flag, kind) in FAULT_FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags and :func:`serve`; unset fault flags keep their defaults."""
    args = vars(build_parser().parse_args(argv))
    given = {name: args.pop(name) for name in FAULT_FLAGS}
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
