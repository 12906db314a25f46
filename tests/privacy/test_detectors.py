"""Value detectors: what they find in free text, and the look-alikes they must leave alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cioguard.privacy.detectors import (
    DETECTOR_NAMES,
    Span,
    find_all,
    find_cards,
    find_ibans,
    find_phones,
    find_secrets,
    find_ssns,
    iban_ok,
    is_card_number,
    luhn_ok,
    merge,
    redact,
    scanner,
)


def with_check_digit(body: str) -> str:
    """``body`` plus the digit that makes it pass Luhn."""
    for digit in "0123456789":
        if luhn_ok(body + digit):
            return body + digit
    raise AssertionError("unreachable")


# Public test numbers published by the card networks / payment processors.
TEST_CARDS = [
    "4111111111111111",  # Visa
    "4012888888881881",  # Visa
    "4222222222222",  # Visa, 13 digits
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # Amex
    "371449635398431",  # Amex
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "30569309025904",  # Diners, 14 digits
    "6200000000000005",  # UnionPay
]


def printed_groups(card: str) -> list[str]:
    """The groups a card is printed in: 4-6-5 (Amex), 4-6-4 (Diners), 4-4-5 (13), else 4s."""
    if len(card) in (14, 15):
        return [card[:4], card[4:10], card[10:]]
    if len(card) == 13:
        return [card[:4], card[4:8], card[8:]]
    return [card[i : i + 4] for i in range(0, len(card), 4)]


def texts(spans: list[Span], text: str) -> list[str]:
    return [text[s.start : s.end] for s in spans]


# -- cards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("card", TEST_CARDS)
def test_luhn_and_card_number_accept_test_cards(card: str) -> None:
    assert luhn_ok(card)
    assert is_card_number(card)


@pytest.mark.parametrize("card", TEST_CARDS)
@pytest.mark.parametrize("sep", ["", " ", "-"])
def test_card_found_inside_a_sentence(card: str, sep: str) -> None:
    formatted = sep.join(printed_groups(card))
    text = f"Customer said: my card is {formatted}, please update."
    assert texts(find_cards(text), text) == [formatted]


def test_card_at_start_and_end_and_after_punctuation() -> None:
    text = "4111111111111111 / card:5555-5555-5555-4444."
    assert texts(find_cards(text), text) == ["4111111111111111", "5555-5555-5555-4444"]


def test_eighteen_digit_card_with_short_tail_group_is_found() -> None:
    card = with_check_digit("62123456789012345")
    formatted = "6212 3456 7890 1234 " + card[16:]
    assert len(card[16:]) == 2
    text = f"unionpay {formatted} ok"
    assert texts(find_cards(text), text) == [formatted]


def test_card_next_to_an_unrelated_number_group_is_still_found() -> None:
    text = "order 2024 4111 1111 1111 1111"
    assert texts(find_cards(text), text) == ["4111 1111 1111 1111"]


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # 16 digits, Luhn fails
        "order 4111 1111 1111 1112 shipped",
        "1234567890",  # 10 digits
        "ORD-2024-000123",
        "9876543210123",  # 13 digits, fails Luhn and prefix
        "94107-1234",
        "2024-01-15T10:30:00Z",
        "1700000000",
        "price 0.4111111111111111",  # a decimal, not a card
        "4111111111111111.25",
        "00004111111111111111",  # a 20-digit run is not searched for a card inside it
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",  # single-digit groups (e.g. scores)
        "41-11-11-11-11-11-11-11",
    ],
)
def test_card_look_alikes_are_not_cards(text: str) -> None:
    assert find_cards(text) == []


def test_unix_timestamps_in_ms_and_us_are_not_cards_even_when_luhn_valid() -> None:
    ms = with_check_digit("170000000000")
    us = with_check_digit("170000000000000")
    assert len(ms) == 13 and len(us) == 16
    assert luhn_ok(ms) and luhn_ok(us)
    assert find_cards(f"at {ms} and {us}") == []


def test_luhn_valid_number_with_implausible_prefix_is_not_a_card() -> None:
    for body in ("900000000000000", "800000000000000", "000000000000000"):
        number = with_check_digit(body)
        assert luhn_ok(number)
        assert not is_card_number(number)


def test_all_digit_uuid_is_not_a_card() -> None:
    head = with_check_digit("411111111111111")  # 16 digits: the 8-4-4 prefix of the uuid
    uuid = f"{head[:8]}-{head[8:12]}-{head[12:16]}-1234-123456789012"
    assert find_cards(f"id {uuid}") == []
    # v2: 8-4-4 is no card grouping (order ids are printed so), 4-4-4-4 is.
    assert find_cards(head[:8] + "-" + head[8:12] + "-" + head[12:16]) == []
    assert find_cards("-".join(head[i : i + 4] for i in range(0, 16, 4))) != []


def test_is_card_number_rejects_non_digits_and_bad_lengths() -> None:
    assert not is_card_number("4111-1111-1111-1111")
    assert not is_card_number("411111111111")  # 12
    assert not is_card_number(with_check_digit("4" * 19))  # 20
    assert not is_card_number("٤١١١١١١١١١١١١١١١")  # Arabic-Indic digits


@given(
    prefix=st.sampled_from(["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "3528"]),
    body=st.text(alphabet="0123456789", min_size=20, max_size=20),
    sep=st.sampled_from(["", " ", "-"]),
    before=st.text(alphabet="abc XYZ:#(", max_size=10),
    after=st.text(alphabet="abc XYZ:#).", max_size=10),
)
def test_any_valid_card_in_digit_free_text_is_found(
    prefix: str, body: str, sep: str, before: str, after: str
) -> None:
    length = 15 if prefix in ("34", "37") else 16
    card = with_check_digit((prefix + body)[: length - 1])
    formatted = sep.join(printed_groups(card))
    text = before + formatted + after
    spans = find_cards(text)
    assert texts(spans, text) == [formatted]


@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_sixteen_digits_failing_luhn_are_never_cards(digits: str) -> None:
    if not luhn_ok(digits):
        assert find_cards(f"order {digits}") == []


# -- SSNs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ssn", ["219-09-9999", "219 09 9999", "001-01-0001", "899-99-9998"])
def test_ssn_found_in_free_text(ssn: str) -> None:
    text = f"SSN: {ssn}, verified by phone"
    assert texts(find_ssns(text), text) == [ssn]


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",  # area 000
        "666-12-3456",  # area 666
        "900-12-3456",  # area 900-999
        "999-12-3456",
        "219-00-9999",  # group 00
        "219-09-0000",  # serial 0000
        "078-05-1120",  # the Woolworth wallet card
        "123-45-6789",  # the advertising specimen
        "111-11-1111",  # all one digit
        "219-09 9999",  # mixed separators
        "219099999",  # bare 9 digits are too common to call an SSN
        "1219-09-9999",  # part of a longer number
        "219-09-99990",
        "ORD-219-09-9999",  # part of an id
        "94107-1234",
    ],
)
def test_ssn_look_alikes_and_invalid_ranges_are_not_flagged(text: str) -> None:
    assert find_ssns(text) == []


# -- IBAN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "gb82west12345698765432",
    ],
)
def test_iban_found_in_free_text(iban: str) -> None:
    text = f"Please refund to {iban} thanks"
    assert texts(find_ibans(text), text) == [iban]


@pytest.mark.parametrize(
    "text",
    [
        "GB83WEST12345698765432",  # bad check digits
        "GB82WEST1234569876543",  # one short
        "GB82WEST123456987654321",  # one long
        "ZZ82WEST12345698765432",  # not a country with IBANs
        "XGB82WEST12345698765432",  # inside a longer token
        "AB12 some words here",
    ],
)
def test_iban_look_alikes_are_not_flagged(text: str) -> None:
    assert find_ibans(text) == []


def test_iban_ok() -> None:
    assert iban_ok("DE89370400440532013000")
    assert not iban_ok("DE89370400440532013001")
    assert not iban_ok("DE8937040044053201300")


# -- phones --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone", ["+14155552671", "+1 415-555-2671", "+44 20 7946 0958", "+44 (20) 7946 0958"]
)
def test_international_phone_found(phone: str) -> None:
    text = f"call me at {phone} after 5"
    assert texts(find_phones(text), text) == [phone]


@pytest.mark.parametrize(
    "text",
    [
        "4155552671",  # a bare national number: indistinguishable from other ids
        "me+14155552671@example.com",  # plus-addressing in an e-mail
        "score +12",
        "+1234567",  # too short
        "+1234567890123456",  # too long
        "2024-01-15 +02:00",
    ],
)
def test_phone_look_alikes_are_not_flagged(text: str) -> None:
    assert find_phones(text) == []


# -- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "AKIA" + "IOSFODNN7EXAMPLE",
        "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "ghp_" + "a" * 36,
        "xoxb-" + "1234567890-abcdefghij",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    ],
)
def test_secret_found(secret: str) -> None:
    text = f"debug: {secret} end"
    assert texts(find_secrets(text), text) == [secret]


def test_ordinary_words_are_not_secrets() -> None:
    text = "Ask about the AKIA plan, the sk_live toggle and eyJ in the template."
    assert find_secrets(text) == []


# -- registry and redaction ----------------------------------------------------------------------


def test_redact_replaces_each_span_with_its_detector_name() -> None:
    text = "card 4111 1111 1111 1111, ssn 219-09-9999, iban DE89370400440532013000."
    spans = find_all(text)
    assert redact(text, spans) == (
        "card [REDACTED:card], ssn [REDACTED:ssn], iban [REDACTED:iban]."
    )


def test_redact_without_spans_returns_the_text() -> None:
    assert redact("nothing here", []) == "nothing here"


def test_merge_unions_overlapping_spans() -> None:
    spans = [Span(5, 10, "phone"), Span(0, 7, "card"), Span(12, 14, "ssn")]
    assert merge(spans) == [Span(0, 10, "card"), Span(12, 14, "ssn")]


def test_of_spans_starting_together_the_longest_names_the_merge() -> None:
    assert merge([Span(0, 14, "national_id"), Span(0, 19, "card")]) == [Span(0, 19, "card")]
    # a Visa number whose first twelve digits are also a valid Aadhaar number (Verhoeff)
    text = "card 4958 4894 8637 0751"
    assert redact(text, find_all(text)) == "card [REDACTED:card]"


def test_scanner_runs_only_the_named_detectors() -> None:
    text = "card 4111111111111111 ssn 219-09-9999"
    assert [s.detector for s in scanner(["ssn"])(text)] == ["ssn"]
    assert scanner([])(text) == []
    assert set(DETECTOR_NAMES) == {
        "card",
        "ssn",
        "iban",
        "phone",
        "national_id",
        "secret",
        "ip",
        "dob",
    }
    with pytest.raises(KeyError):
        scanner(["nope"])


def test_short_texts_skip_detection() -> None:
    assert find_all("+1415555") == []
    assert find_all("") == []
