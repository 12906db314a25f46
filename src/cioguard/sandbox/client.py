"""Running the sandbox from Python: :class:`SandboxServer` starts ``python -m cioguard.sandbox``
as a subprocess and waits for its ready line; :class:`SandboxControl` drives its ``/_sandbox/``
routes (faults, credentials, stats, people) over HTTPS.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from cioguard.sandbox.routes import (
    DEFAULT_API_KEY,
    DEFAULT_SITE_ID,
)
from cioguard.sandbox.state import FaultConfig
from cioguard.sandbox.wire import (
    RequestRecord,
)

_READY_LINE = re.compile(r"sandbox listening on https://(?P<host>\S+):(?P<port>\d+) ca=(?P<ca>.+)")


FAULT_FLAGS: dict[str, tuple[str, type]] = {
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


class SandboxStartError(RuntimeError):
    """The sandbox subprocess died or did not answer in time; the message has its stderr tail."""


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
        response = self._http.get("/_sandbox/person", params={"id": person_id})
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
                args.append(f"{FAULT_FLAGS[name][0]}={value}")
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
