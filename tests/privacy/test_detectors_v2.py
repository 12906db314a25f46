"""Detector behaviours added in policy v2 (issue 16): boundaries, folding, retries, regions."""

from __future__ import annotations

import pytest

from cioguard.privacy.detectors import (
    find_all,
    find_cards,
    find_national_ids,
    find_phones,
    find_secrets,
    redact,
)
from cioguard.privacy.normalize import fold_text, unfold_span


def texts(text: str, names: tuple[str, ...] | None = None) -> list[str]:
    spans = find_all(text) if names is None else find_all(text, names)
    return [text[s.start : s.end] for s in spans]


def test_cards_next_to_a_comma_and_a_digit_are_found() -> None:
    text = "1,4111111111111111,5555555555554444,2"
    assert texts(text) == ["4111111111111111", "5555555555554444"]


def test_a_uuid_whose_digit_stretch_passes_luhn_is_not_a_card() -> None:
    # found by the property test: 4000-8000-00008 is a Luhn-valid 13-digit Visa grouping
    assert find_cards("00000000-0000-4000-8000-00008a000000") == []


def test_a_hex_digest_with_a_card_inside_is_not_a_card() -> None:
    digest = "ab" + "4111111111111111" + "cd" * 7
    assert len(digest) == 32 and find_cards(digest) == []
    assert find_cards("ref X4111111111111111Y") != []  # letters alone do not hide a card


def test_folding_maps_spans_back_to_the_original_text() -> None:
    text = "card \u200b4111\u00a01111\u200b 1111 1111!"
    folded, origin = fold_text(text)
    assert folded == "card 4111 1111 1111 1111!"
    assert origin is not None
    assert redact(text, find_all(text)) == "card \u200b[REDACTED:card]!"
    assert unfold_span(None, 2, 5) == (2, 5)


def test_full_width_text_needs_no_map() -> None:
    folded, origin = fold_text("\uff14\uff11\uff11\uff11")
    assert (folded, origin) == ("4111", None)


def test_a_national_id_starting_inside_a_failed_candidate_is_found() -> None:
    text = "x 4111 2341 2341 2346 y"  # "4111 2341 2341" fails Verhoeff; the next one passes
    assert [text[s.start : s.end] for s in find_national_ids(text)] == ["2341 2341 2346"]


@pytest.mark.parametrize(
    ("region", "text", "found"),
    [
        ("US", "call (415) 555-2671", True),
        ("GB", "call (415) 555-2671", False),
        ("GB", "ring 020 7946 0958", True),
        ("US", "ring 020 7946 0958", False),
        ("US", "dial 0044 20 7946 0958", True),  # 00 as the international prefix
        ("US", "id 4155552671", False),  # bare digits: not written as a phone
        ("US", "2024-01-15 and 10.0.0.12", False),
    ],
)
def test_national_phone_formats_depend_on_the_region(region: str, text: str, found: bool) -> None:
    assert bool(find_phones(text, region)) is found


@pytest.mark.parametrize(
    "text",
    [
        "postgres://app:s3cret@db.example.com/app",
        "Authorization: Bearer abcdefghijklmnop1234",
        "user=ada password=hunter22 ip=x",
        "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    ],
)
def test_context_and_new_token_secrets_are_found(text: str) -> None:
    assert find_secrets(text) != []


def test_the_issue_16_jwt_input_is_scanned_once() -> None:
    """``eyJ-`` repeated: every start but the first fails at once (the lookbehind)."""
    text = "eyJ-" * 64_000  # 256 KB; the old pattern took 26 s, here it is a single pass
    assert find_secrets(text) == []
