"""Leak hunting: canary values, every surface dumped as text, and a search across them.

A *surface* is any place a value can rest or be shown: Redis keys, the audit database, Celery
``inspect`` answers, Flower pages and API, Sentry envelopes, log files, the requests that reached
the Customer.io stand-in. Each ``dump_*`` function returns ``{surface name: text}``, with encoded
layers expanded (kombu's base64 message bodies, JSON strings, gzip), so that a canary hidden one
encoding deep is still found. :func:`find_hits` then searches every text for every canary form.

Tests that use these must also prove the search can fail: plant a canary on purpose in each
surface type and check :func:`find_hits` reports it (see tests/e2e/test_canary.py).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
import secrets
import subprocess
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import redis
import sqlalchemy as sa
from celery import Celery

from cioguard.broker.celeryconf import build_celery
from cioguard.config import Settings
from cioguard.ops.flower import flower_command
from cioguard.sandbox.devstack import free_port

Surfaces = dict[str, str]
_B64 = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


# -- canaries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canary:
    """A unique value planted in a job; ``forms`` are the spellings searched for."""

    name: str
    value: str
    forms: tuple[str, ...]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, char in enumerate(reversed(body)):
        d = int(char)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card_number() -> str:
    """A random Luhn-valid 16-digit Visa-shaped number (never issued: random tail)."""
    body = "4" + "".join(secrets.choice("0123456789") for _ in range(14))
    return body + _luhn_digit(body)


def ssn() -> str:
    """A random SSN in an issued range (area 100-665, group 10-99, serial 1000-9999)."""
    area = 100 + secrets.randbelow(566)
    return f"{area:03d}-{10 + secrets.randbelow(90):02d}-{1000 + secrets.randbelow(9000):04d}"


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def plain_canary(name: str, prefix: str = "planted-") -> Canary:
    value = f"{prefix}{secrets.token_hex(8)}"
    return Canary(name, value, (value,))


def make_canaries(tag: str = "", *, person_prefix: str = "canary-person") -> dict[str, Canary]:
    """Fresh canaries of every kind; ``tag`` keeps several sets apart in one test."""
    hexed = secrets.token_hex(6)
    card, nested, free_ssn, own_ssn = card_number(), card_number(), ssn(), ssn()
    phone = "+1" + "".join(secrets.choice("23456789") for _ in range(10))
    values = {
        "person": f"{person_prefix}{tag}-{hexed}",
        "email": f"canary{tag}.{hexed}@example.test",
        "plan": f"canary-plan{tag}-{hexed}",
        "password": f"canary-pw{tag}-{hexed}",
        "card": f"{card[:4]} {card[4:8]} {card[8:12]} {card[12:]}",
        "nested_card": nested,
        "ssn": own_ssn,
        "note_ssn": free_ssn,
        "phone": phone,
    }
    forms: dict[str, tuple[str, ...]] = {
        "card": (values["card"], card),
        "ssn": (own_ssn, _digits(own_ssn)),
        "note_ssn": (free_ssn, _digits(free_ssn)),
        "phone": (phone, phone[1:]),
    }
    return {n: Canary(n, v, forms.get(n, (v,))) for n, v in values.items()}


def canary_attributes(c: Mapping[str, Canary]) -> dict[str, Any]:
    """Identify attributes carrying each canary under the key the default policy must catch."""
    return {
        "email": c["email"].value,
        "plan": c["plan"].value,
        "password": c["password"].value,
        "creditCard": c["card"].value,
        "ssn": c["ssn"].value,
        "phone": c["phone"].value,
        "profile": {"payment": {"cardNumber": c["nested_card"].value}, "tier": "gold"},
        "note": f"please call back about {c['note_ssn'].value} tomorrow",
    }


@dataclass(frozen=True)
class Hit:
    surface: str
    canary: str

    def __str__(self) -> str:
        return f"{self.canary} in {self.surface}"


def find_hits(surfaces: Mapping[str, str], canaries: Iterable[Canary]) -> list[Hit]:
    """Every (surface, canary) pair where one of the canary's forms occurs in the text."""
    canaries = list(canaries)
    return [
        Hit(name, c.name)
        for name, text in surfaces.items()
        for c in canaries
        if any(form in text for form in c.forms)
    ]


