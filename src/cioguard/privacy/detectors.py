"""Value detectors: find personal data in free text that sits under an innocent key.

A key rule catches ``card_number``; it cannot catch a card number typed into a ``note``. These
detectors look at the text itself, offline, with a pattern plus a check that most random digit
strings fail (Luhn for cards, mod-97 for IBANs, issued ranges for SSNs), so that order numbers,
zip codes, timestamps and UUIDs pass untouched. Each detector returns :class:`Span` objects;
:func:`redact` replaces them with ``[REDACTED:<detector>]``.

Detectors (the names a policy lists under ``detectors``):

- ``card``: 13-19 digits, compact or in groups of 3 or more digits (a shorter last group
  allowed) separated by single spaces or dashes, anywhere in the text, with a valid Luhn check
  digit and a plausible issuer prefix and length. A longer digit run is not searched for a card
  inside it.
- ``ssn``: US Social Security numbers ``AAA-GG-SSSS`` or ``AAA GG SSSS`` in an issued range (as
  Microsoft Presidio: not area 000, 666 or 900-999, not group 00, not serial 0000, not all one
  digit), minus the well-known specimen numbers 078-05-1120 and 123-45-6789.
- ``iban``: a country code, two check digits and the country's BBAN length, compact or in groups
  of four, with a valid ISO 13616 mod-97 check.
- ``phone``: international numbers written with a leading ``+`` (E.164, 9-15 digits, single
  spaces, dashes or one parenthesised area code allowed). Numbers without ``+`` are not matched:
  without a country code they look like any other digit run.
- ``secret``: credentials with a distinctive shape: AWS access key ids, GitHub, Stripe, Slack and
  Google API keys, JWTs, bcrypt hashes and PEM private keys.

Note:
    Detection favours precision: a plain 9-digit run is not treated as an SSN and a digit run
    is only a card if it passes Luhn, so a card number written with odd punctuation
    (``4111.1111.1111.1111``) is missed. Key rules are the first line of defence; detectors
    are the net under them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, NamedTuple


class Span(NamedTuple):
    """A match: ``text[start:end]`` was found by ``detector``. Carries positions, never text."""

    start: int
    end: int
    detector: str


Detector = Callable[[str], list[Span]]

# -- payment cards -------------------------------------------------------------------------------

_DIGIT_RUN = re.compile(r"(?<!\d)(?<!\d[.,])\d+(?:[ -]\d+)*")
_GROUP_SPLIT = re.compile(r"[ -]")
_DECIMAL_AFTER = re.compile(r"[.,]\d")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def luhn_ok(digits: str) -> bool:
    """Whether a string of ASCII digits ends in a valid Luhn (mod 10) check digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """Whether ``digits`` (digits only) could be a payment card number.

    Note:
        Beyond Luhn, the issuer prefix must fit the length: 13 digits only for Visa (4...), a
        leading 1 only for 15-digit UATP, otherwise a leading 2-6 (Mastercard, Amex, Diners,
        Discover, JCB, UnionPay, Maestro, Visa). This keeps millisecond and microsecond Unix
        timestamps (13 and 16 digits starting with 1) from being taken for cards, at the cost of
        missing rare cards with other prefixes.
    """
    length = len(digits)
    if not 13 <= length <= 19 or not digits.isascii() or not digits.isdigit():
        return False
    first = digits[0]
    if length == 13:
        plausible = first == "4"
    elif first == "1":
        plausible = length == 15
    else:
        plausible = first in "23456"
    return plausible and luhn_ok(digits)


def find_cards(text: str) -> list[Span]:
    """Card numbers anywhere in ``text``, compact or grouped by single spaces or dashes."""
    spans: list[Span] = []
    uuids: list[tuple[int, int]] | None = None
    for run in _DIGIT_RUN.finditer(text):
        chunk = run.group()
        if len(chunk) < 13:
            continue
        groups = _GROUP_SPLIT.split(chunk)
        if _DECIMAL_AFTER.match(text, run.end()):
            groups.pop()  # the last group is the integer part of a decimal number
        if sum(map(len, groups)) < 13:
            continue
        offsets = []
        offset = run.start()
        for group in groups:
            offsets.append(offset)
            offset += len(group) + 1
        i = 0
        while i < len(groups):
            best = -1
            digits = ""
            for j in range(i, len(groups)):
                short = len(groups[j]) < 3  # only as a tail: "4111 1111 1111 1111 12"
                if short and len(digits) < 12:
                    break
                digits += groups[j]
                if len(digits) > 19:
                    break
                if is_card_number(digits):
                    best = j
                if short:
                    break
            if best < 0:
                i += 1
                continue
            start, end = offsets[i], offsets[best] + len(groups[best])
            if uuids is None:
                uuids = [m.span() for m in _UUID.finditer(text)]
            if not any(u_start <= start and end <= u_end for u_start, u_end in uuids):
                spans.append(Span(start, end, "card"))
            i = best + 1
    return spans


# -- US social security numbers ------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_SPECIMENS: Final = frozenset({"078051120", "123456789"})


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """Whether the three parts of an SSN lie in a range the SSA issues (no checksum exists)."""
    digits = area + group + serial
    return not (
        area in ("000", "666")
        or area[0] == "9"
        or group == "00"
        or serial == "0000"
        or digits in _SSN_SPECIMENS
        or digits == digits[0] * 9
    )


