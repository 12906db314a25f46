"""Round 3 of issue 16: what the independent corpus found, as unit tests that can fail.

New detectors (``ip``, ``dob``, labelled national numbers), wider secret pairs, and the
sanitizer's name/value pairs, booleans that describe a field, and walked card objects.
"""

from __future__ import annotations

from typing import Any

import pytest

from cioguard.privacy.detectors import find_all, find_dobs, find_ips, find_national_ids
from cioguard.privacy.normalize import normalize_key
from cioguard.privacy.policy import default_policy, parse_policy
from cioguard.privacy.sanitizer import Sanitizer

SANITIZER = Sanitizer(default_policy(), b"v3-key")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("GET /account 200 from 198.51.100.61", "198.51.100.61"),
        ("blocked 2001:db8:4006:812::200e twice", "2001:db8:4006:812::200e"),
        ("[2001:0db8:0000:0000:0000:ff00:0042:8329]", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
        ("xff: 203.0.113.9, 198.51.100.2", "203.0.113.9"),
    ],
)
def test_ip_addresses_in_text_are_found(text: str, found: str) -> None:
    assert [text[s.start : s.end] for s in find_ips(text)][:1] == [found]


@pytest.mark.parametrize(
    "text",
    [
        "build 10.0.19045.4529",  # five parts
        "v1.2.3.4",  # a letter before it
        "version 2.4.1.7",  # after a version word
        "app 10.0.0.12",  # RFC 1918: not routable, and the shape of a version
        "at 10:00:01 and 12:30",  # clock times
        "mac 00:1A:2B:3C:4D:5E",  # six groups, no ::
        "std a::b",  # too short
        "price 1.299.00",
        "999.1.1.1 is no address",
    ],
)
def test_versions_times_and_local_addresses_are_not_ips(text: str) -> None:
    assert find_ips(text) == []


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("DOB: 1984-02-29, verified", "1984-02-29"),
        ("date of birth 12.03.1985", "12.03.1985"),
        ("born on March 12, 1985", "March 12, 1985"),
        ("Geburtsdatum: 01.02.1970", "01.02.1970"),
        ("né le 05/04/1987 à Lyon", "05/04/1987"),
        ("fecha de nacimiento 23/10/1975", "23/10/1975"),
        ("data urodzenia 1994-03-08", "1994-03-08"),
    ],
)
def test_a_date_after_a_birth_label_is_found(text: str, date: str) -> None:
    assert [text[s.start : s.end] for s in find_dobs(text)] == [date]


@pytest.mark.parametrize(
    "text",
    [
        "created 1985-03-12, shipped 2024-06-01",  # no label
        "DOB: pending",  # no date
        "dob 99/99/1985",  # no day or month
        "born on 12.03.",  # no year
        "doberman 2024-01-02",  # a label only as a word
    ],
)
def test_dates_without_a_birth_label_pass(text: str) -> None:
    assert find_dobs(text) == []


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("PESEL 91072405754 podany przez klienta", "91072405754"),
        ("BSN: 913539612", "913539612"),
        ("Steuer-ID 72328601290", "72328601290"),
        ("SIN no. 146497011", "146497011"),
        ("aadhaar 398472964991", "398472964991"),
        ("ssn is 536904399 thanks", "536904399"),
    ],
)
def test_a_bare_national_number_after_its_own_label_is_found(text: str, number: str) -> None:
    assert [text[s.start : s.end] for s in find_national_ids(text)] == [number]


@pytest.mark.parametrize(
    "text",
    [
        "PESEL 91072405755",  # checksum fails
        "BSN: 913539613",
        "order 91072405754 shipped",  # valid PESEL digits, no label
        "since 146497011 days",  # 'sin' only inside a word
        "tax id: pending",
    ],
)
def test_labelled_numbers_need_the_label_and_the_checksum(text: str) -> None:
    assert find_national_ids(text) == []


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY=q8Yb3kZ1vN0rT6wXeP2sLmA9\nDEBUG=0", "q8Yb3kZ1vN0rT6wXeP2sLmA9"),
        ("auth ok token=Hk7Qz2Wm9Xc4Vb1N ip=-", "Hk7Qz2Wm9Xc4Vb1N"),
        ("db_password: 'S0mmer2024!!'", "S0mmer2024!!"),
        ("whsec_" + "Hk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3Js5Df0Ga", "whsec_Hk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3Js5Df0Ga"),
        ("key-" + "3ax6xnjp29jd6fds4gc373sgvjxteol0", "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"),
    ],
)
def test_prefixed_pairs_and_new_token_formats_are_secrets(text: str, secret: str) -> None:
    assert any(secret in text[s.start : s.end] for s in find_all(text, ["secret"]))


