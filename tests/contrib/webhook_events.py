"""Signed reporting-webhook deliveries for the framework tests."""

from __future__ import annotations

import json
import time

from cioguard.webhooks.verify import sign_webhook

SECRET = "whsec-contrib-test"
EMAIL = "ada.contrib@example.com"


def signed(event_id: str, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """A Customer.io ``opened`` event about person 42 and the headers that sign it."""
    event = {
        "event_id": event_id, "object_type": "email", "metric": "opened",
        "timestamp": int(time.time()),
        "data": {"identifiers": {"id": "42", "email": EMAIL}, "recipient": EMAIL},
    }  # fmt: skip
    body = json.dumps(event).encode()
    stamp = int(time.time())
    return body, {
        "X-CIO-Timestamp": str(stamp),
        "X-CIO-Signature": sign_webhook(body, secret, stamp),
    }
