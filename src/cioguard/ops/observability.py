"""Process start-up for logs and Sentry. (Metrics: :mod:`cioguard.ops.metrics`.)"""

from __future__ import annotations

from cioguard.config import Settings
from cioguard.ops.logs import configure_logging


def init_process(settings: Settings, *, role: str) -> None:
    configure_logging(settings.log_format)
    from cioguard.ops.sentry import init_sentry

    init_sentry(settings, role=role)
