"""Value detectors: find personal data in free text that sits under an innocent key.

A key rule catches ``card_number``; it cannot catch a card number typed into a ``note``. These
detectors look at the text itself, offline, with a pattern plus a check that most random digit
strings fail (Luhn for cards, mod-97 for IBANs, issued ranges for SSNs), so that order numbers,
zip codes, timestamps and UUIDs pass untouched. Each detector returns :class:`Span` objects;
:func:`redact` replaces them with ``[REDACTED:<detector>]``.

Detectors (the names a policy lists under ``detectors``; docs/policy.md has the full table):

- ``card``: 13-19 digits with a valid Luhn check digit and a plausible issuer prefix and
  length, compact or grouped as cards are printed (4-4-4-4, 4-6-5, ...) with one kind of
  separator (space, dash, dot, slash), in lists and CSV lines too.
- ``ssn``: US Social Security numbers ``AAA-GG-SSSS`` or ``AAA GG SSSS`` in an issued range (as
  Microsoft Presidio: not area 000, 666 or 900-999, not group 00, not serial 0000, not all one
  digit), minus the well-known specimen numbers 078-05-1120 and 123-45-6789. Hand-written:
  ``stdnum.us.ssn`` also refuses 219-09-9999, a specimen people do type into forms.
- ``iban``: compact or in groups of four, validated by ``python-stdnum``.
- ``phone``: international and national formats, validated by libphonenumber (:mod:`.phones`).
- ``national_id``: national identity and tax numbers validated by ``python-stdnum``
  (:mod:`.national_ids`).
- ``secret``: credential formats from gitleaks' rule set and context rules (:mod:`.secrets`).
- ``ip``: IPv4 and IPv6 addresses, validated by :mod:`ipaddress` (:mod:`.ips`).
- ``dob``: a date written right after a date-of-birth label (``DOB: ...``; :mod:`.labelled`).

Every text is folded first (NFKC, zero-width characters removed, full-width digits and
no-break spaces made ASCII; :mod:`.normalize`), and every pattern runs in linear time
(possessive quantifiers, boundary lookbehinds), checked by ``python -m bench sanitize``.

Note:
    Detection favours precision: a plain 9-digit run is not treated as an SSN and a bare
    10-digit run is not a phone; key rules are the first line of defence and detectors are the
    net under them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib.metadata import version
from typing import Final, NamedTuple

from stdnum import iban as stdnum_iban

from cioguard.privacy import ips, labelled, national_ids, phones, secrets
from cioguard.privacy.normalize import fold_text, unfold_span


def stdnum_library() -> str:
    """The python-stdnum version the IBAN and national-id checks run on."""
    return f"python-stdnum {version('python-stdnum')}"


class Span(NamedTuple):
    """A match: ``text[start:end]`` was found by ``detector``. Carries positions, never text."""

    start: int
    end: int
    detector: str


Detector = Callable[..., list[Span]]

# -- payment cards -------------------------------------------------------------------------------

# How card numbers are printed (ISO/IEC 7812 and the networks' embossing): 4-4-4-4 with an
# optional tail of up to 3 (19-digit cards), 4-4-4-1..4 (13-16 digits), Amex 4-6-5, Diners 4-6-4
# and 4-4-5; one separator (space, dash, dot or slash) throughout. Compact: 13-19 digits.
_GROUPED = re.compile(
    r"(?<![0-9])[0-9]{4}(?P<s>[ ./-])"
    r"(?:[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}(?:(?P=s)(?P<tail>[0-9]{1,3}))?"
    r"|[0-9]{6}(?P=s)[0-9]{4,5}|[0-9]{4}(?P=s)[0-9]{5})(?![0-9])"
)
_NO_SEPARATORS = str.maketrans("", "", " ./-")
_COMPACT = re.compile(r"(?<![0-9])[0-9]{13,19}+(?![0-9])")
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_RUN = 32  # a run of this many hex characters is a hash or a UUID without dashes
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


@lru_cache(maxsize=8192)
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
    """Card numbers in ``text``: compact, or grouped as cards are printed, with spaces, dashes,
    dots or slashes; in CSV lines and comma-separated lists too.

    A compact run that is one side of a decimal point (``3.1415926535897932``) is a number, not
    a card; grouped runs must follow a card grouping (``113-1234567-1234567``, an order id, is
    not searched for a card inside it). A failed grouped candidate is retried one character
    later, so a card printed after an unrelated group (``2024 4111 1111 1111 1111``) is found;
    each retry reads at most 23 characters, so the scan stays linear.
    """
    spans: list[Span] = []
    pos = 0
    while found := _GROUPED.search(text, pos):
        start, end = found.span()
        digits = found.group().translate(_NO_SEPARATORS)
        tail = found.group("tail")
        if is_card_number(digits):
            spans.append(Span(start, end, "card"))
            pos = end
        elif tail and is_card_number(digits[: -len(tail)]):
            spans.append(Span(start, end - len(tail) - 1, "card"))
            pos = end
        else:
            pos = start + 1
    for found in _COMPACT.finditer(text):
        start, end = found.span()
        if not is_card_number(found.group()) or _inside_hex(text, start, end):
            continue
        after_dot = start > 1 and text[start - 1] == "." and text[start - 2].isdigit()
        before_dot = end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit()
        if not (after_dot or before_dot):
            spans.append(Span(start, end, "card"))
    if spans and "-" in text:  # an all-digit stretch of a UUID is not a card
        uuids = [m.span() for m in _UUID.finditer(text)]
        spans = [s for s in spans if not any(a <= s.start and s.end <= b for a, b in uuids)]
    return sorted(spans)


def _inside_hex(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is part of a run of 32+ hex characters (a hash, not a card).

    Looks at most ``_HEX_RUN`` characters each way, so the cost per candidate is bounded.
    """
    if not (start and text[start - 1] in _HEX) and not (end < len(text) and text[end] in _HEX):
        return False
    lo = start
    while lo > 0 and start - lo < _HEX_RUN and text[lo - 1] in _HEX:
        lo -= 1
    hi = end
    while hi < len(text) and hi - end < _HEX_RUN and text[hi] in _HEX:
        hi += 1
    run = text[lo:hi]
    return hi - lo >= _HEX_RUN and all(c in _HEX for c in run) and not run.isdigit()


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


