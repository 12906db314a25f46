"""The shared stack of every benchmark: a private Redis, the TLS sandbox, workers, a producer.

Each benchmark runs against real parts only (celery-pitfalls.md: ``memory://`` hides what costs
time): a private ``redis-server`` on a free port, the TLS Track API stand-in in its own process,
``cioguard worker`` subprocesses (or the bare Celery app of :mod:`bench.bare_app`) and the
application-side :class:`~cioguard.producer.api.Producer`. Completion is counted where the tests
count
it: final audit rows (or, for the bare baseline, requests the sandbox answered with a 2xx).

A benchmark calls :meth:`Stack.phase` before each measured phase: workers stopped, the private
Redis flushed, the sandbox reset and configured, a fresh audit store: a SQLite file, or after
:meth:`Stack.use_audit` ``("postgres")`` a new PostgreSQL database on ``BENCH_PG_URL``'s server
(dropped again when the stack closes). So phases never see each other's jobs, tokens or rows.

Note:
    Timings on a shared 2-core machine move with the load; every result records
    ``os.getloadavg()`` before and after, and a benchmark is only ever read as ratios of figures
    measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from cioguard.audit.schema import audit_log
from cioguard.audit.store import AuditStore
from cioguard.broker.celeryconf import QUEUE, build_celery
from cioguard.broker.envelope import new_key
from cioguard.config import Settings
from cioguard.producer.api import Producer
from cioguard.sandbox.client import SandboxControl, SandboxServer
from cioguard.sandbox.devstack import RedisServer, WorkerProcess

COMMITTED_RESULTS = Path(__file__).resolve().parent / "results"
UNLIMITED_RATE = "1000000"
PG_ADMIN_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)  # a server where the benchmark may create and drop its own databases
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def quick() -> bool:
    """Smoke-run sizes: ``--quick`` on the command line or ``BENCH_QUICK=1``."""
    return "--quick" in sys.argv or os.environ.get("BENCH_QUICK", "") not in ("", "0")


def sized(full: int, small: int) -> int:
    """``full`` normally, ``small`` in a quick run."""
    return small if quick() else full


def attributes(i: int) -> dict[str, Any]:
    """A realistic 10-attribute identify payload (e-mail and phone are hashed by the policy)."""
    return {
        "email": f"person{i}@example.com",
        "first_name": "Ada",
        "last_name": f"Lovelace{i}",
        "plan": "pro" if i % 3 else "free",
        "created_at": 1_700_000_000 + i,
        "country": "GB",
        "language": "en",
        "orders": i % 17,
        "lifetime_value": round(i * 1.37, 2),
        "newsletter": bool(i % 2),
    }


def machine() -> dict[str, Any]:
    """Where and when the figures were measured."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick(),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields)`` of every live process, ``fields`` being ``/proc/<pid>/stat`` after the
    command name: ``fields[2]`` is the process group, ``fields[11:13]`` user and system ticks."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                yield int(entry.name), fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked


