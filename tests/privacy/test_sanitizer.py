"""Sanitizer: rules at any depth, detectors in free text, allowlist mode, limits, explain()."""

from __future__ import annotations

import copy
import hashlib
import json
from enum import Enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cioguard.errors import ConfigurationError, InvalidInputError, InvalidTypeError
from cioguard.privacy.detectors import luhn_ok
from cioguard.privacy.hashing import value_hash
from cioguard.privacy.policy import Policy, default_policy, parse_policy
from cioguard.privacy.sanitizer import (
    MAX_ATTRIBUTES,
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_VALUE_BYTES,
    REDACTED,
    Decision,
    Sanitizer,
    check_limits,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
CARD = "4111111111111111"


@pytest.fixture
def sanitizer() -> Sanitizer:
    return Sanitizer(default_policy(), KEY)


def make_sanitizer(**fields: Any) -> Sanitizer:
    return Sanitizer(parse_policy({"name": "t", **fields}), KEY)


def with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


# -- rules at any depth, in every spelling -------------------------------------------------------

PASSWORD_SPELLINGS = ["password", "Password", "PASSWORD", "userPassword", "user_password",
                      "user-password", "User Password", "passwordHash", "passwords"]  # fmt: skip
CARD_SPELLINGS = ["creditCard", "CreditCard", "credit-card", "CREDIT_CARD", "credit card",
                  "card_number", "cardNumber", "CardNumber", "cc_number", "pan", "cardCVV",
                  "cvv", "CVV"]  # fmt: skip
SSN_SPELLINGS = ["ssn", "SSN", "userSSN", "social_security_number", "SocialSecurityNumber"]
SENSITIVE = PASSWORD_SPELLINGS + CARD_SPELLINGS + SSN_SPELLINGS


def nestings(key: str, value: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(input, expected output) pairs with ``key`` dropped at several depths."""
    return [
        ({key: value, "plan": "pro"}, {"plan": "pro"}),
        ({"profile": {key: value, "plan": "pro"}}, {"profile": {"plan": "pro"}}),
        ({"cards": [{key: value}, {"brand": "visa"}]}, {"cards": [{}, {"brand": "visa"}]}),
        ({"a": {"b": [[{"c": {key: value}}]]}}, {"a": {"b": [[{"c": {}}]]}}),
    ]


@pytest.mark.parametrize("key", SENSITIVE)
def test_sensitive_keys_are_dropped_in_every_spelling_and_depth(
    sanitizer: Sanitizer, key: str
) -> None:
    for data, expected in nestings(key, "s3cr3t-value"):
        assert sanitizer.apply(data) == expected


@pytest.mark.parametrize("key", SENSITIVE)
def test_whole_subtree_under_a_dropped_key_goes(sanitizer: Sanitizer, key: str) -> None:
    data = {key: {"nested": ["x", {"y": 1}]}, "ok": 1}
    assert sanitizer.apply(data) == {"ok": 1}


@pytest.mark.parametrize("key", ["email", "Email", "EMAIL", "emailAddress", "email_address",
                                 "EmailAddress", "e-mail", "E_MAIL"])  # fmt: skip
def test_email_is_kept_in_every_spelling_without_detectors(sanitizer: Sanitizer, key: str) -> None:
    value = "jane+14155552671@example.com"
    assert sanitizer.apply({key: value}) == {key: value}
    assert sanitizer.apply({"contacts": [{key: value}]}) == {"contacts": [{key: value}]}


def test_email_like_keys_other_than_the_email_key_are_still_scanned(
    sanitizer: Sanitizer,
) -> None:
    out = sanitizer.apply({"work_email_note": "card 4111 1111 1111 1111"})
    assert out == {"work_email_note": "card [REDACTED:card]"}


# -- hashing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["phone", "Phone", "PHONE", "phoneNumber", "phone_number",
                                 "mobile", "mobileNumber", "cell", "tel", "telephone"])  # fmt: skip
def test_phones_are_hashed_with_the_keyed_hash(sanitizer: Sanitizer, key: str) -> None:
    out = sanitizer.apply({key: "+14155552671"})
    assert out == {key: value_hash(KEY, "+14155552671")}


def test_hash_is_stable_and_key_dependent_and_not_plain_sha256() -> None:
    data = {"phone": "+14155552671"}
    first = Sanitizer(default_policy(), KEY).apply(data)["phone"]
    again = Sanitizer(default_policy(), KEY).apply(data)["phone"]
    other = Sanitizer(default_policy(), OTHER_KEY).apply(data)["phone"]
    assert first == again
    assert first != other
    assert first != hashlib.sha256(b"+14155552671").hexdigest()
    assert first != "+14155552671"
    assert len(first) == 64


def test_non_string_scalars_are_hashed_on_their_json_form(sanitizer: Sanitizer) -> None:
    out = sanitizer.apply({"phone": 14155552671, "mobile": True, "tel": 1.5, "fax": None})
    assert out == {
        "phone": value_hash(KEY, "14155552671"),
        "mobile": value_hash(KEY, "true"),
        "tel": value_hash(KEY, "1.5"),
        "fax": None,  # no value: nothing to pseudonymize, and null keeps meaning "unset"
    }


def test_containers_under_a_hash_key_are_hashed_leaf_by_leaf(sanitizer: Sanitizer) -> None:
    data = {"phones": ["+14155552671", {"work": "+442079460958", "password": "x"}]}
    out = sanitizer.apply(data)
    assert out == {
        "phones": [
            value_hash(KEY, "+14155552671"),
            {"work": value_hash(KEY, "+442079460958")},  # a drop rule still applies inside
        ]
    }


def test_empty_hash_key_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Sanitizer(default_policy(), b"")


# -- redaction and descend -----------------------------------------------------------------------


def test_address_string_is_redacted_but_city_and_zip_pass(sanitizer: Sanitizer) -> None:
    data = {
        "address": "1 Main St, San Francisco",
        "shippingAddress": {"street": "1 Main St", "line2": "Apt 4", "city": "SF",
                            "zip": "94107", "country": "US", "state": "CA"},
        "addresses": ["1 Main St", {"streetAddress": "2 Side St", "postal_code": "94107-1234"}],
        "ipAddress": "203.0.113.9",
        "city": "SF",
    }  # fmt: skip
    assert sanitizer.apply(data) == {
        "address": REDACTED,
        "shippingAddress": {"street": REDACTED, "line2": REDACTED, "city": "SF",
                            "zip": "94107", "country": "US", "state": "CA"},
        "addresses": [REDACTED, {"streetAddress": REDACTED, "postal_code": "94107-1234"}],
        "ipAddress": REDACTED,
        "city": "SF",
    }  # fmt: skip


def test_descend_drop_removes_scalars_from_lists() -> None:
    sanitizer = make_sanitizer(
        rules=[{"keys": ["legacy"], "match": "token", "action": "drop", "descend": True}]
    )
    data = {"legacy": ["a", {"x": 1}, ["b", {"y": 2}]], "legacy_flag": True}
    # v2: nested keys the rule does not let pass (keep_inside) get its action too.
    assert sanitizer.apply(data) == {"legacy": [{}, [{}]]}


def test_descend_keeps_only_what_keep_inside_names() -> None:
    sanitizer = make_sanitizer(
        rules=[{"keys": ["addr"], "match": "token", "action": "redact", "descend": True,
                "keep_inside": ["city"]}],
        detectors=[],
    )  # fmt: skip
    out = sanitizer.apply({"addr": {"City": "SF", "recipient": "Ada", "x": {"y": 1}}})
    assert out == {"addr": {"City": "SF", "recipient": REDACTED, "x": {"y": REDACTED}}}


def test_descend_hash_hashes_scalars_in_lists() -> None:
    sanitizer = make_sanitizer(
        rules=[{"keys": ["contact"], "match": "exact", "action": "hash", "descend": True}],
        detectors=[],
    )
    out = sanitizer.apply({"contact": ["a", {"note": "b"}]})
    assert out == {"contact": [value_hash(KEY, "a"), {"note": value_hash(KEY, "b")}]}


# -- detectors in free text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card is 4111 1111 1111 1111, thanks", "my card is [REDACTED:card], thanks"),
        ("card: 4111-1111-1111-1111.", "card: [REDACTED:card]."),
        ("amex 378282246310005 ok", "amex [REDACTED:card] ok"),
        ("SSN 219-09-9999 on file", "SSN [REDACTED:ssn] on file"),
        ("ssn is 219 09 9999", "ssn is [REDACTED:ssn]"),
        ("refund to DE89 3704 0044 0532 0130 00 pls", "refund to [REDACTED:iban] pls"),
        ("call +1 415-555-2671", "call [REDACTED:phone]"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "key [REDACTED:secret] leaked"),
        ("two: 4111111111111111 and 5555555555554444",
         "two: [REDACTED:card] and [REDACTED:card]"),
    ],
)  # fmt: skip
def test_free_text_is_redacted_in_place_at_any_depth(
    sanitizer: Sanitizer, text: str, expected: str
) -> None:
    assert sanitizer.apply({"note": text}) == {"note": expected}
    assert sanitizer.apply({"tickets": [{"body": text}]}) == {"tickets": [{"body": expected}]}
    assert sanitizer.apply({"tags": ["x", text]}) == {"tags": ["x", expected]}


def test_detectors_run_under_kept_keys_too() -> None:
    sanitizer = make_sanitizer(rules=[{"keys": ["note"], "match": "exact", "action": "keep"}])
    assert sanitizer.apply({"note": f"card {CARD}"}) == {"note": "card [REDACTED:card]"}


def test_keep_rule_with_scan_false_skips_detectors() -> None:
    sanitizer = make_sanitizer(
        rules=[{"keys": ["raw"], "match": "exact", "action": "keep", "scan": False}]
    )
    assert sanitizer.apply({"raw": CARD, "other": CARD}) == {
        "raw": CARD,
        "other": "[REDACTED:card]",
    }


def test_policy_without_detectors_leaves_text_alone() -> None:
    sanitizer = make_sanitizer(detectors=[])
    assert sanitizer.apply({"note": f"card {CARD}", "n": int(CARD)}) == {
        "note": f"card {CARD}",
        "n": int(CARD),
    }


def test_card_number_stored_as_int_is_redacted(sanitizer: Sanitizer) -> None:
    data = {"profile": {"cards": [{"number": int(CARD)}]}}
    assert sanitizer.apply(data) == {"profile": {"cards": [{"number": "[REDACTED:card]"}]}}


# -- ordinary data passes untouched --------------------------------------------------------------

ORDINARY: dict[str, Any] = {
    "order_id": "ORD-2024-000123",
    "order_number": "4111111111111112",  # 16 digits, fails Luhn
    "order_no": 4111111111111112,
    "ref": "1234567890",
    "ref_int": 1234567890123,  # 13 digits, fails Luhn
    "zip": "94107",
    "zip4": "94107-1234",
    "postal_code": "SW1A 1AA",
    "city": "San Francisco",
    "country": "US",
    "plan": "pro-annual-2024",
    "seats": 12,
    "mrr": 199.99,
    "ratio": 0.4111111111111111,
    "created_at": 1700000000,
    "created_at_str": "1700000000",
    "created_at_ms": int(with_check_digit("170000000000")),  # Luhn-valid ms timestamp
    "created_at_us": with_check_digit("170000000000000"),  # Luhn-valid us timestamp
    "updated_at": "2024-01-15T10:30:00Z",
    "updated_at_offset": "2024-01-15T10:30:00.123456+02:00",
    "trial": True,
    "churned": False,
    "cancelled_at": None,
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "specimen": "123-45-6789",  # the advertising specimen SSN
    "bad_area": "666-12-3456",
    "bad_group": "219-00-9999",
    "version": "1.2.3",
    "first_name": "Jane",
    "last_name": "O'Brien",
    "company": "Acme, Inc.",
    "is_mobile": True,
    "cookie_consent": "granted",
    "birthday_month": 7,
    "tags": ["vip", "beta"],
    "scores": "4 5 3 5 4 4 5 3 5 4 4 5 3 5 4 4",
    "utm": {"source": "newsletter", "campaign": "spring-2024"},
    "emoji": "🎉 thanks!",
}


def test_ordinary_data_passes_untouched(sanitizer: Sanitizer) -> None:
    assert sanitizer.apply(ORDINARY) == ORDINARY
    assert all(d.action == "keep" and d.rule is None for d in sanitizer.explain(ORDINARY))


def test_ordinary_data_nested_in_lists_passes_untouched(sanitizer: Sanitizer) -> None:
    data = {"orders": [{"order_id": "ORD-2024-000123", "total": 42.5, "n": 4111111111111112}]}
    assert sanitizer.apply(data) == data


# -- allowlist mode ------------------------------------------------------------------------------


@pytest.fixture
def allowlist() -> Sanitizer:
    policy = parse_policy(
        {
            "name": "minimum",
            "mode": "allowlist",
            "allow": ["email", "plan", "phone", "profile"],
            "rules": [
                {"keys": ["email"], "match": "exact", "action": "keep", "scan": False},
                {"keys": ["password"], "match": "token", "action": "drop"},
                {"keys": ["phone"], "match": "exact", "action": "hash"},
            ],
        }
    )
    return Sanitizer(policy, KEY)


def test_allowlist_passes_only_listed_top_level_keys(allowlist: Sanitizer) -> None:
    data = {"EMAIL": "a@b.co", "Plan": "pro", "city": "SF", "note": "hi", "seats": 3}
    assert allowlist.apply(data) == {"EMAIL": "a@b.co", "Plan": "pro"}


def test_allowlist_still_applies_rules_inside_allowed_keys(allowlist: Sanitizer) -> None:
    data = {
        "phone": "+14155552671",
        "profile": {"password": "x", "city": "SF", "note": f"card {CARD}"},
    }
    assert allowlist.apply(data) == {
        "phone": value_hash(KEY, "+14155552671"),
        "profile": {"city": "SF", "note": "card [REDACTED:card]"},  # nested keys not filtered
    }


def test_allowlist_explain_reports_dropped_keys(allowlist: Sanitizer) -> None:
    decisions = allowlist.explain({"plan": "pro", "city": "SF"})
    assert decisions == [
        Decision("plan", "keep", None, "no rule matches this key"),
        Decision("city", "allowlist-drop", "allow", "not in allow"),
    ]


# -- limits --------------------------------------------------------------------------------------


def test_limits_at_the_boundary_pass(sanitizer: Sanitizer) -> None:
    data: dict[str, Any] = {f"a{i}": i for i in range(MAX_ATTRIBUTES - 2)}
    data["n" * MAX_NAME_BYTES] = "v" * MAX_VALUE_BYTES
    data["nested"] = {"k": "é" * ((MAX_VALUE_BYTES - 8) // 2)}  # {"k":"..."} = 8 bytes + 2/char
    compact = json.dumps(data["nested"], separators=(",", ":"), ensure_ascii=False)
    assert len(compact.encode()) == MAX_VALUE_BYTES
    assert sanitizer.apply(data) == data


def test_too_many_attributes(sanitizer: Sanitizer) -> None:
    data = {f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)}
    with pytest.raises(InvalidInputError, match=r"301 attributes.*at most 300"):
        sanitizer.apply(data)


def test_dropped_attributes_do_not_count(sanitizer: Sanitizer) -> None:
    data: dict[str, Any] = {f"a{i}": i for i in range(MAX_ATTRIBUTES)}
    data["password"] = "x"
    assert len(sanitizer.apply(data)) == MAX_ATTRIBUTES


def test_name_too_long_names_it_and_the_limit_not_the_value(sanitizer: Sanitizer) -> None:
    name = "é" * 76  # 152 bytes, 76 characters
    with pytest.raises(InvalidInputError) as caught:
        sanitizer.apply({name: "SECRET-VALUE"})
    message = str(caught.value)
    assert "152 bytes" in message and "150" in message
    assert name[:64] in message
    assert "SECRET-VALUE" not in message


@pytest.mark.parametrize(
    "value",
    [
        "SECRET" + "x" * MAX_VALUE_BYTES,
        "SECRET" + "é" * 500,  # 500 characters, 1006 bytes
        {"inner": "SECRET" + "x" * MAX_VALUE_BYTES},
        ["SECRET"] * 200,
    ],
)
def test_value_too_large_names_the_attribute_not_the_value(
    sanitizer: Sanitizer, value: Any
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        sanitizer.apply({"bio": value})
    message = str(caught.value)
    assert "'bio'" in message and "1000" in message
    assert "SECRET" not in message and "xxx" not in message


def test_limits_apply_after_sanitizing(sanitizer: Sanitizer) -> None:
    assert sanitizer.apply({"password": "x" * 5000, "phone": "1" * 5000}) == {
        "phone": value_hash(KEY, "1" * 5000)
    }


def test_limits_can_be_skipped_for_event_data(sanitizer: Sanitizer) -> None:
    data = {"body": "x" * 5000}
    assert sanitizer.apply(data, enforce_limits=False) == data
    with pytest.raises(InvalidInputError):
        check_limits(data)


# -- bad input: errors name paths and types, never values ----------------------------------------


@pytest.mark.parametrize("bad", [{"SECRET"}, b"SECRET", object(), Exception("SECRET")])
def test_non_json_values_are_refused_without_the_value(sanitizer: Sanitizer, bad: Any) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        sanitizer.apply({"profile": {"items": [1, bad]}})
    message = str(caught.value)
    # v2: below the top level, keys are shown as keyed hashes (they may be data).
    assert f"profile[#{value_hash(KEY, 'items')[:8]}][1]" in message
    assert "items" not in message and "SECRET" not in message


def test_non_string_keys_are_refused(sanitizer: Sanitizer) -> None:
    with pytest.raises(InvalidTypeError, match="at profile is a int"):
        sanitizer.apply({"profile": {1: "SECRET"}})
    with pytest.raises(InvalidTypeError):
        sanitizer.apply(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_nesting_deeper_than_the_limit_is_refused(sanitizer: Sanitizer) -> None:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(MAX_DEPTH + 2):
        data = {"d": data}
    with pytest.raises(InvalidInputError, match="nested deeper"):
        sanitizer.apply(data)


def test_tuples_become_lists_and_enum_subclasses_plain_values(sanitizer: Sanitizer) -> None:
    class Plan(str, Enum):  # noqa: UP042 - str() of a str-mixin Enum is "Plan.PRO", not "pro"
        PRO = "pro"

    out = sanitizer.apply({"tags": ("a", "b"), "plan": Plan.PRO})
    assert out == {"tags": ["a", "b"], "plan": "pro"}
    assert type(out["plan"]) is str


# -- explain -------------------------------------------------------------------------------------

EXAMPLE: dict[str, Any] = {
    "email": "jane@example.com",
    "userPassword": "hunter2",
    "phone": "+14155552671",
    "first name": "Jane",
    "profile": {
        "cards": [{"number": "4111 1111 1111 1111", "cvv": "123"}],
        "address": {"street": "1 Main St", "city": "SF"},
    },
    "note": "ssn 219-09-9999, card 5555555555554444",
}


def test_explain_lists_every_decision_with_paths_and_rules(sanitizer: Sanitizer) -> None:
    got = [(d.path, d.action, d.rule) for d in sanitizer.explain(EXAMPLE)]
    assert got == [
        ("email", "keep", "email"),
        ("userPassword", "drop", "credentials"),
        ("phone", "hash", "phones"),
        ('["first name"]', "keep", None),
        ("profile", "keep", None),
        ("profile.cards", "keep", None),
        ("profile.cards[0].number", "keep", None),
        ("profile.cards[0].number", "detector-redact", "detector:card"),
        ("profile.cards[0].cvv", "drop", "payment-cards"),
        ("profile.address", "keep", "street-address"),
        ("profile.address.street", "redact", "street-address"),
        ("profile.address.city", "keep", "street-address"),  # v2: its keep_inside
        ("note", "keep", None),
        ("note", "detector-redact", "detector:ssn"),
        ("note", "detector-redact", "detector:card"),
    ]


def test_explain_reasons_are_human_and_carry_no_values(sanitizer: Sanitizer) -> None:
    decisions = sanitizer.explain(EXAMPLE)
    by_path = {(d.path, d.action): d for d in decisions}
    reason = by_path[("userPassword", "drop")].reason
    assert "'user_password'" in reason and "stem key 'password'" in reason
    assert "credentials" in reason
    leaves = ["jane@example.com", "hunter2", "+14155552671", "Jane", "4111", "123",
              "1 Main St", "SF", "219-09-9999", "5555555555554444"]  # fmt: skip
    for decision in decisions:
        text = " ".join(str(field) for field in (decision.path, decision.rule, decision.reason))
        for leaf in leaves:
            assert leaf not in text, (leaf, decision)


def test_explain_matches_apply(sanitizer: Sanitizer) -> None:
    out = sanitizer.apply(EXAMPLE)
    assert out == {
        "email": "jane@example.com",
        "phone": value_hash(KEY, "+14155552671"),
        "first name": "Jane",
        "profile": {
            "cards": [{"number": "[REDACTED:card]"}],
            "address": {"street": REDACTED, "city": "SF"},
        },
        "note": "ssn [REDACTED:ssn], card [REDACTED:card]",
    }


# -- purity --------------------------------------------------------------------------------------


def test_input_is_never_mutated_and_output_shares_no_containers(sanitizer: Sanitizer) -> None:
    data = copy.deepcopy(EXAMPLE)
    data["plain"] = {"list": [1, 2, {"x": "y"}]}
    before = copy.deepcopy(data)
    out = sanitizer.apply(data)
    sanitizer.explain(data)
    assert data == before
    assert out is not data
    assert out["plain"] is not data["plain"]
    assert out["plain"]["list"] is not data["plain"]["list"]
    assert out["plain"]["list"][2] is not data["plain"]["list"][2]


def test_sanitizer_works_with_any_policy_object(sanitizer: Sanitizer) -> None:
    assert isinstance(sanitizer.policy, Policy)


# -- second pass -----------------------------------------------------------------------------------


def test_second_pass_with_rehash_false_changes_nothing(sanitizer: Sanitizer) -> None:
    data = {**EXAMPLE, "phones": [14155552671, {"work": "+442079460958"}], "mobile": True}
    once = sanitizer.apply(data)
    assert sanitizer.apply(once, rehash=False) == once
    assert sanitizer.apply(once)["phone"] == value_hash(KEY, once["phone"])  # default rehashes


def test_rehash_false_still_hashes_raw_values(sanitizer: Sanitizer) -> None:
    assert sanitizer.apply({"phone": "+14155552671"}, rehash=False) == {
        "phone": value_hash(KEY, "+14155552671")
    }


# -- properties ----------------------------------------------------------------------------------

WORDS = ["plan", "name", "city", "order", "count", "status", "color", "source", "level",
         "created", "first", "last", "country", "team", "role", "tier", "id", "note",
         "tag"]  # fmt: skip


def _is_innocent(key: str) -> bool:
    return default_policy().match(key) is None


keys = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).flatmap(
        lambda words: st.sampled_from(
            ["_".join(words), "-".join(words), " ".join(words), "".join(w.title() for w in words)]
        )
    ),
    st.text(st.characters(blacklist_categories=("Cs", "Nd")), min_size=1, max_size=12),
).filter(_is_innocent)

digit_free_text = st.text(st.characters(blacklist_categories=("Cs", "Nd", "No", "Nl")), max_size=30)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    digit_free_text,
)

json_data = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, json_data, max_size=6))
def test_property_innocent_data_passes_unchanged(data: dict[str, Any]) -> None:
    sanitizer = Sanitizer(default_policy(), KEY)
    assert sanitizer.apply(data, enforce_limits=False) == data


CARD_PREFIXES = ["4", "51", "53", "55", "2221", "2720", "34", "37", "6011", "65", "3528", "62"]


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(CARD_PREFIXES))
    length = 15 if prefix in ("34", "37") else draw(st.sampled_from([16, 16, 19]))
    rest = draw(st.text("0123456789", min_size=length, max_size=length))
    number = with_check_digit((prefix + rest)[: length - 1])
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _place(value: Any, path: list[str | int]) -> Any:
    for step in reversed(path):
        value = [value] if isinstance(step, int) else {step: value}
    return value


@settings(max_examples=150, deadline=None)
@given(
    card=cards(),
    before=digit_free_text,
    after=digit_free_text,
    path=st.lists(st.one_of(keys, st.just(0)), min_size=1, max_size=4).filter(
        lambda p: isinstance(p[0], str)
    ),
    sibling=json_data,
)
def test_property_no_valid_card_survives_in_any_string(
    card: str, before: str, after: str, path: list[str | int], sibling: Any
) -> None:
    sanitizer = Sanitizer(default_policy(), KEY)
    data = _place(f"{before} {card} {after}", path)
    data["zz_sibling"] = sibling
    out = json.dumps(sanitizer.apply(data, enforce_limits=False), ensure_ascii=False)
    digits = card.replace(" ", "").replace("-", "")
    assert card not in out
    assert digits not in out


any_keys = st.one_of(
    keys,
    st.sampled_from(["password", "phone", "Phone", "address", "email", "cardNumber", "ssn",
                     "note", "phones", "billingAddress", "street", "city"]),
)  # fmt: skip
any_text = st.one_of(digit_free_text, cards(), st.sampled_from(["219-09-9999", "+14155552671"]))
any_data = st.recursive(
    st.one_of(json_leaves, any_text),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(any_keys, any_data, max_size=6))
def test_property_second_pass_is_a_no_op(data: dict[str, Any]) -> None:
    sanitizer = Sanitizer(default_policy(), KEY)
    once = sanitizer.apply(data, enforce_limits=False)
    assert sanitizer.apply(once, enforce_limits=False, rehash=False) == once
