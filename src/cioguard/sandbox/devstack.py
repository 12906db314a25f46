"""Local processes for the demo, the tests and the benchmarks: a private Redis and workers.

Hand-written because nothing on PyPI starts a throwaway ``redis-server`` and a Celery worker
subprocess without Docker (pytest-celery >= 1.0 needs Docker, celery-pitfalls.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import kombu.exceptions
import kombu.pools
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout_s).ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """A private ``redis-server`` on a free port (optionally with AOF persistence)."""

    def __init__(
        self, *, appendonly: bool = False, port: int | None = None, data_dir: Path | None = None
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.appendonly = appendonly
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="cioguard-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(self.data_dir), "--maxmemory-policy", "noeviction",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_answers(self.url, 0.2):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self, *, hard: bool = False) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class WorkerProcess:
    """``cioguard worker`` in a subprocess with a given environment; waits until it answers."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        concurrency: int = 2,
        name: str | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.env = {**os.environ, **env}
        self.concurrency = concurrency
        self.name = name or f"w{os.getpid()}-{free_port()}@127.0.0.1"
        self.log_path = log_path
        self.extra_args = extra_args or []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The worker's command line (subclasses start other Celery apps the same way)."""
        return [
            sys.executable, "-m", "cioguard", "worker", "--concurrency", str(self.concurrency),
            "--hostname", self.name, "--pool", "prefork", "--without-gossip", "--without-mingle",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout_s: float = 60) -> WorkerProcess:
        cmd = self.command()
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        out = self._log or subprocess.DEVNULL
        self._proc = subprocess.Popen(
            cmd, env=self.env, stdout=out, stderr=out, start_new_session=True
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from cioguard.broker.celeryconf import build_celery
        from cioguard.config import Settings

        settings = Settings(CIOGUARD_BROKER_URL=self.env["CIOGUARD_BROKER_URL"])
        control = build_celery(settings, "cioguard-control")
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self._proc.returncode}")
                try:
                    if control.control.ping(destination=[self.name], timeout=0.5):
                        return
                except (OSError, redis.RedisError, kombu.exceptions.KombuError):
                    # pooled connections are stale after a Redis restart (or a CLIENT KILL); the
                    # reset closes this app's pool too, so ask through a new app
                    kombu.pools.reset()  # type: ignore[no-untyped-call]
                    control.close()
                    control = build_celery(settings, "cioguard-control")
                    time.sleep(0.2)
            raise RuntimeError("worker did not answer a ping in time")
        finally:
            control.close()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> None:
        """kill -9 the whole process group (main process and pool children)."""
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, timeout_s: float = 20) -> None:
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
