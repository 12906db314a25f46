"""Name the cause of a broker failure: authentication, TLS, out of memory, read-only, unreachable.

redis-py, kombu and Celery wrap one another's exceptions (``OperationalError`` from a
``ConnectionError`` from an ``SSLCertVerificationError``), and the application only ever saw
"did not answer". :func:`describe` walks the chain of causes and returns a short phrase that
says what is wrong and what to check, built only from exception classes and fixed texts: never
the exception's message, which may hold a URL with its password, a key or a payload.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

from redis import exceptions as rx

AUTHENTICATION = "authentication"
TLS = "tls"
OUT_OF_MEMORY = "out_of_memory"
READ_ONLY = "read_only"
UNREACHABLE = "unreachable"
OTHER = "other"

_ADVICE = {
    AUTHENTICATION: "refused the credentials (wrong user or password in CIOGUARD_BROKER_URL, "
    "or the user lacks a permission)",
    TLS: "failed TLS verification (its certificate is not trusted for that host name: set "
    "?ssl_ca_certs=/path/ca.pem on the rediss:// URL, or check the host name)",
    OUT_OF_MEMORY: "is out of memory (maxmemory reached with noeviction: the backlog is too "
    "large; raise maxmemory or let the workers drain the queue)",
    READ_ONLY: "is a read-only replica (point CIOGUARD_BROKER_URL at the master, or use "
    "sentinel:// so a failover is followed)",
    UNREACHABLE: "did not answer (check CIOGUARD_BROKER_URL and that Redis runs and is reachable)",
}

# Fixed texts Redis answers with, matched in the error text but never copied out of it.
_AUTH_MARKERS = ("WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "invalid username")
_TLS_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "Hostname mismatch")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
    # kombu keeps the original on ``.args[0]`` in some paths, too
    first = exc.args[0] if exc.args else None
    if isinstance(first, BaseException) and id(first) not in seen:
        yield from _chain(first)


def classify(exc: BaseException) -> str:
    """One of the module's constants for ``exc`` (or the first cause that says more)."""
    for cause in _chain(exc):
        text = str(cause)
        if isinstance(
            cause, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError
        ) or any(m in text for m in _AUTH_MARKERS):
            return AUTHENTICATION
        if isinstance(cause, ssl.SSLCertVerificationError) or any(m in text for m in _TLS_MARKERS):
            return TLS
        if isinstance(cause, rx.OutOfMemoryError) or text.startswith("OOM "):
            return OUT_OF_MEMORY
        if isinstance(cause, rx.ReadOnlyError) or text.startswith("READONLY"):
            return READ_ONLY
    for cause in _chain(exc):
        if isinstance(cause, rx.ConnectionError | rx.TimeoutError | OSError | TimeoutError):
            return UNREACHABLE
    return OTHER


def describe(exc: BaseException) -> str:
    """``"refused the credentials (...)"``, ``"is out of memory (...)"``, ... for a sentence
    that starts "the broker (CIOGUARD_BROKER_URL) ..."; carries the exception's class name."""
    kind = classify(exc)
    advice = _ADVICE.get(kind, "failed")
    return f"{advice} [{type(exc).__name__}]"
