"""The ``national_id`` detector: national identity and tax numbers written in free text.

Each format is found by a fixed-length pattern and confirmed by ``python-stdnum``'s checksum and
range validation (the library's own rules; version recorded by :data:`LIBRARY`), so that most
random digit strings fail. Only the shapes that are distinctive in running text are scanned:

==================  ===============================  ======================================
country / number    shape scanned                    validation
==================  ===============================  ======================================
US ITIN             ``9AA-GG-SSSS``                  ``stdnum.us.itin``
UK NINO             ``AB 12 34 56 C`` / compact      HMRC's prefix rules (hand-written)
DE Steuer-ID        ``12 345 678 901``               ``stdnum.de.idnr``
FR NIR              15 characters, spaced or not     ``stdnum.fr.nir``
ES DNI / NIE        ``12345678Z`` / ``X1234567L``    ``stdnum.es.dni`` / ``stdnum.es.nie``
IT codice fiscale   16 characters                    ``stdnum.it.codicefiscale``
SE personnummer     ``YYMMDD-NNNN`` (``+`` too)      ``stdnum.se.personnummer``
BR CPF              ``123.456.789-09``               ``stdnum.br.cpf``
IN Aadhaar          ``1234 5678 9012`` (or ``-``)    ``stdnum.in_.aadhaar`` (Verhoeff)
CA SIN              ``123 456 782`` (or ``-``)       ``stdnum.ca.sin`` (Luhn)
==================  ===============================  ======================================

Compact 9-11 digit forms (a bare BSN, Steuer-ID or SIN) and the 12-digit personnummer
(``YYYYMMDD-NNNN``, the shape of date-prefixed order ids) are not scanned: one random number in
eleven passes an 11-test, so order ids and phone numbers would be lost. They are caught by key
(``bsn``, ``steuer_id``, ``sin`` ... in the default policy). US SSNs have their own detector.

The UK NINO check is hand-written because python-stdnum has no ``gb.nino`` module: HMRC's
National Insurance Manual (NIM39110) excludes D, F, I, Q, U and V as first letter, D, F, I, O,
Q, U and V as second, and the prefixes BG, GB, KN, NK, NT, TN and ZZ; ``QQ`` is allowed here
because it is HMRC's own specimen prefix (``QQ 12 34 56 C``), which forms copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import version
from typing import Final

from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.se import personnummer
from stdnum.us import itin

LIBRARY: Final = f"python-stdnum {version('python-stdnum')}"

_L = r"(?<![A-Za-z0-9.\-])"
_R = r"(?![A-Za-z0-9\-]|\.\d)"

_NINO_FIRST_BAD = frozenset("DFIQUV")
_NINO_SECOND_BAD = frozenset("DFIOQUV")
_NINO_PREFIX_BAD = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def nino_ok(value: str) -> bool:
    """Whether a compact upper-case NINO (``AB123456C``) follows HMRC's allocation rules."""
    if len(value) != 9 or not value[2:8].isdigit() or value[8] not in "ABCD":
        return False
    prefix = value[:2]
    if prefix == "QQ":
        return True
    return not (
        prefix[0] in _NINO_FIRST_BAD or prefix[1] in _NINO_SECOND_BAD or prefix in _NINO_PREFIX_BAD
    )


def _stdnum(check: Callable[[str], bool]) -> Callable[[str], bool]:
    @lru_cache(maxsize=4096)
    def valid(text: str) -> bool:
        try:
            return bool(check(text))
        except Exception:  # stdnum raises its own errors on odd input; a failure is "not valid"
            return False

    return valid


_CF = "[0-9LMNPQRSTUV]"
FORMATS: Final[dict[str, tuple[re.Pattern[str], Callable[[str], bool]]]] = {
    "us-itin": (re.compile(_L + r"9\d{2}[- ]\d{2}[- ]\d{4}" + _R), _stdnum(itin.is_valid)),
    "gb-nino": (
        re.compile(_L + r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]" + _R),
        lambda t: nino_ok(t.replace(" ", "")),
    ),
    "de-idnr": (re.compile(_L + r"[1-9]\d (?:\d{3} ){2}\d{3}" + _R), _stdnum(idnr.is_valid)),
    "fr-nir": (
        re.compile(
            _L + r"(?:[1-478]\d{4}(?:\d{2}|2[AB])\d{8}"
            r"|[1-478] \d{2} \d{2} (?:\d{2}|2[AB]) \d{3} \d{3} \d{2})" + _R
        ),
        _stdnum(nir.is_valid),
    ),
    "es-dni": (re.compile(_L + r"\d{8}-?[A-Z]" + _R), _stdnum(dni.is_valid)),
    "es-nie": (re.compile(_L + r"[XYZ]-?\d{7}-?[A-Z]" + _R), _stdnum(nie.is_valid)),
    "it-codice-fiscale": (
        re.compile(_L + f"[A-Z]{{6}}{_CF}{{2}}[A-EHLMPR-T]{_CF}{{2}}[A-Z]{_CF}{{3}}[A-Z]" + _R),
        _stdnum(codicefiscale.is_valid),
    ),
    "se-personnummer": (
        re.compile(_L + r"\d{6}[-+]\d{4}" + _R),
        _stdnum(personnummer.is_valid),
    ),
    "br-cpf": (re.compile(_L + r"\d{3}\.\d{3}\.\d{3}-\d{2}" + _R), _stdnum(cpf.is_valid)),
    "in-aadhaar": (
        re.compile(_L + r"[2-9]\d{3}[ -]\d{4}[ -]\d{4}" + _R),
        _stdnum(aadhaar.is_valid),
    ),
    "ca-sin": (re.compile(_L + r"\d{3}[ -]\d{3}[ -]\d{3}" + _R), _stdnum(sin.is_valid)),
}


# Every format above is a run of digits and capitals with single separators, 9+ characters long
# and holding a digit. One pass finds such runs; the formats are then tried on each run only
# (with two characters of context each side for their boundary checks), so ordinary text costs
# one scan, not one per format.
_RUN: Final = re.compile(r"[0-9A-Z](?:[0-9A-Z]|[ .+\-](?=[0-9A-Z])){8,}+")
_DIGIT: Final = re.compile(r"[0-9]")


# All formats in one alternation, to find candidates in one call per run. At any start position
# at most one shape fits (their group lengths and letters differ), so the alternation loses
# nothing; a candidate that fails its check is retried one character later (a real number may
# start inside it), which reads at most a few dozen characters more each time.
_ANY: Final = re.compile(
    _L
    + "(?:"
    + "|".join(
        f"(?P<{name.replace('-', '_')}>{pattern.pattern.removeprefix(_L)})"
        for name, (pattern, _) in FORMATS.items()
    )
    + ")"
)


def find_national_id_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, format) of every validated national identifier in ``text``."""
    found: list[tuple[int, int, str]] = []
    for run in _RUN.finditer(text):
        start, end = run.span()
        if not _DIGIT.search(text, start, end):
            continue
        window_end = min(end + 2, len(text))
        pos = start
        while candidate := _ANY.search(text, pos, window_end):
            name = (candidate.lastgroup or "").replace("_", "-")
            if candidate.end() <= end and FORMATS[name][1](candidate.group()):
                found.append((candidate.start(), candidate.end(), name))
                pos = candidate.end()
            else:
                pos = candidate.start() + 1
    return found