@lru_cache(maxsize=8192)
def iban_ok(iban: str) -> bool:
    """Whether a compact IBAN has its country's length and BBAN format and a valid mod-97 check.

    Validation is ``python-stdnum``'s (``stdnum.iban``, which carries the SWIFT registry's
    per-country formats); the length table above only bounds how far the scanner reads.
    """
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isascii() or not iban.isalnum():
        return False
    return bool(stdnum_iban.is_valid(iban))


@lru_cache(maxsize=64)
def _iban_body(length: int) -> re.Pattern[str]:
    """``length`` ASCII letters or digits, single spaces allowed between them."""
    return re.compile(r"[A-Za-z0-9](?: ?[A-Za-z0-9]){" + str(length - 1) + "}")


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
        body = _iban_body(length).match(text, start)
        if body is None:
            continue
        end = body.end()
        at_boundary = not (end < len(text) and text[end].isalnum())
        if at_boundary and iban_ok(body.group().replace(" ", "")):
            spans.append(Span(start, end, "iban"))
            pos = end
    return spans


# -- phone numbers, national ids, secrets (their own modules) -------------------------------------


def find_phones(text: str, region: str = phones.DEFAULT_REGION) -> list[Span]:
    """Phone numbers (libphonenumber), national formats read in ``region``."""
    return [Span(a, b, "phone") for a, b in phones.find_phone_spans(text, region)]


def find_national_ids(text: str) -> list[Span]:
    """National identity and tax numbers validated by python-stdnum: printed shapes
    (:mod:`.national_ids`), and bare numbers right after their own label (:mod:`.labelled`)."""
    found = [(a, b) for a, b, _ in national_ids.find_national_id_spans(text)]
    found += labelled.find_labelled_number_spans(text)
    return [Span(a, b, "national_id") for a, b in found]


def find_secrets(text: str) -> list[Span]:
    """Credentials: token formats from gitleaks' rules, URL credentials, auth headers."""
    return [Span(a, b, "secret") for a, b in secrets.find_secret_spans(text)]