# -- decoding ------------------------------------------------------------------------------------


def expand(text: str, depth: int = 0) -> str:
    """``text`` plus the layers hidden in it: JSON string leaves, base64 that decodes to text."""
    if depth > 4:
        return text
    layers = [text]
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict | list):
        layers += [expand(leaf, depth + 1) for leaf in _string_leaves(parsed) if leaf != text]
    for candidate in _B64.findall(text):
        decoded = _b64_text(candidate)
        if decoded is not None and decoded != text:
            layers.append(expand(decoded, depth + 1))
    return "\n".join(layers)


def _string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _string_leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _string_leaves(v)


def _b64_text(candidate: str) -> str | None:
    padded = candidate + "=" * (-len(candidate) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(padded)
            return raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
    return None


def decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip" or body[:2] == b"\x1f\x8b":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


# -- surfaces ------------------------------------------------------------------------------------


def dump_redis(client: redis.Redis) -> Surfaces:
    """Every key of every type, with kombu message bodies decoded."""
    out: Surfaces = {}
    for raw_key in client.scan_iter(count=1000):
        key = raw_key.decode("utf-8", "backslashreplace")
        kind = client.type(raw_key).decode()
        values: list[bytes | str | float] = []
        if kind == "string":
            values = [client.get(raw_key) or b""]
        elif kind == "list":
            values = list(client.lrange(raw_key, 0, -1))
        elif kind == "hash":
            for field, value in client.hgetall(raw_key).items():
                values += [field, value]
        elif kind == "set":
            values = list(client.smembers(raw_key))
        elif kind == "zset":
            for member, score in client.zrange(raw_key, 0, -1, withscores=True):
                values += [member, score]
        elif kind == "stream":
            values = [json.dumps(client.xrange(raw_key), default=repr)]
        texts = [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
                 for v in values]  # fmt: skip
        out[f"redis:{kind}:{key}"] = "\n".join([key, *(expand(t) for t in texts)])
    return out


def dump_sql(url: str) -> Surfaces:
    """Every row of every table, every column, as text."""
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        out: Surfaces = {}
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                rows = conn.execute(sa.select(table)).all()
                out[f"sql:{table.name}"] = "\n".join(repr(tuple(r)) for r in rows)
        return out
    finally:
        engine.dispose()


def dump_inspect(app: Celery, destination: list[str] | None = None) -> Surfaces:
    """``celery inspect`` reserved / scheduled / active / revoked, as the CLI would print them."""
    inspect = app.control.inspect(destination=destination, timeout=2.0)
    out: Surfaces = {}
    for method in ("reserved", "scheduled", "active", "revoked"):
        answer = getattr(inspect, method)() or {}
        out[f"inspect:{method}"] = expand(json.dumps(answer, default=repr))
    return out


def inspect_has_scheduled(surfaces: Mapping[str, str]) -> bool:
    answer = json.loads(surfaces["inspect:scheduled"].split("\n", 1)[0])
    return any(answer.values())


def dump_logs(paths: Iterable[Path]) -> Surfaces:
    return {f"log:{p.name}": p.read_text(errors="backslashreplace") for p in paths if p.exists()}


def dump_sandbox_requests(records: Iterable[Mapping[str, Any]]) -> Surfaces:
    """One surface per request that reached the Customer.io stand-in (path and body)."""
    return {
        f"cio:{i}:{r['method']} {r['status']}": f"{r['path']}\n{r['body']}"
        for i, r in enumerate(records)
    }


# -- Sentry: a local ingest endpoint ---------------------------------------------------------------


class SentryCapture:
    """A tiny HTTP server that accepts Sentry envelopes (``/api/<project>/envelope/``).

    Use ``dsn`` as ``SENTRY_DSN`` in a worker's environment: the worker's real HTTP transport
    posts here. ``bodies`` holds each decompressed raw envelope.
    """

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = decompress(raw, self.headers.get("Content-Encoding"))
                if "/envelope/" in self.path or "/store/" in self.path:
                    with capture._lock:
                        capture.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self._server.server_address[1]}/1"

    def __enter__(self) -> SentryCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def items(self) -> list[tuple[dict[str, Any], dict[str, Any] | str]]:
        """(item header, parsed payload) for every envelope item received so far."""
        with self._lock:
            bodies = list(self.bodies)
        found: list[tuple[dict[str, Any], dict[str, Any] | str]] = []
        for body in bodies:
            lines = body.split(b"\n")
            i = 1
            while i + 1 < len(lines):
                header = json.loads(lines[i] or b"{}")
                payload = lines[i + 1].decode("utf-8", "backslashreplace")
                try:
                    found.append((header, json.loads(payload)))
                except ValueError:
                    found.append((header, payload))
                i += 2
        return found

    def events(self) -> list[dict[str, Any]]:
        return [p for h, p in self.items() if h.get("type") == "event" and isinstance(p, dict)]

    def dump(self) -> Surfaces:
        with self._lock:
            bodies = list(self.bodies)
        return {
            f"sentry:{i}": expand(b.decode("utf-8", "backslashreplace"))
            for i, b in enumerate(bodies)
        }


