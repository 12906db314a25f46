"""The Customer.io API an e2e test runs against, as a fixture: a test that takes ``api`` runs
once with the Track API and once with ``CIOGUARD_API=pipelines`` (the same sandbox serves
both). With Pipelines, the test fails at teardown if the sandbox saw one request that breaks
Customer.io's Pipelines document or its limits, or one sent without ``X-Strict-Mode: 1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.pipelines import DEFAULT_PIPELINES_API_KEY, PipelinesControl

APIS = ["track", "pipelines"]


@pytest.fixture
def pipelines(cio: SandboxServer) -> Iterator[PipelinesControl]:
    """The sandbox's Pipelines control routes, reset, with its default key accepted."""
    control = PipelinesControl(cio.url, cio.ssl_context())
    control.set_keys([DEFAULT_PIPELINES_API_KEY])
    control.reset()
    yield control
    control.set_keys([DEFAULT_PIPELINES_API_KEY])
    control.close()


def pipelines_env(cio: SandboxServer, rate: str) -> dict[str, str]:
    """A worker's settings for the sandbox's Pipelines API."""
    return {
        "CIOGUARD_API": "pipelines",
        "CIOGUARD_PIPELINES_URL": cio.url,
        "CUSTOMERIO_PIPELINES_API_KEY": DEFAULT_PIPELINES_API_KEY,
        "CIOGUARD_PIPELINES_RATE_LIMIT": rate,
    }


@pytest.fixture(params=APIS)
def api(
    request: pytest.FixtureRequest,
    env: dict[str, str],
    cio: SandboxServer,
    pipelines: PipelinesControl,
) -> Iterator[str]:
    """``track`` or ``pipelines``; the worker environment (``env``) is set for it."""
    name: str = request.param
    if name == "pipelines":
        env.update(pipelines_env(cio, env["CIOGUARD_RATE_LIMIT"]))
    yield name
    if name == "pipelines":
        stats = pipelines.stats()
        assert stats["spec_violations"] == 0, stats
        assert stats["lenient_requests"] == 0, stats
        assert stats["strict_requests"] > 0, stats
