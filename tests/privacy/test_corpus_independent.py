"""The default policy against the independent corpus (:mod:`tests.privacy.corpus_independent`).

That corpus was written before its author read the policy; these tests ask for 0 misses and
0 losses on it, check that its checksummed values really are valid (so a detector that validates
is asked fairly), and that no catch case is vacuous.
"""

from __future__ import annotations

import re
from collections import Counter

import phonenumbers
import pytest
from stdnum import iban, luhn
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar, pan
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.pt import nif
from stdnum.se import personnummer
from stdnum.us import itin, ssn

from tests.privacy import corpus_independent as ci
from tests.privacy.corpus import Case, outcome


@pytest.mark.parametrize("case", ci.CORPUS, ids=lambda c: f"{c.category}-{c.expect}")
def test_independent_case(case: Case) -> None:
    passed, why = outcome(case)
    assert passed, f"{case.category} {case.expect}: {why} in {sorted(case.attributes)}"


@pytest.mark.parametrize("case", [c for c, _ in ci.DOCUMENTED_CHOICE], ids=lambda c: c.category)
def test_documented_choices_still_hold(case: Case) -> None:
    """The cases docs/policy.md decides the other way: the policy still does what it says."""
    assert outcome(case)[0] is False


def test_corpus_is_large_and_no_catch_case_is_vacuous() -> None:
    expect = Counter(case.expect for case in ci.CORPUS)
    assert expect["catch"] >= 250 and expect["keep"] >= 80, expect
    for case in ci.CORPUS:
        if case.expect == "catch":
            assert case.secrets, case
            assert all(s for s in case.secrets), case


def test_values_are_valid() -> None:
    """Every checksummed value passes its own validator: a miss is the detector's, not ours."""
    assert all(luhn.is_valid(card) for card in ci.CARDS.values())
    assert all(ssn.is_valid(v) for v in ci.SSNS) and itin.is_valid(ci.ITIN)
    assert all(idnr.is_valid(v) for v in ci.STEUER_ID)
    assert all(nir.is_valid(v) for v in ci.NIR)
    assert all(dni.is_valid(v) for v in ci.DNI) and nie.is_valid(ci.NIE)
    assert all(codicefiscale.is_valid(v) for v in ci.CODICE_FISCALE)
    assert all(bsn.is_valid(v) for v in ci.BSN)
    assert all(pesel.is_valid(v) for v in ci.PESEL)
    assert all(personnummer.is_valid(v) for v in ci.PERSONNUMMER)
    assert all(cpf.is_valid(v) for v in ci.CPF)
    assert all(aadhaar.is_valid(v) for v in ci.AADHAAR) and pan.is_valid(ci.PAN_IN)
    assert all(sin.is_valid(v) for v in ci.SIN) and nif.is_valid(ci.PT_NIF)
    assert all(iban.is_valid(v) for v in ci.IBANS.values())
    nino = re.compile(r"^(?![DFIQUV])[A-Z](?![DFIOQUV])[A-Z]\d{6}[A-D]$")
    assert all(nino.match(v.replace(" ", "")) for v in ci.NINO)
    for region, forms in ci.PHONES.items():
        for form in forms:
            number = phonenumbers.parse(form, region[:2])
            assert phonenumbers.is_valid_number(number), (region, form)


def test_luhn_valid_order_ids_in_the_keep_cases_really_are() -> None:
    """The Amazon-style ids are kept although their digits pass Luhn: the case is not vacuous."""
    ids = ["112-4577463-7064330", "111-5145294-0394023", "114-6011682-9490410"]
    assert all(luhn.is_valid(i.replace("-", "")) for i in ids)