def find_ips(text: str) -> list[Span]:
    """IPv4 and IPv6 addresses (:mod:`.ips`)."""
    return [Span(a, b, "ip") for a, b in ips.find_ip_spans(text)]


def find_dobs(text: str) -> list[Span]:
    """Dates of birth after a label (:mod:`.labelled`)."""
    return [Span(a, b, "dob") for a, b in labelled.find_dob_spans(text)]


# -- registry and redaction ----------------------------------------------------------------------

DETECTORS: Final[Mapping[str, Detector]] = {
    "card": find_cards,
    "ssn": find_ssns,
    "iban": find_ibans,
    "phone": find_phones,
    "national_id": find_national_ids,
    "secret": find_secrets,
    "ip": find_ips,
    "dob": find_dobs,
}
DETECTOR_NAMES: Final = tuple(DETECTORS)
# What each detector is built on, for ``cioguard policy explain`` and docs/policy.md.
LIBRARIES: Final[Mapping[str, str]] = {
    "card": "Luhn + issuer prefixes (hand-written)",
    "ssn": "SSA issued ranges (hand-written, as Microsoft Presidio)",
    "iban": stdnum_library(),
    "phone": phones.LIBRARY,
    "national_id": national_ids.LIBRARY,
    "secret": "gitleaks rules v8.30.0-27 (transcribed)",
    "ip": "ipaddress (Python standard library)",
    "dob": "labelled dates (hand-written)",
}


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-overlapping spans; where two overlap, the earlier one absorbs the later.

    Of spans starting at the same place the longest comes first, so its detector names the
    merged span (a card whose first twelve digits also pass as an Aadhaar number is a card).
    """
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end, s.detector)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), last.detector)
        else:
            merged.append(span)
    return merged


# Every detector needs at least this many characters, and all but ``secret`` need a digit.
MIN_MATCH_CHARS: Final = 8
_NEEDS_DIGIT: Final = frozenset({"card", "ssn", "iban", "phone", "national_id", "ip", "dob"})
_ANY_DIGIT = re.compile(r"\d")

Scan = Callable[..., list[Span]]


def scanner(names: Iterable[str], region: str = phones.DEFAULT_REGION) -> Scan:
    """One function ``scan(text, region=None)`` running the named detectors, spans merged.

    The text is folded first (:func:`~cioguard.privacy.normalize.fold_text`: NFKC, no
    zero-width characters, full-width digits as ASCII) and spans are mapped back to the
    original text. Short texts and texts without a digit skip the detectors that could not
    match them. ``region`` (per call, or the default given here) is the phone detector's hint
    for national formats. Raises ``KeyError`` for an unknown name.
    """
    names = tuple(names)
    for name in names:
        DETECTORS[name]
    digit_names = tuple(n for n in names if n in _NEEDS_DIGIT)
    always = tuple(DETECTORS[n] for n in names if n not in _NEEDS_DIGIT)
    default_region = region
    has_digit = _ANY_DIGIT.search

    def scan(text: str, region: str | None = None) -> list[Span]:
        if len(text) < MIN_MATCH_CHARS:
            return []
        folded, origin = fold_text(text)
        spans: list[Span] = []
        for detect in always:
            spans += detect(folded)
        if digit_names and has_digit(folded):
            for name in digit_names:
                if name == "phone":
                    spans += find_phones(folded, region or default_region)
                else:
                    spans += DETECTORS[name](folded)
        if origin is not None:
            spans = [Span(*unfold_span(origin, s.start, s.end), s.detector) for s in spans]
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


# -- e-mail addresses (for log and Sentry scrubbing only) ---------------------------------------

# Not a detector: the default policy keeps e-mail addresses (Customer.io needs them). Logs and
# Sentry must not carry them, so :mod:`cioguard.ops` redacts what this finds. Linear: the local
# part is possessive and the domain labels cannot overlap.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}+@(?:[A-Za-z0-9-]{1,63}+\.)++[A-Za-z]{2,63}+"
)


def redact_emails(text: str) -> str:
    """``text`` with every e-mail address replaced by ``[REDACTED:email]``."""
    return _EMAIL.sub("[REDACTED:email]", text) if "@" in text else text
