"""Sealed payloads: round trip, key rotation, and errors that say nothing about the payload."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.fernet import Fernet

from cioguard.broker.envelope import Envelope, EnvelopeError, new_key

PAYLOAD = {"v": 1, "person_id": "person-42", "attributes": {"email": "p42@example.test"}}


def _keys(n: int) -> list[bytes]:
    return [new_key().encode() for _ in range(n)]


def test_round_trip_and_nothing_readable_in_the_token() -> None:
    envelope = Envelope(_keys(1))
    token = envelope.seal(PAYLOAD)
    assert token.isascii() and "person-42" not in token and "example.test" not in token
    assert envelope.open(token) == PAYLOAD


def test_each_seal_is_a_different_token() -> None:
    envelope = Envelope(_keys(1))
    assert envelope.seal(PAYLOAD) != envelope.seal(PAYLOAD)


def test_non_ascii_payload_survives() -> None:
    envelope = Envelope(_keys(1))
    payload = {"name": "Zoë Ørsted", "city": "Kraków"}
    assert envelope.open(envelope.seal(payload)) == payload


def test_rotation_new_key_first_still_opens_old_tokens() -> None:
    new, old = _keys(2)
    old_token = Envelope([old]).seal(PAYLOAD)
    rotated = Envelope([new, old])
    assert rotated.open(old_token) == PAYLOAD
    assert Envelope([new]).open(rotated.seal(PAYLOAD)) == PAYLOAD  # the first key encrypts


def test_a_removed_key_fails_closed_without_echoing_the_token() -> None:
    gone, new = _keys(2)
    token = Envelope([gone]).seal(PAYLOAD)
    with pytest.raises(EnvelopeError) as info:
        Envelope([new]).open(token)
    assert token not in str(info.value) and "person-42" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_reseal_moves_a_token_to_the_newest_key() -> None:
    new, old = _keys(2)
    token = Envelope([old]).seal(PAYLOAD)
    resealed = Envelope([new, old]).reseal(token)
    assert Envelope([new]).open(resealed) == PAYLOAD
    assert Fernet(old).extract_timestamp(token.encode()) == Fernet(new).extract_timestamp(
        resealed.encode()
    )  # the original creation time is kept
    with pytest.raises(EnvelopeError):
        Envelope(_keys(1)).reseal(token)


def test_tampered_token_is_refused() -> None:
    envelope = Envelope(_keys(1))
    raw = bytearray(base64.urlsafe_b64decode(envelope.seal(PAYLOAD)))
    raw[-40] ^= 1
    with pytest.raises(EnvelopeError):
        envelope.open(base64.urlsafe_b64encode(bytes(raw)).decode())


@pytest.mark.parametrize("token", ["", "not a token", "ünïcode", None, ["list"]])
def test_garbage_is_an_envelope_error(token: object) -> None:
    with pytest.raises(EnvelopeError):
        Envelope(_keys(1)).open(token)  # type: ignore[arg-type]


def test_sealed_non_job_json_is_refused() -> None:
    key = _keys(1)[0]
    envelope = Envelope([key])
    for data in (json.dumps([1, 2]).encode(), b"\xff not json"):
        with pytest.raises(EnvelopeError, match="not a cioguard job"):
            envelope.open(Fernet(key).encrypt(data).decode())


def test_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="keys"):
        Envelope([])


def test_new_key_is_a_fernet_key() -> None:
    assert len(base64.urlsafe_b64decode(new_key())) == 32
    assert new_key() != new_key()
