"""The Celery configuration that does not lose work (see celery-pitfalls.md).

* Late acks, requeue on worker loss: a killed task runs again (tasks are idempotent). Prefetch
  1 per process unbatched; batched, two buffers' worth (``tasks.register``).
* JSON only; no result backend and no ``result_extended``: results would be one more place where
  arguments and return values rest.
* Visibility timeout above the longest countdown the project uses (``countdown_cap_s``).
* Redis consumers pop with BLMOVE into an in-flight list (:mod:`cioguard.broker.transport`): kombu's
  BRPOP leaves a popped message in no queue and no unacked set until the worker reads it, and a
  worker killed then loses it. ``rediss://`` verifies the server's certificate (kombu's default
  for that scheme is not to). ``sentinel://`` uses the same reliable channel on kombu's Sentinel
  transport (:mod:`cioguard.broker.clients` documents the URL form).
* Short broker timeouts and a small publish retry: a broker that is down gives one clear error
  in the application quickly, not a hang.
* Never the host application's app: cioguard's apps are built with ``set_as_current=False`` and
  no fix-ups. A current app is what every ``@shared_task`` of the application binds to, so
  ``Celery(name)`` in the producer would send the application's own tasks to cioguard's queue
  (where cioguard's worker drops them as unregistered); Celery's Django fix-up would make it the
  default app and hook the application's worker signals.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from cioguard.broker.clients import sentinel_parts
from cioguard.config import Settings

QUEUE = "cioguard"
DELIVER_TASK = "cioguard.deliver"
ERASE_TASK = "cioguard.erase"
WEBHOOK_TASK = "cioguard.webhook"

PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    url, sentinel_options = _sentinel(settings.broker_url)
    return {
        "broker_url": url,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_connect_timeout": 3,
            "socket_timeout": 15,
            "retry_on_timeout": True,
            "unacked_restore_throttle": 1,
            **sentinel_options,
        },
        **_transport(settings.broker_url),
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "result_extended": False,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_redirect_stdouts": False,
    }


def build_celery(settings: Settings, name: str = "cioguard") -> Celery:
    """A Celery app with cioguard's configuration that never becomes current or default.

    ``fixups=[]``: Celery installs its Django fix-up on every app when ``DJANGO_SETTINGS_MODULE``
    is set, which sets the app as default and connects global worker signals; cioguard's apps are
    not Django's.
    """
    app = Celery(name, set_as_current=False, fixups=[])
    app.conf.update(celery_config(settings))
    return app


def _sentinel(broker_url: str) -> tuple[str, dict[str, Any]]:
    """kombu takes one sentinel's URL, and the master's name and every sentinel as options
    (never ``;``-separated alternates: a failover to one would drop cioguard's transport)."""
    if urlsplit(broker_url).scheme != "sentinel":
        return broker_url, {}
    parts = sentinel_parts(broker_url)
    options = {
        "master_name": parts.master_name,
        "sentinels": [[host, port] for host, port in parts.sentinels],
        "sentinel_kwargs": {"socket_timeout": 3},
    }
    return parts.kombu_url, options


def _transport(broker_url: str) -> dict[str, Any]:
    scheme = urlsplit(broker_url).scheme
    if scheme == "sentinel":
        return {"broker_transport": "cioguard.broker.transport:SentinelTransport"}
    if scheme not in ("redis", "rediss"):
        return {}
    conf: dict[str, Any] = {"broker_transport": "cioguard.broker.transport:Transport"}
    if scheme == "rediss":
        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return conf
