"""Keyed hashing of person identifiers and sensitive values.

HMAC-SHA256 with ``CIOGUARD_HASH_KEY``, hex-encoded. The key makes the hash a pseudonym in the
GDPR sense (Art. 4(5)): without the key, the space of ids or phone numbers cannot be enumerated
back to the input, while an operator who holds the key and knows an id can still find its records.
The same key gives the same hash in every process, so hashes join across workers and the audit log.

Warning: rotating ``CIOGUARD_HASH_KEY`` changes every hash; records made under the old key no
longer match new ones. Treat it as a long-lived key.
"""

from __future__ import annotations

import hashlib
import hmac

_PERSON_DOMAIN = b"cioguard:person:"
_VALUE_DOMAIN = b"cioguard:value:"


def person_hash(key: bytes, person_id: str) -> str:
    """The keyed hash that stands for a person everywhere a raw id must not appear."""
    return hmac.new(key, _PERSON_DOMAIN + person_id.encode("utf-8"), hashlib.sha256).hexdigest()


def value_hash(key: bytes, value: str) -> str:
    """The keyed hash of an attribute value (the sanitizer's ``hash`` action)."""
    return hmac.new(key, _VALUE_DOMAIN + value.encode("utf-8"), hashlib.sha256).hexdigest()
