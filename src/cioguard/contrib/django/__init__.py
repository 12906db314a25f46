"""cioguard in a Django project: settings from ``settings.CIOGUARD``, transaction-aware calls, and
a webhook view.

Add ``"cioguard.contrib.django"`` to ``INSTALLED_APPS`` and, optionally, a ``CIOGUARD`` dict keyed
by the environment variables' names::

    CIOGUARD = {"CIOGUARD_BROKER_URL": "redis://localhost:6379/0", "CIOGUARD_AUDIT_URL": ...}

Precedence: **the environment wins** over ``CIOGUARD`` (an operator can override a deployed value
without a code change, and secrets such as ``CIOGUARD_HASH_KEY`` can stay out of settings files);
``CIOGUARD`` wins over the built-in defaults. An unknown name or a bad value stops start-up with
``ImproperlyConfigured`` naming the variable, never the value.

:func:`identify` and :func:`track` here validate and sanitize at once (a bad call raises at the
call site) and publish **when the surrounding transaction commits**: a rolled-back sign-up sends
nothing (``transaction.on_commit``; outside a transaction they publish at once). Pass
``on_commit=False`` to publish at once anyway. If the broker is down at commit time, the
``BrokerUnavailableError`` propagates out of the ``atomic()`` block after the commit, as Django
does for ``on_commit`` callbacks. :func:`delete_person` is *not* deferred by default: an erasure
request lost to a rollback is worse than an extra one (``on_commit=True`` defers it, and it then
returns ``None`` since the request id exists only once recorded).

``cioguard.identify`` (the plain functions) keep working and use the same settings; they never
wait for a commit.

:func:`webhook_view` receives Customer.io's reporting webhooks like ``cioguard webhooks serve``:
``path("webhooks/customerio", webhook_view)`` in ``urls.py``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from cioguard.config import Settings, load_settings
from cioguard.contrib._webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Receiver
from cioguard.errors import ConfigurationError
from cioguard.producer import api
from cioguard.producer.api import PersonId

log = logging.getLogger("cioguard.contrib.django")


@functools.cache
def settings() -> Settings:
    """cioguard's settings: the environment over ``settings.CIOGUARD`` (module docstring)."""
    values = getattr(django_settings, "CIOGUARD", None) or {}
    if not isinstance(values, Mapping):
        raise ImproperlyConfigured("settings.CIOGUARD must be a dict of cioguard settings")
    try:
        return load_settings(values)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"settings.CIOGUARD: {exc}") from None


def install() -> None:
    """Check the settings now and make the ``cioguard`` functions use them (``AppConfig.ready``)."""
    settings()
    api.use_settings(settings)


def reset() -> None:
    """Forget the settings, the producer and the webhook receiver (after a settings change)."""
    settings.cache_clear()
    while _receivers:
        _receivers.pop().close()
    api.use_settings(settings)


def _publish(step: Callable[[], object], on_commit: bool, using: str | None) -> None:
    if on_commit:
        transaction.on_commit(step, using=using)
    else:
        step()


def identify(
    person_id: PersonId,
    attributes: Mapping[str, Any],
    *,
    on_commit: bool = True,
    using: str | None = None,
) -> str:
    """:func:`cioguard.identify`, published when the transaction on ``using`` commits.

    Returns the job id at once (the job exists, validated and sanitized; it is only not sent yet).
    """
    producer = api.get_producer()
    job = producer.prepare_identify(person_id, attributes)
    _publish(lambda: producer.enqueue(job), on_commit, using)
    return job.job_id


def track(
    person_id: PersonId,
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    timestamp: int | datetime | None = None,
    on_commit: bool = True,
    using: str | None = None,
) -> str:
    """:func:`cioguard.track`, published when the transaction on ``using`` commits."""
    producer = api.get_producer()
    job = producer.prepare_track(person_id, name, data, timestamp=timestamp)
    _publish(lambda: producer.enqueue(job), on_commit, using)
    return job.job_id


def delete_person(
    person_id: PersonId,
    *,
    reason: str = "erasure",
    on_commit: bool = False,
    using: str | None = None,
) -> str | None:
    """:func:`cioguard.delete_person`; at once by default (module docstring).

    With ``on_commit=True`` the request is recorded and enqueued at commit, and ``None`` returned.
    The person id is validated at once either way.
    """
    producer = api.get_producer()
    if not on_commit:
        return producer.delete_person(person_id, reason=reason)
    from cioguard.producer import validate

    validate.person_id(person_id)
    validate.reason(reason)
    transaction.on_commit(lambda: producer.delete_person(person_id, reason=reason), using=using)
    return None


_receivers: list[Receiver] = []
_receiver_lock = threading.Lock()


def _receiver() -> Receiver:
    """The process's receiver, built on the first webhook (it holds Redis and broker clients)."""
    with _receiver_lock:
        if not _receivers:
            _receivers.append(Receiver(settings()))
        return _receivers[0]


@csrf_exempt
def webhook_view(request: HttpRequest) -> HttpResponse:
    """``POST`` Customer.io reporting webhooks: verify, dedupe, enqueue (as the standalone app).

    Answers 200 ``accepted``/``duplicate``, 400, 401, 413, 503 (Customer.io retries) or 500,
    with no detail in the body. CSRF-exempt: the signature is the authentication.
    """
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        receiver = _receiver()
    except (ConfigurationError, ImproperlyConfigured) as exc:
        log.error("webhook receiver not configured: %s", exc)
        return JsonResponse({"error": "unavailable"}, status=503)
    if receiver.too_large(request.headers.get("Content-Length")):
        log.warning("webhook rejected: body_too_large")
        return JsonResponse({"error": "payload too large"}, status=413)
    answer = receiver.receive(
        request.body,
        timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
        signature=request.headers.get(SIGNATURE_HEADER, ""),
    )
    return JsonResponse(answer.body, status=answer.status)


__all__ = ["delete_person", "identify", "install", "settings", "track", "webhook_view"]
