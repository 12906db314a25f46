"""cioguard: deliver data to Customer.io from a queue, safely.

Application code calls :func:`identify`, :func:`track` and :func:`delete_person`; each validates,
sanitizes and encrypts the data and enqueues a job on Redis for the worker.

Names are imported lazily, so ``python -m cioguard.sandbox`` or the webhook verifier do not load
the producer's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # precise types for users' type checkers; runtime imports stay lazy
    from cioguard.api import delete_person, deletion_status, identify, sanitize, track
    from cioguard.errors import (
        BrokerUnavailableError,
        CioguardError,
        ConfigurationError,
        WebhookVerificationError,
    )
    from cioguard.gdpr import DeletionStatus
    from cioguard.webhooks import on_webhook, sign_webhook, verify_webhook

_EXPORTS = {
    "identify": "cioguard.api",
    "track": "cioguard.api",
    "delete_person": "cioguard.api",
    "deletion_status": "cioguard.api",
    "sanitize": "cioguard.api",
    "DeletionStatus": "cioguard.gdpr",
    "verify_webhook": "cioguard.webhooks",
    "on_webhook": "cioguard.webhooks",
    "sign_webhook": "cioguard.webhooks",
    "CioguardError": "cioguard.errors",
    "ConfigurationError": "cioguard.errors",
    "BrokerUnavailableError": "cioguard.errors",
    "WebhookVerificationError": "cioguard.errors",
}
__all__ = [
    "BrokerUnavailableError",
    "CioguardError",
    "ConfigurationError",
    "DeletionStatus",
    "WebhookVerificationError",
    "delete_person",
    "deletion_status",
    "identify",
    "on_webhook",
    "sanitize",
    "sign_webhook",
    "track",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cioguard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