def find_ssns(text: str) -> list[Span]:
    """US SSNs written ``AAA-GG-SSSS`` or ``AAA GG SSSS`` (the same separator twice)."""
    return [
        Span(m.start(), m.end(), "ssn")
        for m in _SSN.finditer(text)
        if ssn_ok(m.group(1), m.group(3), m.group(4))
    ]


# -- IBAN ----------------------------------------------------------------------------------------

# Total IBAN length per country, from the SWIFT IBAN registry.
IBAN_LENGTHS: Final[Mapping[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?= ?[A-Za-z0-9])")


def iban_ok(iban: str) -> bool:
    """Whether a compact IBAN has its country's length and a valid mod-97 check."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isascii() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def find_ibans(text: str) -> list[Span]:
    """IBANs, compact (``DE89370400440532013000``) or in groups (``DE89 3704 0044 ...``)."""
    spans: list[Span] = []
    pos = 0
    while match := _IBAN_START.search(text, pos):
        start = match.start()
        pos = match.end()
        length = IBAN_LENGTHS.get(text[start : start + 2].upper())
        if length is None:
            continue
        chars: list[str] = []
        i = start
        while i < len(text) and len(chars) < length:
            char = text[i]
            if char.isascii() and char.isalnum():
                chars.append(char)
            elif not (char == " " and chars and i + 1 < len(text) and text[i + 1].isalnum()):
                break
            i += 1
        at_boundary = not (i < len(text) and text[i].isalnum())
        if len(chars) == length and at_boundary and iban_ok("".join(chars)):
            spans.append(Span(start, i, "iban"))
            pos = i
    return spans


# -- phone numbers -------------------------------------------------------------------------------

_PHONE = re.compile(r"(?<![\w+])\+[1-9]\d{0,3}(?:[ -]?\(\d{1,5}\))?(?:[ -]?\d+){1,6}(?!\d)")
_NOT_DIGIT = re.compile(r"\D")


def find_phones(text: str) -> list[Span]:
    """International phone numbers with a leading ``+`` and 9-15 digits."""
    return [
        Span(m.start(), m.end(), "phone")
        for m in _PHONE.finditer(text)
        if 9 <= len(_NOT_DIGIT.sub("", m.group())) <= 15
    ]


# -- secrets -------------------------------------------------------------------------------------

_SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b"
    r"|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"
    r"|\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\b"
    r"|\bxox[abposr]-[0-9A-Za-z-]{10,}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|\$2[aby]?\$\d{2}\$[./A-Za-z0-9]{53}"
)


def find_secrets(text: str) -> list[Span]:
    """Credentials whose shape gives them away (cloud keys, API tokens, JWTs, private keys)."""
    return [Span(m.start(), m.end(), "secret") for m in _SECRET.finditer(text)]


# -- registry and redaction ----------------------------------------------------------------------

DETECTORS: Final[Mapping[str, Detector]] = {
    "card": find_cards,
    "ssn": find_ssns,
    "iban": find_ibans,
    "phone": find_phones,
    "secret": find_secrets,
}
DETECTOR_NAMES: Final = tuple(DETECTORS)


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-overlapping spans; where two overlap, the earlier one absorbs the later."""
    merged: list[Span] = []
    for span in sorted(spans):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), last.detector)
        else:
            merged.append(span)
    return merged


# Every detector needs at least this many characters, and all but ``secret`` need a digit.
MIN_MATCH_CHARS: Final = 10
_NEEDS_DIGIT: Final = frozenset({"card", "ssn", "iban", "phone"})
_ANY_DIGIT = re.compile(r"\d")


def scanner(names: Iterable[str]) -> Callable[[str], list[Span]]:
    """One function running the named detectors over a text and merging their spans.

    Short texts and texts without a digit skip the detectors that could not match them, which
    keeps the common case (names, plans, e-mail addresses) to a length check and one search.
    Raises ``KeyError`` for an unknown name (policies are validated before they get here).
    """
    names = tuple(names)
    with_digits = tuple(DETECTORS[name] for name in names if name in _NEEDS_DIGIT)
    always = tuple(DETECTORS[name] for name in names if name not in _NEEDS_DIGIT)
    has_digit = _ANY_DIGIT.search

    def scan(text: str) -> list[Span]:
        if len(text) < MIN_MATCH_CHARS:
            return []
        spans: list[Span] = []
        for detect in always:
            spans += detect(text)
        if with_digits and has_digit(text):
            for detect in with_digits:
                spans += detect(text)
        return merge(spans) if len(spans) > 1 else spans

    return scan


def find_all(text: str, names: Iterable[str] = DETECTOR_NAMES) -> list[Span]:
    """Every span the named detectors find in ``text``, merged."""
    return scanner(names)(text)


def redact(text: str, spans: Iterable[Span]) -> str:
    """``text`` with each span replaced by ``[REDACTED:<detector>]``."""
    parts: list[str] = []
    pos = 0
    for span in merge(spans):
        parts.append(text[pos : span.start])
        parts.append(f"[REDACTED:{span.detector}]")
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)
