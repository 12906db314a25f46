"""Sentry set up so that no person data can reach it.

Layers, from the outside in (each one alone would leave a gap, see celery-pitfalls.md):

* ``include_local_variables=False``: task parameters would otherwise arrive as frame locals.
  ``send_default_pii`` is left at its default (off; the option is deprecated in sentry-sdk
  2.75), and no ``data_collection`` is passed: any such dict turns the event scrubber off.
* A recursive :class:`EventScrubber` with PII keys added to Sentry's default denylist.
* :func:`before_breadcrumb`: HTTP breadcrumbs keep only the origin of the URL (the Track API
  puts the person id in the path); log breadcrumbs keep only the fields :mod:`cioguard.ops.logs`
  would print, and those from other libraries only their message template.
* :func:`before_send`: drops Celery job arguments, request bodies, frame variables,
  ``sys.argv`` and log-record extras outside the :mod:`cioguard.ops.logs` whitelist; replaces the
  message of every exception that is not cioguard's own (third-party text such as
  ``customerio``'s carries payloads; ours is PII-free by construction, errors.py); keeps only
  the template of log events from other libraries; then runs the sanitizer's value detectors
  (cards, SSNs, IBANs, phones, national ids, secrets) and an e-mail redactor over every
  human-readable string left.

Initialized from worker signals (``celeryd_init`` / ``worker_process_init``), early enough for
the Celery integration to hook in (celery-pitfalls.md).

Note:
    The person hash (a keyed HMAC) and job ids do reach Sentry: they let an operator find the
    audit row of an alert. They are pseudonyms, linkable by whoever holds the hash key.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber
from sentry_sdk.transport import Transport

from cioguard.config import Settings
from cioguard.ops.logs import CONTEXT_FIELDS
from cioguard.privacy import detectors

PII_KEYS = [
    "person_id", "customer_id", "email", "email_address", "phone", "phone_number", "attributes",
    "data", "sealed", "payload", "identifiers", "recipient", "body", "args", "kwargs", "name",
    "ssn", "card", "card_number", "credit_card",
]  # fmt: skip
FILTERED = "[Filtered]"
_HTTP_KEEP = ("method", "status_code", "reason", "http.method", "http.request.method",
              "http.response.status_code")  # fmt: skip
_scan: Callable[[str], list[detectors.Span]] = detectors.scanner(detectors.DETECTOR_NAMES)


def release() -> str:
    try:
        return f"cioguard@{version('cioguard')}"
    except PackageNotFoundError:
        return "cioguard@unknown"


def redact_text(value: Any) -> Any:
    """``value`` with every detector hit and every e-mail address (at any depth) redacted."""
    if isinstance(value, str):
        spans = _scan(value)
        return detectors.redact_emails(detectors.redact(value, spans) if spans else value)
    if isinstance(value, dict):
        return {k: redact_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_text(v) for v in value]
    return value


def _own(name: object) -> bool:
    return isinstance(name, str) and (name == "cioguard" or name.startswith("cioguard."))


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None) -> dict[str, Any]:
    """Reduce a breadcrumb to what cannot identify a person."""
    data = crumb.get("data")
    if crumb.get("type") == "http" or crumb.get("category") == "httplib":
        kept = {k: v for k, v in (data or {}).items() if k in _HTTP_KEEP}
        url = (data or {}).get("url")
        if isinstance(url, str):
            parts = urlsplit(url)
            kept["url"] = f"{parts.scheme}://{parts.netloc}" if parts.netloc else FILTERED
        crumb["data"] = kept
    elif hint and "log_record" in hint:
        record = hint["log_record"]
        if isinstance(data, dict):
            crumb["data"] = {k: v for k, v in data.items() if k in CONTEXT_FIELDS}
        if not _own(crumb.get("category")) and record.args:
            crumb["message"] = str(record.msg)  # the template: arguments may be anything
    if "message" in crumb:
        crumb["message"] = redact_text(crumb["message"])
    if isinstance(crumb.get("data"), dict):
        crumb["data"] = redact_text(crumb["data"])
    return crumb


def before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    """Strip what may carry person data from an event, then redact detector hits in the rest."""
    _strip_extra(event)
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "query_string", "cookies", "url"):
            request.pop(key, None)
    _strip_exceptions(event)
    logentry = event.get("logentry")
    if isinstance(logentry, dict) and event.get("logger") and not _own(event.get("logger")):
        logentry.pop("params", None)  # another library's log line: its template only
        logentry.pop("formatted", None)
    crumbs = event.get("breadcrumbs")
    if isinstance(crumbs, dict):
        crumbs["values"] = [before_breadcrumb(c, None) for c in crumbs.get("values", [])]
    for key in ("message", "logentry", "extra", "tags", "user", "request"):
        if key in event:
            event[key] = redact_text(event[key])
    return event


def _strip_extra(event: dict[str, Any]) -> None:
    extra = event.get("extra")
    if not isinstance(extra, dict):
        return
    if event.get("logger"):  # a log record's extras: only what cioguard.ops.logs would print
        extra = {k: v for k, v in extra.items() if k in CONTEXT_FIELDS or k == "celery-job"}
        event["extra"] = extra
    extra.pop("sys.argv", None)
    job = extra.get("celery-job")
    if isinstance(job, dict):
        job.pop("args", None)
        job.pop("kwargs", None)


def _strip_exceptions(event: dict[str, Any]) -> None:
    """No frame variables anywhere; exception text only from cioguard's own errors."""
    for exc in (event.get("exception") or {}).get("values") or []:
        if not _own(exc.get("module")) and exc.get("value"):
            exc["value"] = FILTERED
        elif isinstance(exc.get("value"), str):
            exc["value"] = redact_text(exc["value"])
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)


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
        event_scrubber=EventScrubber(
            denylist=DEFAULT_DENYLIST + PII_KEYS, pii_denylist=DEFAULT_PII_DENYLIST, recursive=True
        ),
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,
        integrations=[CeleryIntegration(monitor_beat_tasks=False)],
        max_request_body_size="never",
    )
    return True
