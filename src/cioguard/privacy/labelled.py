"""Values that free text *labels*: ``DOB: 1984-02-29``, ``PESEL 91072405754``, ``BSN: 913539612``.

A bare date or a bare 9-11 digit number is not personal data to a detector (order ids, build
numbers and timestamps look the same), which is why :mod:`.national_ids` scans only printed
shapes. A label written right before the value removes the doubt: support notes, ticket bodies
and CRM comments say what they quote. So this module finds a label word (in EN, DE, FR, ES, IT,
NL, PL, SV and PT), an optional ``number``/``no.``/``#``, a ``:`` or ``=``, and then:

- for a date-of-birth label, a date (numeric in any order of day, month and year, or with a
  month name) whose year is plausible (1900-2099): the ``dob`` detector;
- for a national-number label, a number that passes *that* label's own validator from
  ``python-stdnum`` (PESEL, BSN, Steuer-ID, personnummer, SIN, Aadhaar, CPF, NIF, NIR, codice
  fiscale, DNI/NIE, SSN/ITIN): the ``national_id`` detector (:mod:`.national_ids` calls it).

Only the value is redacted; the label stays, so a reader sees what was there.

Hand-written: no library finds "label, then value" in text. Linear time: each pattern starts
at a word boundary with a bounded literal alternation and reads bounded runs, and it is tried
only where a label keyword occurs (``str.find``), not at every position.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Final

from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.pt import nif
from stdnum.se import personnummer
from stdnum.us import itin, ssn

_SEP: Final = (
    r"(?:\s{0,3}(?:number|nummer|numer|numero|número|no\.?|nr\.?|n°|#))?\s{0,3}[:=#-]?\s{0,3}"
    r"(?:(?:is|ist|est|es|è|är|jest|é)\s{1,3})?"
)

_DOB_LABELS: Final = (
    r"dob|d\.o\.b\.?|date\s{1,2}of\s{1,2}birth|birth\s{0,2}date|birthday|born(?:\s{1,2}on)?"
    r"|geb\.|geboren(?:\s{1,2}am|\s{1,2}op)?|geburtsdatum|geburtstag|n[ée]e?\s{1,2}le"
    r"|date\s{1,2}de\s{1,2}naissance|fecha\s{1,2}de\s{1,2}nacimiento|nacid[oa]\s{1,2}el"
    r"|data\s{1,2}di\s{1,2}nascita|nat[oa]\s{1,2}il|geboortedatum|f[öo]delsedatum|f[öo]dd"
    r"|data\s{1,2}urodzenia|urodzon[ya]|data\s{1,2}de\s{1,2}nascimento|nascid[oa]\s{1,2}em"
)
_MONTH: Final = r"[A-Za-zÀ-ÿ]{3,10}\.?"
_DATE: Final = (
    r"(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}\.?\s{1,2}" + _MONTH + r"\s{1,2}\d{4}"
    r"|" + _MONTH + r"\s{1,2}\d{1,2},?\s{1,2}\d{4}|\d{8})(?![0-9])"
)
_DOB: Final = re.compile(r"(?i:\b(?:" + _DOB_LABELS + r")(?![a-z])" + _SEP + r")" + _DATE)
# Every label starts with one of these (lower case): the patterns are tried only there.
_DOB_KEYWORDS: Final = ("dob", "d.o.b", "date", "birth", "born", "geb", "né", "ne le", "nee le",
                        "fecha", "nacid", "data", "nato", "nata", "geboorte", "födelse",
                        "fodelse", "född", "fodd", "urodzon", "nascid")  # fmt: skip
_YEAR: Final = re.compile(r"(?<![0-9])(?:19|20)[0-9]{2}(?![0-9])")


def _date_ok(text: str) -> bool:
    """A plausible date: a 1900-2099 year, and numeric parts that can be a day and a month."""
    if not _YEAR.search(text):
        return False
    parts = [int(p) for p in re.split(r"[./\- ,]+", text) if p.isdigit()]
    if len(parts) == 1 and len(text) == 8:  # YYYYMMDD or DDMMYYYY
        digits = text
        parts = [int(digits[:4]), int(digits[4:6]), int(digits[6:])]
        if not 1900 <= parts[0] <= 2099:
            parts = [int(digits[:2]), int(digits[2:4]), int(digits[4:])]
    small = [p for p in parts if p < 100]
    return all(1 <= p <= 31 for p in small) and any(p <= 12 for p in small)


def find_dob_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each date written right after a date-of-birth label."""
    return [m.span("date") for m in _labelled(_DOB, _DOB_KEYWORDS, text) if _date_ok(m["date"])]


