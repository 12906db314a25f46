"""Encrypted job payloads: what travels through Redis is ciphertext.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) over the job's JSON. ``MultiFernet``
gives key rotation without losing queued work: the first key of ``CIOGUARD_PAYLOAD_KEY``
encrypts, every key decrypts, so a new key can be put first while jobs sealed under the old
one are still in the queue; drop the old key once the queue has drained.

Rotation, step by step (docs/privacy.md): put the new key first (``NEW,OLD``) everywhere;
wait until the queue and the countdown retries have drained; re-seal the dead letters still
under the old key (:meth:`Envelope.reseal`); then drop ``OLD``. A job whose key is gone is not
lost: the worker keeps it as a dead letter, still sealed, replayable once the key is back.

Note: Fernet tokens carry their creation time in the clear (8 bytes) and their length follows
the payload's length; nothing else is readable without a key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cioguard.errors import CioguardError


class EnvelopeError(CioguardError):
    """A payload could not be opened: wrong key, tampered or not a cioguard payload."""


class Envelope:
    """Seals and opens job payloads with a list of Fernet keys, newest first."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("keys: at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, payload: dict[str, Any]) -> str:
        """Encrypt a JSON-serializable payload into an ASCII token."""
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return self._fernet.encrypt(data).decode("ascii")

    def open(self, token: str) -> dict[str, Any]:
        """Decrypt a token sealed under any configured key."""
        data = self._decrypt(token)
        try:
            payload = json.loads(data)
        except ValueError:
            raise EnvelopeError("payload is not a cioguard job") from None
        if not isinstance(payload, dict):
            raise EnvelopeError("payload is not a cioguard job")
        return payload

    def reseal(self, token: str) -> str:
        """The same payload sealed under the newest key (its original timestamp is kept).

        For tokens that outlive a queue drain (dead letters) before their key is dropped.
        """
        self._decrypt(token)
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")

    def _decrypt(self, token: str) -> bytes:
        if not isinstance(token, str):
            raise EnvelopeError("payload is not a token")
        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise EnvelopeError("payload could not be decrypted with any configured key") from None


def new_key() -> str:
    """A fresh Fernet key, for `cioguard keys new` and tests."""
    return Fernet.generate_key().decode("ascii")
