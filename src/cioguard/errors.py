"""The project's error tree, split by the decision the caller must make.

Every error carries context (HTTP status, job id, retry-after) and never a payload or a person id:
messages are built from fixed text and numbers only, so they are safe for logs, Sentry and the
result backend. Third-party errors are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class CioguardError(Exception):
    """Root of every error cioguard raises on purpose."""


class InvalidInputError(CioguardError, ValueError):
    """An application call was rejected before anything was enqueued."""


class InvalidTypeError(CioguardError, TypeError):
    """An application call passed a value of the wrong type; nothing was enqueued."""


class ConfigurationError(CioguardError):
    """A setting is missing or malformed. The message names the variable and the expected form."""


class BrokerUnavailableError(CioguardError):
    """The broker (Redis) did not answer; the job was not enqueued."""


class AuditUnavailableError(CioguardError):
    """The audit store could not be written; the job must not be considered done."""


class DeliveryError(CioguardError):
    """Customer.io did not accept a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(DeliveryError):
    """429, 5xx, timeouts, connection errors: worth trying again later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    """400 and other 4xx: the request will never succeed as it is; do not retry."""


class CredentialsError(PermanentError):
    """401/403: the site id / API key pair was refused."""


class WebhookVerificationError(CioguardError):
    """A reporting webhook failed verification. ``reason`` is a short fixed code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
