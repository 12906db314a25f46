"""cioguard: deliver data to Customer.io from a queue, safely.

Application code calls :func:`identify`, :func:`track` and :func:`delete_person` (or, in async
code, :func:`aidentify`, :func:`atrack`, :func:`adelete_person`); each validates, sanitizes and
encrypts the data and enqueues a job on Redis for the worker.

Names are imported lazily, so ``python -m cioguard.sandbox.server`` or the webhook verifier do not
load the producer's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # precise types for users' type checkers; runtime imports stay lazy
    from cioguard.erasure.requests import DeletionStatus
    from cioguard.errors import (
        BrokerUnavailableError,
        CioguardError,
        ConfigurationError,
        WebhookVerificationError,
    )
    from cioguard.producer.api import (
        adelete_person,
        adeletion_status,
        aidentify,
        atrack,
        delete_person,
        deletion_status,
        identify,
        sanitize,
        track,
    )
    from cioguard.producer.many import aidentify_many, atrack_many, identify_many, track_many
    from cioguard.webhooks.verify import on_webhook, sign_webhook, verify_webhook

_EXPORTS = {
    "identify": "cioguard.producer.api",
    "track": "cioguard.producer.api",
    "delete_person": "cioguard.producer.api",
    "deletion_status": "cioguard.producer.api",
    "sanitize": "cioguard.producer.api",
    "identify_many": "cioguard.producer.many",
    "track_many": "cioguard.producer.many",
    "aidentify_many": "cioguard.producer.many",
    "atrack_many": "cioguard.producer.many",
    "aidentify": "cioguard.producer.api",
    "atrack": "cioguard.producer.api",
    "adelete_person": "cioguard.producer.api",
    "adeletion_status": "cioguard.producer.api",
    "DeletionStatus": "cioguard.erasure.requests",
    "verify_webhook": "cioguard.webhooks.verify",
    "on_webhook": "cioguard.webhooks.verify",
    "sign_webhook": "cioguard.webhooks.verify",
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
    "adelete_person",
    "adeletion_status",
    "aidentify",
    "aidentify_many",
    "atrack",
    "atrack_many",
    "delete_person",
    "deletion_status",
    "identify",
    "identify_many",
    "on_webhook",
    "sanitize",
    "sign_webhook",
    "track",
    "track_many",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cioguard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
