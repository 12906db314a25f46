"""cioguard: deliver data to Customer.io from a queue, safely.

Application code calls :func:`identify`, :func:`track` and :func:`delete_person`; each validates,
sanitizes and encrypts the data and enqueues a job on Redis for the worker.

Names are imported lazily, so ``python -m cioguard.sandbox`` or the webhook verifier do not load
the producer's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

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
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cioguard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