# -- Flower ----------------------------------------------------------------------------------------


class FlowerProcess:
    """Flower in a subprocess via :func:`cioguard.ops.flower.flower_command` (auth, read-only).

    It gets the broker URL and its own auth only: no payload key, hash key or credentials.
    """

    def __init__(self, broker_url: str, *, user: str, password: str,
                 log_path: Path | None = None) -> None:  # fmt: skip
        self.port = free_port()
        self.auth = (user, password)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CIOGUARD_", "CUSTOMERIO_", "FLOWER_", "SENTRY_"))
        }
        self.env = {**base, "CIOGUARD_BROKER_URL": broker_url,
                    "FLOWER_BASIC_AUTH": f"{user}:{password}"}  # fmt: skip
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, auth: bool = True) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth if auth else None, timeout=30)

    def start(self, timeout_s: float = 60) -> FlowerProcess:
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        out = self._log or subprocess.DEVNULL
        self._proc = subprocess.Popen(flower_command(port=self.port), env=self.env, stdout=out,
                                      stderr=out, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"flower exited with {self._proc.returncode}")
                try:
                    if client.get("/healthcheck").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise RuntimeError("flower did not answer /healthcheck in time")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> FlowerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def enable_events(settings: Settings, worker_name: str) -> None:
    """Switch task events on in a worker, as Flower does every few seconds, and wait for it.

    Control messages are handled in order, so the ping's answer means events are on.
    """
    control = build_celery(settings, "leaks-events")
    try:
        control.control.enable_events(destination=[worker_name])
        assert control.control.ping(destination=[worker_name], timeout=5)
    finally:
        control.close()


def datatable_query(length: int = 1000) -> dict[str, str | int]:
    """The query Flower's /tasks page sends for its task table."""
    return {"draw": 1, "start": 0, "length": length, "search[value]": "",
            "order[0][column]": 0, "order[0][dir]": "asc", "columns[0][data]": "name"}  # fmt: skip


def dump_flower(flower: FlowerProcess, worker_names: Iterable[str]) -> Surfaces:
    """Flower's API (tasks, every task's info, workers with refresh) and its UI pages."""
    out: Surfaces = {}
    with flower.client() as client:
        tasks = client.get("/api/tasks")
        out["flower:/api/tasks"] = expand(tasks.text)
        task_ids = list(tasks.json()) if tasks.status_code == 200 else []
        paths = ["/api/workers?refresh=1", "/api/task/types", "/", "/workers", "/tasks"]
        for name in worker_names:  # task lists (real args) only come with a worker name
            paths += [f"/api/workers?refresh=1&workername={name}", f"/worker/{name}"]
        for task_id in task_ids:
            paths += [f"/api/task/info/{task_id}", f"/task/{task_id}"]
        for path in paths:
            out[f"flower:{path}"] = expand(client.get(path).text)
        table = client.get("/tasks/datatable", params=datatable_query())
        out["flower:/tasks/datatable"] = expand(table.text)
    with flower.client(auth=False) as anonymous:  # Flower serves these without auth
        for path in ("/metrics", "/healthcheck"):
            out[f"flower:{path}"] = anonymous.get(path).text
    return out