def process_group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in group ``pgid`` (worker + pool)."""
    ticks = sum(int(f[11]) + int(f[12]) for _, f in process_stats() if int(f[2]) == pgid)
    return ticks / _CLK_TCK


def children_cpu_s(name_part: str) -> float:
    """CPU seconds of this process's direct children whose command line has ``name_part``."""
    total = 0
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == me and name_part in cmdline:
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class StatsSampler:
    """Polls the sandbox's counters in a thread, for requests-per-second-over-time plots.

    Uses its own control client (the main thread's one is not shared across threads).
    """

    sandbox: SandboxServer
    interval_s: float = 0.2
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StatsSampler:
        control = SandboxControl(self.sandbox.url, self.sandbox.ssl_context())
        t0 = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                stats = control.stats()
                ok = sum(n for s, n in stats["by_status"].items() if s.startswith("2"))
                self.samples.append({
                    "t": time.monotonic() - t0, "sent": stats["requests_total"], "ok": ok,
                    "over_limit": stats["over_limit"],
                })  # fmt: skip
                self._stop.wait(self.interval_s)
            control.close()

        self._thread = threading.Thread(target=run, name="stats-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def per_second(self, key: str) -> list[tuple[float, float]]:
        """``(t, rate)`` of counter ``key`` in 1 s steps, from the first sample with traffic."""
        if not self.samples:
            return []
        first = next((s for s in self.samples if s["sent"] > 0), self.samples[0])
        series: list[tuple[float, float]] = []
        prev = {"t": first["t"] - self.interval_s, key: 0}
        for sample in self.samples:
            if sample["t"] < first["t"]:
                continue
            if sample["t"] - prev["t"] >= 1.0:
                rate = (sample[key] - prev[key]) / (sample["t"] - prev["t"])
                series.append((round(sample["t"] - first["t"], 2), round(rate, 1)))
                prev = sample
        return series


class Stack:
    """Private Redis + sandbox for the duration of a ``with`` block; workers per phase."""

    def __init__(self, **sandbox_faults: Any) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="cioguard-bench-"))
        self.redis = RedisServer()
        self.sandbox = SandboxServer(ca_path=self.tmp / "ca.pem", **sandbox_faults)
        self.workers: list[WorkerProcess] = []
        self._phase = 0
        self.audit_url = ""
        self.audit_kind = "sqlite"
        self._databases: list[str] = []

    def __enter__(self) -> Stack:
        self.redis.start()
        self.sandbox.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_workers()
        self._drop_databases()
        self.sandbox.stop()
        self.redis.stop()
        shutil.rmtree(self.redis.data_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- per phase ---------------------------------------------------------------------------

    def phase(self, **faults: Any) -> None:
        """Stop workers, flush the private Redis, reset the sandbox, start a new audit file."""
        self.stop_workers()
        client = redis.Redis.from_url(self.redis.url)
        client.flushall()  # the private server of this benchmark, never the shared one
        client.close()
        control = self.sandbox.control
        control.configure(**{"strict_rate_per_s": None, "strict_burst": None, **faults})
        control.reset()
        self._phase += 1
        if self.audit_kind == "postgres":
            self.audit_url = self._new_database(f"cioguard_bench_{os.getpid()}_{self._phase}")
        else:
            self.audit_url = f"sqlite:///{self.tmp / f'audit-{self._phase}.db'}"

    def use_audit(self, kind: str) -> None:
        """``"sqlite"`` (the default) or ``"postgres"`` for the audit store of later phases."""
        if kind not in {"sqlite", "postgres"}:
            raise ValueError(f"unknown audit store kind {kind!r}: use sqlite or postgres")
        self.audit_kind = kind

    def _new_database(self, name: str) -> str:
        """Create database ``name`` on the PostgreSQL server; returns its URL."""
        self._drop_databases()  # the previous phase's: its workers are stopped
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        self._databases.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def _drop_databases(self) -> None:
        if not self._databases:
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                for name in self._databases:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
        self._databases = []

    def env(self, **overrides: Any) -> dict[str, str]:
        """The worker/producer environment (as tests/conftest.py's ``env``), plus overrides."""
        base = {
            "CIOGUARD_BROKER_URL": self.redis.url,
            "CIOGUARD_AUDIT_URL": self.audit_url,
            "CIOGUARD_HASH_KEY": self._hash_key,
            "CIOGUARD_PAYLOAD_KEY": self._payload_key,
            "CIOGUARD_TRACK_URL": self.sandbox.url,
            "CIOGUARD_CA_BUNDLE": str(self.sandbox.ca_path),
            "CUSTOMERIO_SITE_ID": self.sandbox.site_id,
            "CUSTOMERIO_TRACK_API_KEY": self.sandbox.api_key,
            "CIOGUARD_RATE_LIMIT": UNLIMITED_RATE,
            "CIOGUARD_LOG_FORMAT": "json",
            "CIOGUARD_SECRETS": "env",
            "CIOGUARD_BATCH": "0",
        }
        return {**base, **{k: str(v) for k, v in overrides.items()}}

    @property
    def _hash_key(self) -> str:
        if not hasattr(self, "_hk"):
            self._hk = secrets.token_urlsafe(48)
        return self._hk

    @property
    def _payload_key(self) -> str:
        if not hasattr(self, "_pk"):
            self._pk = new_key()
        return self._pk

    def start_workers(
        self,
        env: Mapping[str, str],
        *,
        nodes: int = 1,
        concurrency: int = 2,
        factory: Callable[..., WorkerProcess] = WorkerProcess,
    ) -> list[WorkerProcess]:
        """Start ``nodes`` worker nodes of ``concurrency`` processes, each with its own name."""
        started = []
        for n in range(nodes):
            name = f"bench{self._phase}n{n}-{os.getpid()}@127.0.0.1"
            log = self.tmp / f"worker-{self._phase}-{n}.log"
            worker = factory(dict(env), concurrency=concurrency, name=name, log_path=log)
            self.workers.append(worker)
            started.append(worker.start(timeout_s=90))
        return started

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def workers_cpu_s(self) -> float:
        return sum(process_group_cpu_s(w.pid) for w in self.workers)

    def producer(self, env: Mapping[str, str]) -> Producer:
        producer = Producer(Settings(**env))  # type: ignore[arg-type]
        producer.audit.migrate()
        return producer

    def control_app(self) -> Any:
        """A Celery app on the private broker for ``control`` commands (consumer on/off)."""
        return build_celery(Settings(CIOGUARD_BROKER_URL=self.redis.url), "bench-control")

    def pause_consumers(self, queue: str = QUEUE) -> None:
        """Stop every worker fetching from ``queue`` (messages then pile up in Redis)."""
        names = [w.name for w in self.workers]
        app = self.control_app()
        try:
            app.control.cancel_consumer(queue, destination=names, reply=True, timeout=5)
        finally:
            app.close()

    def resume_consumers(self, queue: str = QUEUE) -> None:
        names = [w.name for w in self.workers]
        app = self.control_app()
        try:
            app.control.add_consumer(queue, destination=names, reply=False)
        finally:
            app.close()

    def queue_length(self, queue: str = QUEUE) -> int:
        client = redis.Redis.from_url(self.redis.url)
        try:
            return int(client.llen(queue))
        finally:
            client.close()


def postgres_available() -> bool:
    """Whether ``BENCH_PG_URL``'s server answers (the PostgreSQL runs are skipped otherwise)."""
    engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any failure to reach it means: no PostgreSQL runs
        return False
    finally:
        engine.dispose()
    return True


def final_count(store: AuditStore) -> int:
    """Jobs with their final audit row (tests/helpers.py counts the same way)."""
    with store.engine.connect() as conn:
        query = select(func.count()).where(audit_log.c.final_job_id.is_not(None))
        return int(conn.scalar(query) or 0)


def final_times(store: AuditStore) -> list[float]:
    """Unix times of every final row, sorted (for completions-over-time plots)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.at).where(audit_log.c.final_job_id.is_not(None))
        ).all()
    stamps = []
    for (at,) in rows:
        aware = at if at.tzinfo else at.replace(tzinfo=UTC)
        stamps.append(aware.timestamp())
    return sorted(stamps)


def wait_for(
    count: Callable[[], int], target: int, *, timeout_s: float, poll_s: float = 0.1
) -> float:
    """Poll ``count()`` until it reaches ``target``; returns the monotonic time it did.

    Raises ``TimeoutError`` with the count reached, so a stuck benchmark says how far it got.
    """
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        seen = count()
        if seen >= target:
            return time.monotonic()
        time.sleep(poll_s)
    raise TimeoutError(f"reached {seen} of {target} within {timeout_s:.0f} s")


def ok_requests(control: SandboxControl) -> int:
    stats = control.stats()
    return sum(n for s, n in stats["by_status"].items() if s.startswith("2"))


@contextmanager
def recorded(name: str) -> Iterator[dict[str, Any]]:
    """Collect a benchmark's result dict; write ``results/<name>.json`` with machine and load."""
    result: dict[str, Any] = {"benchmark": name, "machine": machine(), "load_before": load()}
    started = time.monotonic()
    yield result
    result["load_after"] = load()
    result["duration_s"] = round(time.monotonic() - started, 1)
    write_json(name, result)


def results_dir() -> Path:
    """``bench/results`` (committed); a quick run writes elsewhere so it never replaces them.

    ``BENCH_RESULTS_DIR`` overrides both.
    """
    given = os.environ.get("BENCH_RESULTS_DIR")
    if given:
        path = Path(given)
    elif quick():
        path = Path(tempfile.gettempdir()) / "cioguard-bench-quick"
    else:
        path = COMMITTED_RESULTS
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(name: str, result: Mapping[str, Any]) -> Path:
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def figure_path(name: str) -> Path:
    return results_dir() / f"{name}.png"


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by each part of the stack, to compare CPU cost per job."""

    workers_s: float
    sandbox_s: float
    redis_s: float
    bench_s: float
    at: float

    @classmethod
    def take(cls, stack: Stack) -> CpuSnapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            workers_s=stack.workers_cpu_s(),
            sandbox_s=children_cpu_s("cioguard.sandbox.server"),
            redis_s=children_cpu_s("redis-server"),
            bench_s=usage.ru_utime + usage.ru_stime,
            at=time.monotonic(),
        )

    def per_job_ms(self, later: CpuSnapshot, jobs: int) -> dict[str, float]:
        """Milliseconds of CPU per job spent in each part between two snapshots."""

        def ms(a: float, b: float) -> float:
            return round((b - a) * 1000 / max(jobs, 1), 3)

        return {
            "workers": ms(self.workers_s, later.workers_s),
            "sandbox": ms(self.sandbox_s, later.sandbox_s),
            "redis": ms(self.redis_s, later.redis_s),
            "bench_process": ms(self.bench_s, later.bench_s),
        }


def run_seed(stack: Stack, mode: str, count: int, prefix: str = "seed") -> dict[str, float]:
    """Run :mod:`bench.seed_loop` in its own process against the stack's sandbox."""
    env = {
        **os.environ,
        "BENCH_TRACK_URL": stack.sandbox.url, "BENCH_SITE_ID": stack.sandbox.site_id,
        "BENCH_API_KEY": stack.sandbox.api_key, "REQUESTS_CA_BUNDLE": str(stack.sandbox.ca_path),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(COMMITTED_RESULTS.parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "bench.seed_loop", mode, str(count), prefix],
        env=env, capture_output=True, text=True, check=True, timeout=count * 2 + 60,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
