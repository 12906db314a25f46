"""The default policy against the public-source corpus, and ordinary data against false positives.

Done when (issue 16): 0 misses on must-catch cases, 0 losses on must-keep cases, and ordinary
product data survives unchanged. The corpus is in :mod:`tests.privacy.corpus`; the generator of
ordinary values in :mod:`tests.privacy.ordinary`.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cioguard.privacy.policy import default_policy
from cioguard.privacy.sanitizer import Sanitizer
from tests.privacy.corpus import CORPUS, Case, counts, outcome
from tests.privacy.ordinary import GENERATORS, ordinary_values

SANITIZER = Sanitizer(default_policy(), b"corpus-key")


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.category}-{c.expect}")
def test_corpus_case(case: Case) -> None:
    passed, why = outcome(case)
    assert passed, f"{case.category} {case.expect}: {why}"


def test_corpus_covers_every_category_both_ways() -> None:
    table = counts()
    categories = {category for category, _ in table}
    assert categories >= {"card", "ssn", "national_id", "bank", "phone", "ip", "address", "dob",
                          "art9", "secret", "email"}  # fmt: skip
    for category in categories - {"email"}:
        assert (category, "catch") in table and (category, "keep") in table, category
    assert sum(n for n, _ in table.values()) >= 300


def test_the_outcome_check_can_fail() -> None:
    """A policy that keeps everything misses every catch case: the check is not vacuous."""
    leaky = Case("card", "catch", {"password": "x-leak"}, ("x-leak",))
    assert outcome(leaky) == (True, "")
    kept = Case("card", "catch", {"order": "x-leak"}, ("x-leak",))
    assert outcome(kept)[0] is False
    changed = Case("card", "keep", {"password": "x"})
    assert outcome(changed)[0] is False


def test_ten_thousand_ordinary_values_survive_unchanged() -> None:
    """The false-positive rate on 10,000 seeded ordinary values, under an innocent key."""
    changed: Counter[str] = Counter()
    for kind, value in ordinary_values(10_000):
        if SANITIZER.apply({"note": value}) != {"note": value}:
            changed[kind] += 1
    assert not changed, dict(changed)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(GENERATORS)), st.randoms(use_true_random=False))
def test_any_ordinary_value_survives_a_whole_profile(kind: str, r: object) -> None:
    rng = r  # hypothesis' Random, a random.Random subclass
    values = {f"{kind}_{i}": GENERATORS[kind](rng) for i in range(5)}  # type: ignore[arg-type]
    profile = {"email": "ada@example.com", "plan": "pro", "attrs": values, "tags": list(values)}
    assert SANITIZER.apply(profile) == profile