def _labelled(
    pattern: re.Pattern[str], keywords: tuple[str, ...], text: str
) -> list[re.Match[str]]:
    """Matches of ``pattern`` (which starts with a label) tried only where a label keyword is.

    Why not ``finditer``: a case-insensitive alternation of forty labels, tried at every
    position of a 1000-character note, costs ~0.5 ms; ``str.find`` per keyword skips to the few
    places a label can start, and each anchored try reads a bounded stretch, so the scan stays
    linear and ordinary text pays a few substring searches.
    """
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: positions shift
        return list(pattern.finditer(text))
    starts: set[int] = set()
    for keyword in keywords:
        pos = lowered.find(keyword)
        while pos != -1:
            starts.add(pos)
            pos = lowered.find(keyword, pos + 1)
    found: list[re.Match[str]] = []
    end = 0
    for start in sorted(starts):
        if start >= end and (match := pattern.match(text, start)):
            found.append(match)
            end = match.end()
    return found


def _valid(*checks: Callable[[str], bool]) -> Callable[[str], bool]:
    @lru_cache(maxsize=4096)
    def valid(value: str) -> bool:
        for check in checks:
            try:
                if check(value):
                    return True
            except Exception:  # stdnum raises its own errors on odd input: not valid
                continue
        return False

    return valid


def _compact(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: value.isdigit() and check(value)


# label (a regex, case-insensitive) -> the validators its value must pass
_NUMBER_LABELS: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    (r"pesel", _valid(pesel.is_valid)),
    (r"bsn|burgerservicenummer|sofinummer", _valid(bsn.is_valid)),
    (r"steuer-?\s{0,2}id|idnr|(?:steuer)?identifikationsnummer", _valid(idnr.is_valid)),
    (r"personnummer|personnr", _valid(personnummer.is_valid)),
    (r"sin|social\s{1,2}insurance", _valid(sin.is_valid)),
    (r"aadhaa?r|uidai", _valid(aadhaar.is_valid)),
    (r"cpf", _valid(cpf.is_valid)),
    (r"nif|nif\s{1,2}contribuinte", _valid(nif.is_valid, dni.is_valid, nie.is_valid)),
    (r"nir|s[ée]curit[ée]\s{1,2}sociale|insee", _valid(nir.is_valid)),
    (r"codice\s{1,2}fiscale|c\.f\.", _valid(codicefiscale.is_valid)),
    (r"dni|nie|documento\s{1,2}de\s{1,2}identidad", _valid(dni.is_valid, nie.is_valid)),
    # Compact only: the printed AAA-GG-SSSS form is the ``ssn`` detector's, which names it.
    (
        r"ssn|social\s{1,2}security|social|itin",
        _valid(_compact(ssn.is_valid), _compact(itin.is_valid)),
    ),
    (
        r"tax\s{0,2}id|tin|tax\s{1,2}identification",
        _valid(ssn.is_valid, itin.is_valid, idnr.is_valid, nif.is_valid, cpf.is_valid),
    ),
)
_NUMBER: Final = re.compile(
    r"(?i:\b(?:"
    + "|".join(f"(?P<l{i}>{label})" for i, (label, _) in enumerate(_NUMBER_LABELS))
    + r")(?![a-z])"
    + _SEP
    + r")(?P<value>[0-9A-Z](?:[0-9A-Z]|[ .\-/](?=[0-9A-Z])){5,22}+)"
)
_NUMBER_KEYWORDS: Final = ("pesel", "bsn", "burgerservice", "sofi", "steuer", "idnr",
                           "identifikation", "personn", "sin", "social", "aadha", "uidai", "cpf",
                           "nif", "nir", "sécurité", "securite", "insee", "codice", "c.f.", "dni",
                           "nie", "documento", "ssn", "itin", "tax", "tin")  # fmt: skip
_SEPARATORS: Final = re.compile(r"[ .\-/]")


def find_labelled_number_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each national number written right after its own label.

    The value run may swallow a following capitalised word (``PESEL 91072405754 OK``), so the
    whole run is tried first, then each shorter prefix that ends before a separator.
    """
    spans: list[tuple[int, int]] = []
    for match in _labelled(_NUMBER, _NUMBER_KEYWORDS, text):
        check = None
        for i, (_, validator) in enumerate(_NUMBER_LABELS):
            if match.group(f"l{i}") is not None:
                check = validator
                break
        if check is None:
            continue
        start = match.start("value")
        value = match.group("value")
        cuts = [len(value), *[m.start() for m in _SEPARATORS.finditer(value)][::-1]]
        for cut in cuts:
            if check(value[:cut]) and not value[:cut].isalpha():
                spans.append((start, start + cut))
                break
    return spans
