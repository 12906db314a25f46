"""Sentry set up so that no person data can reach it.

* ``include_local_variables=False``: task parameters would otherwise arrive as frame locals.
* A recursive :class:`EventScrubber` with PII keys added to Sentry's default denylist.
* ``before_send`` drops Celery job arguments and request bodies wholesale.
* Exception messages are PII-free by construction (errors.py), which no scrubber could ensure.

Initialized from worker signals (``celeryd_init`` / ``worker_process_init``), early enough for
the Celery integration to hook in (celery-pitfalls.md).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber
from sentry_sdk.transport import Transport

from cioguard.config import Settings

PII_KEYS = [
    "person_id", "customer_id", "email", "phone", "attributes", "data", "sealed", "payload",
    "identifiers", "recipient", "body", "args", "kwargs", "name", "ssn", "card",
]  # fmt: skip


def release() -> str:
    try:
        return f"cioguard@{version('cioguard')}"
    except PackageNotFoundError:
        return "cioguard@unknown"


def before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    extra = event.get("extra") or {}
    job = extra.get("celery-job")
    if isinstance(job, dict):
        job.pop("args", None)
        job.pop("kwargs", None)
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("query_string", None)
        request.pop("cookies", None)
    for exc in (event.get("exception") or {}).get("values", []):
        for frame in (exc.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    return event


def init_sentry(settings: Settings, *, role: str, transport: Transport | None = None) -> bool:
    """Initialize Sentry when ``SENTRY_DSN`` is set (or a test transport is given)."""
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None
    if not dsn and transport is None:
        return False
    sentry_sdk.init(
        dsn=dsn,
        transport=transport,
        environment=settings.environment,
        release=release(),
        server_name=role,
        include_local_variables=False,
        send_default_pii=False,
        event_scrubber=EventScrubber(
            denylist=DEFAULT_DENYLIST + PII_KEYS, pii_denylist=DEFAULT_PII_DENYLIST, recursive=True
        ),
        before_send=before_send,  # type: ignore[arg-type]
        integrations=[CeleryIntegration(monitor_beat_tasks=False)],
        max_request_body_size="never",
    )
    return True