@pytest.mark.parametrize("text", ["tokens_used=15234", "passwordless=true", "token: 12"])
def test_counts_and_flags_next_to_credential_words_pass(text: str) -> None:
    assert find_all(text, ["secret"]) == []


def test_a_name_value_pair_is_governed_by_its_name() -> None:
    data = {
        "note_attributes": [
            {"name": "Phone", "value": "07400 123159"},
            {"name": "Password", "value": "hunter2-Kq9"},
            {"name": "gift_message", "value": "Happy birthday!"},
        ]
    }
    out = SANITIZER.apply(data)["note_attributes"]
    assert out[0]["name"] == "Phone" and out[0]["value"] != "07400 123159"  # hashed
    assert out[1] == {"name": "Password"}  # dropped
    assert out[2] == data["note_attributes"][2]  # no rule: kept


def test_a_large_record_with_a_name_is_not_a_pair() -> None:
    record = {"name": "Phone", "value": "x", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert SANITIZER.apply({"r": record}) == {"r": record}


def test_booleans_describe_a_field_only_where_the_policy_says_so() -> None:
    data: dict[str, Any] = {"has_password": True, "billing_address_same_as_shipping": False}
    assert SANITIZER.apply(data) == data
    assert SANITIZER.apply({"pwd": True}) == {}  # an exact key still applies
    assert SANITIZER.apply({"hiv_positive": True}) == {}  # special categories still apply
    plain = parse_policy({"name": "p", "rules": [{"keys": ["password"], "match": "token",
                                                  "action": "drop"}]})  # fmt: skip
    assert Sanitizer(plain, b"k").apply({"has_password": True}) == {}  # off by default


def test_a_card_object_keeps_its_display_fields_and_loses_the_rest() -> None:
    card = {
        "number": "4577463706433047",
        "cvc": "8314",
        "exp_month": 12,
        "brand": "visa",
        "last4": "3047",
        "fingerprint": "Xt5EWLLDS7FJjR1c",
        "checks": {"cvc_check": "pass", "address_line1_check": "pass"},
        "holder": "Ann Example",
    }
    out = SANITIZER.apply({"payment_method": {"card": card}})["payment_method"]["card"]
    assert out == {
        "brand": "visa",
        "last4": "3047",
        "fingerprint": "Xt5EWLLDS7FJjR1c",
        "checks": {"cvc_check": "pass", "address_line1_check": "pass"},
    }
    assert SANITIZER.apply({"card": "4577 4637 0643 3047"}) == {}


@pytest.mark.parametrize(
    ("key", "normalized"), [("hasło", "haslo"), ("Højde", "hojde"), ("Straße", "strasse")]
)
def test_letters_nfkd_cannot_split_are_folded_in_keys(key: str, normalized: str) -> None:
    assert normalize_key(key) == normalized


@pytest.mark.parametrize(
    "key",
    [
        # found by probing after the corpus run (not part of the independent corpus' counts)
        "Krankenversicherungsnummer", "versichertennummer", "medicare_number", "nhs_number",
        "AHV_Nummer", "tax_file_number", "national_identification_number", "soc_sec_no",
        "natl_id", "criminal_record", "Vorstrafen", "allergens", "vaccination_status",
        "place_of_birth", "Geburtsort", "birth_dt", "geb_datum", "fecha_nac", "recovery_key",
        "seed_phrase", "pw_hash", "priv_key", "PHPSESSID", "auth_code", "ccv", "acc_no",
        "mob", "Mobilfunknummer", "Rufnummer", "komórka", "po_box", "Postfach",
    ],
)  # fmt: skip
def test_probed_keys_are_not_kept(key: str) -> None:
    assert SANITIZER.apply({key: "Xq7-probe-1"}) != {key: "Xq7-probe-1"}


@pytest.mark.parametrize(
    "key", ["mobile_app_version", "is_mobile", "birth_month", "birth_year", "pin_code", "city"]
)
def test_keys_next_to_the_probed_ones_are_kept(key: str) -> None:
    assert SANITIZER.apply({key: "Xq7-probe-1"}) == {key: "Xq7-probe-1"}
